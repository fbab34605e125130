"""Latents as files: one shape's LoG-VAE code in safetensors (format in docs/latents.md).

What a file must carry so that it can be decoded later, by someone else, safely:

* the latents [L, C] (float16 by default: half the bytes, and the network's own precision under
  mixed precision) and the block coordinates [L, 3] (int16: N/8 ≤ 256);
* the resolution N, and the normalisation back to the input's frame (``unit = (world − center) ×
  scale``), so the decoded mesh lands where the input was;
* **the identity of the model that made them**: its architecture config and a hash of its weights.
  Latents are only meaningful to the decoder trained with that encoder; ``decode`` refuses any
  other, naming the difference, instead of silently producing garbage.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_output
from .autoencode import Latents
from .latent_format import FORMAT, FORMAT_VERSION, METADATA_KEY, LatentFormatError, read_latent_arrays
from .mesh import Normalization

DTYPES = ("float16", "float32")
LatentFileError = LatentFormatError
"""A latent file that cannot be read, or that belongs to another model (a ValueError)."""


@dataclass
class LatentFile:
    """A shape in latent form plus what is needed to decode it in its own frame."""

    latents: Latents
    normalization: Normalization
    model_config: dict[str, Any]
    weights_hash: str
    source: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def weights_hash(model: Any) -> str:
    """sha256 of the model's weights as they are used (float32, sorted by name): the same for the
    same numbers whatever file they came from, different for any other weights. Cached on the model."""
    cached = getattr(model, "_log3d_weights_hash", None)
    if cached is not None:
        return cached
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    value = digest.hexdigest()
    try:
        model._log3d_weights_hash = value
    except AttributeError:
        pass
    return value


def model_identity(model: Any) -> tuple[dict[str, Any], str]:
    """(architecture config without runtime fields, weights hash) of a loaded LoG-VAE."""
    from .vae import RUNTIME_FIELDS

    config = {k: v for k, v in model.config.to_dict().items() if k not in RUNTIME_FIELDS}
    return config, weights_hash(model)


def save_latent_file(path: str | Path, item: LatentFile, dtype: str = "float16") -> int:
    """Write ``item`` atomically (temporary name, fsync, rename); returns the file's size in bytes."""
    from safetensors.numpy import save_file

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    lat = item.latents.validate()
    tensors = {"latents": np.ascontiguousarray(lat.latents, dtype=np.dtype(dtype)),
               "coords": np.ascontiguousarray(lat.coords, dtype=np.int16)}
    if dtype == "float16" and not np.isfinite(tensors["latents"]).all():
        raise LatentFileError("latents overflow float16; store them with dtype float32")
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "resolution": int(lat.resolution),
              "center": [float(c) for c in item.normalization.center], "scale": float(item.normalization.scale),
              "model_config": item.model_config, "weights_sha256": item.weights_hash, "source": item.source,
              "dtype": dtype, "num_blocks": int(lat.coords.shape[0]), "latent_dim": int(lat.latents.shape[1]),
              "extra": dict(item.extra)}
    # One metadata key holding sorted JSON: safetensors writes its metadata map in no fixed order, and
    # the same shape must give the same bytes whichever process encoded it.
    meta = {METADATA_KEY: json.dumps(header, sort_keys=True)}
    with atomic_output(path) as partial:
        save_file(tensors, str(partial), metadata=meta)
    return Path(path).stat().st_size


def load_latent_file(path: str | Path) -> LatentFile:
    """Read and check a latent file (container, format, version, shapes, finiteness, coordinates on
    the grid, normalisation)."""
    head, lat, coords = read_latent_arrays(path)
    try:
        latents = Latents(int(head["resolution"]), lat, coords).validate()
        center = np.asarray(head["center"], dtype=np.float64)
        scale = float(head["scale"])
        config = dict(head["model_config"])
        digest = str(head["weights_sha256"])
    except (KeyError, ValueError, TypeError) as exc:
        raise LatentFileError(f"{path}: malformed latent file: {exc}") from None
    if center.shape != (3,) or not np.isfinite(center).all() or not (np.isfinite(scale) and scale > 0):
        raise LatentFileError(f"{path}: malformed normalisation (center {center.tolist()}, scale {scale})")
    return LatentFile(latents, Normalization(center=center, scale=scale), config, digest, str(head.get("source", "")),
                      {str(k): str(v) for k, v in dict(head.get("extra") or {}).items()})


def check_same_model(item: LatentFile, model: Any, path: str | Path = "") -> None:
    """Refuse latents made by another model, saying how it differs (architecture fields, or the
    same architecture with other weights)."""
    from .checkpoint import config_differences

    config, digest = model_identity(model)
    where = f"{path}: " if path else ""
    diff = config_differences(config, item.model_config, ignore=())
    if diff:
        fields = "; ".join(f"{k}: loaded model {a!r}, latents' model {b!r}" for k, (a, b) in diff.items())
        raise LatentFileError(f"{where}these latents were made by a model of another architecture ({fields}); "
                              "decode them with the checkpoint that encoded them (--checkpoint)")
    if digest != item.weights_hash:
        raise LatentFileError(f"{where}these latents were made by other weights of the same architecture "
                              f"(weights sha256 {item.weights_hash[:12]}…, the loaded model's is {digest[:12]}…); "
                              "decode them with the checkpoint that encoded them (--checkpoint)")
