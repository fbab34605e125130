"""The VAE leg of the pipeline: UBlocks → LoG-VAE encode → latents [L, 16] → decode → UBlocks.

The transformer mixes all L tokens of a shape, so encode and decode see the whole shape at once;
the network itself runs its local conv stacks in chunks. Decoded blocks are handed on in chunks so
Pad-Average never holds a second full copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .grid import FAR, check_resolution
from .ublocks import UBlocks, validate_block_coords

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_CHECKPOINT = WEIGHTS_DIR / "log3d-vae.safetensors"


@dataclass
class Latents:
    """A shape in latent form: float32 [L, 16] means and int32 block coordinates [L, 3] at N."""

    resolution: int
    latents: np.ndarray
    coords: np.ndarray

    def validate(self) -> "Latents":
        n = check_resolution(self.resolution)
        lat = np.asarray(self.latents)
        if lat.ndim != 2 or lat.shape[0] != np.asarray(self.coords).shape[0]:
            raise ValueError(f"latents must be [L, C] with one row per block coordinate, got {list(lat.shape)}")
        if not np.all(np.isfinite(lat)):
            raise ValueError("latents contain NaN or Inf")
        validate_block_coords(self.coords, n // 8)
        return self


def resolve_device(name: str = "auto") -> "torch.device":  # noqa: F821
    """``auto`` picks CUDA when it is usable, else the CPU; asking for CUDA without it is an error."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but no CUDA GPU is available (use --device cpu)")
    return device


class ModeUnavailable(RuntimeError):
    """A remesh mode that this installation cannot run (e.g. no trained weights)."""


def checkpoint_path(checkpoint: str | Path | None) -> Path:
    """The weights to use: the given file, else the ones shipped in model/weights/."""
    path = Path(checkpoint) if checkpoint else DEFAULT_CHECKPOINT
    if not path.is_file():
        if checkpoint:
            raise ModeUnavailable(f"checkpoint not found: {path}")
        raise ModeUnavailable(
            f"--mode vae needs LoG-VAE weights and none are shipped at {DEFAULT_CHECKPOINT} yet; "
            "pass --checkpoint PATH (a file written by `log3d train`) or use --mode direct"
        )
    return path


def load_vae(checkpoint: str | Path | None, device: str = "auto"):
    """Load a LoG-VAE in eval mode on the chosen device."""
    from .vae import load_model

    return load_model(checkpoint_path(checkpoint), resolve_device(device))


def _autocast(device):
    import contextlib

    import torch

    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    return contextlib.nullcontext()


def encode_tensors(model, blocks: "torch.Tensor", coords: "torch.Tensor") -> "torch.Tensor":  # noqa: F821
    """Latent means float32 [L, C] on the model's device of a whole shape's padded blocks
    [L, 12, 12, 12] at int64 block coordinates [L, 3], wherever those tensors live.

    The tensor form exists so that the torch pipeline can hand device tensors straight in; the
    numpy :func:`encode_blocks` calls it, so both paths run the network the same way (inference
    mode, bf16/fp16 autocast on CUDA, the mean as the latent at inference, seed A.3).
    """
    import torch

    with torch.inference_mode(), _autocast(model.device):
        mean, _ = model.encode(blocks, coords.to(torch.int64))
    return mean.float()


def decode_tensors(model, latents: "torch.Tensor", coords: "torch.Tensor") -> "torch.Tensor":  # noqa: F821
    """Decoded padded blocks [L, 12, 12, 12] on the model's device, clamped to the field's range
    [0, FAR], in the network's output dtype (bf16/fp16 under CUDA autocast).

    Kept in that dtype rather than widened to float32 because the whole shape is decoded at once:
    at 2048³ the blocks are the largest tensor of the VAE leg, and Pad-Average widens them one
    chunk at a time anyway. Clamping before widening gives the same values (0 and 1 are exact).
    """
    import torch

    with torch.inference_mode(), _autocast(model.device):
        return model.decode(latents.float(), coords.to(torch.int64)).clamp_(0.0, FAR)


def encode_blocks(model, ublocks: UBlocks) -> Latents:
    """Latent means of a shape's UBlocks, numpy or torch on any device (the mean is the latent at
    inference, seed A.3); the latents come back to the host, where latent files are written."""
    import torch

    coords = torch.as_tensor(ublocks.coords).to(torch.int64)
    mean = encode_tensors(model, torch.as_tensor(ublocks.blocks), coords)
    return Latents(ublocks.resolution, mean.cpu().numpy(), coords.cpu().numpy().astype(np.int32))


def decode_latents(model, latents: Latents) -> "torch.Tensor":  # noqa: F821
    """:func:`decode_tensors` of a latent set: the decoded blocks [L, 12³] on the model's device,
    in its output dtype, for an engine to adopt."""
    import torch

    latents.validate()
    coords = torch.from_numpy(np.asarray(latents.coords, dtype=np.int64))
    return decode_tensors(model, torch.from_numpy(np.asarray(latents.latents, dtype=np.float32)), coords)


def decode_blocks(model, latents: Latents) -> UBlocks:
    """Decoded UBlocks [L, 12³] of a whole shape as numpy, clamped to the field's range [0, 1]."""
    blocks = decode_latents(model, latents)
    return UBlocks(latents.resolution, blocks.float().cpu().numpy(), np.asarray(latents.coords, dtype=np.int32))
