"""LoG-VAE: local 3D convolutions per UBlock, a global sparse transformer across UBlocks, latents.

Shapes follow the supplementary (A.3, A.4), batch size one shape:

    blocks [L, 12, 12, 12] --local conv--> tokens [L, 256] --+PE, 8 sparse transformer blocks-->
    LN, linear --> mean, logvar [L, 16] --(sample)--> z [L, 16] --linear, +PE, 8 blocks, LN-->
    [L, 256, 1, 1, 1] --five upsampling blocks--> [L, 16, 16³] --1×1×1--> [L, 1, 16³] --crop--> [L, 12³]

Where the text is ambiguous (four encoder layers for three halvings, five decoder blocks for four
doublings, a 3→1 pool) the choices are recorded in ``VAEConfig`` and explained in docs/network.md.
Local conv stacks run in chunks of ``chunk_size`` blocks; GroupNorm is per sample, so chunking
does not change results.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from model.checkpoint import (
    ConfigMismatchError,
    config_differences,
    read_checkpoint,
    read_metadata,
    write_checkpoint,
)
from model.sparse import SparseContext, SparseTransformerBlock, attention_backend, sinusoidal_position_encoding

__all__ = [
    "VAEConfig",
    "PRESETS",
    "preset",
    "LogVAE",
    "count_parameters",
    "save_model",
    "load_model",
    "load_weights",
    "describe",
    "ConfigMismatchError",
    "RUNTIME_FIELDS",
]

#: Config fields that change how the network runs or is initialised, not what trained weights
#: compute: they are saved with a checkpoint but never make it incompatible with a model.
RUNTIME_FIELDS: tuple[str, ...] = ("name", "chunk_size", "grad_checkpoint", "attn_max_pairs", "channels_last", "output_init")

# Numerical guard on the predicted log-variance (exp(20) ~ 5e8): keeps exp() finite in fp16 too.
_LOGVAR_RANGE = (-30.0, 20.0)


@dataclass
class VAEConfig:
    """Every size of the network. Defaults are the paper's (A.3, A.4); see ``PRESETS``.

    Local encoder: a 1×1×1 conv lifts 1 channel to ``enc_channels[0]``, then layer i maps to
    ``enc_channels[i]`` and max-pools by ``enc_pools[i]`` (1 = no pool). Local decoder: the token
    becomes a ``dec_stem``³ grid of ``dec_channels[0]`` channels, then block i upsamples by
    ``dec_scales[i]`` (1 = none, ``dec_upsample`` says how) and maps to ``dec_channels[i]``.
    GroupNorm uses at most ``norm_groups`` groups and at least 4 channels per group.

    The decoder's two fields are why a block can be drawn at all (issue 28, docs/network.md,
    "A decoder that can draw a block"): ``dec_stem = 1`` is the paper read literally — the token
    is a 1³ voxel, so the first 3³ convs see only their centre tap, and nearest upsampling leaves
    the children of a voxel equal except where the zero padding at the block's border reaches them.
    ``dec_stem = 4`` projects the token with a learned linear map to a 4³ grid (every position its
    own weights); ``dec_upsample = "shuffle"`` makes each child of an upsampled voxel its own
    learned mix of the parent's channels (channel-to-space, TRELLIS.2's way).

    ``dec_output = "abs"`` reads the head as a locally signed value and returns its absolute value:
    a UDF's V at the surface (slope ±1, minimum 0) is a kink that smooth convolutions round off
    (the decoded minimum sat near 0.075 with a slope of 0.67, issue 28), while a signed function
    crossing zero is what they draw easily. The sign is the decoder's own, per block, and carries
    no meaning outside it. ``"linear"`` is the paper's head.
    """

    name: str = "paper"
    block_size: int = 12
    latent_dim: int = 16
    dim: int = 256
    heads: int = 8
    enc_depth: int = 8
    dec_depth: int = 8
    window: int = 8
    shift: int = 4
    mlp_ratio: float = 4.0
    block_convs: int = 1
    enc_channels: tuple[int, ...] = (32, 64, 128, 256)
    enc_pools: tuple[int, ...] = (1, 2, 2, 3)
    dec_channels: tuple[int, ...] = (256, 128, 64, 32, 16)
    dec_scales: tuple[int, ...] = (1, 2, 2, 2, 2)
    dec_stem: int = 1
    dec_upsample: str = "nearest"
    dec_output: str = "linear"
    norm_groups: int = 32
    pos_max_period: float = 10000.0
    # Initial output (head bias; head weights scaled by 0.1): about the mean normalised UDF of an
    # active block (~0.7-0.8, most voxels sit at the truncation value 1). Starting there instead of
    # at ~0 saves the hundreds of Adam steps the output offset otherwise takes to crawl into place.
    output_init: float = 0.75
    # Runtime knobs (RUNTIME_FIELDS): memory/speed only.
    chunk_size: int = 1024
    grad_checkpoint: bool = False
    attn_max_pairs: int = 1 << 22
    channels_last: bool = True

    def __post_init__(self) -> None:
        self.enc_channels = tuple(int(c) for c in self.enc_channels)
        self.enc_pools = tuple(int(p) for p in self.enc_pools)
        self.dec_channels = tuple(int(c) for c in self.dec_channels)
        self.dec_scales = tuple(int(s) for s in self.dec_scales)
        problems = []
        if self.dim % self.heads:
            problems.append(f"dim {self.dim} not divisible by heads {self.heads}")
        if not 0 <= self.shift < self.window:
            problems.append(f"shift {self.shift} must be in [0, window={self.window})")
        if len(self.enc_pools) != len(self.enc_channels):
            problems.append("enc_pools and enc_channels differ in length")
        if len(self.dec_scales) != len(self.dec_channels):
            problems.append("dec_scales and dec_channels differ in length")
        if self.enc_channels and self.enc_channels[-1] != self.dim:
            problems.append(f"enc_channels[-1]={self.enc_channels[-1]} must equal dim={self.dim}")
        if self.dec_stem < 1:
            problems.append(f"dec_stem must be >= 1, got {self.dec_stem}")
        if self.dec_stem == 1 and self.dec_channels and self.dec_channels[0] != self.dim:
            problems.append(f"dec_channels[0]={self.dec_channels[0]} must equal dim={self.dim} (dec_stem 1: the token is the 1³ voxel)")
        if self.dec_upsample not in ("nearest", "shuffle"):
            problems.append(f"dec_upsample must be nearest or shuffle, got {self.dec_upsample!r}")
        if self.dec_output not in ("linear", "abs"):
            problems.append(f"dec_output must be linear or abs, got {self.dec_output!r}")
        size = self.block_size
        for p in self.enc_pools:
            if p < 1 or size % p:
                problems.append(f"enc_pools {self.enc_pools} do not divide block_size {self.block_size} evenly")
                break
            size //= p
        if size != 1:
            problems.append(f"enc_pools {self.enc_pools} reduce {self.block_size} to {size}, not 1")
        out = self.dec_stem * math.prod(self.dec_scales)
        if out < self.block_size or (out - self.block_size) % 2:
            problems.append(f"decoder output {out}³ cannot be centre-cropped to {self.block_size}³")
        if self.chunk_size < 1:
            problems.append("chunk_size must be >= 1")
        if problems:
            raise ValueError("invalid VAEConfig: " + "; ".join(problems))

    @property
    def decoded_size(self) -> int:
        """Edge of the decoder's volume before the crop (16 for the paper)."""
        return self.dec_stem * math.prod(self.dec_scales)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "VAEConfig":
        """Inverse of ``to_dict``; missing fields take defaults, unknown fields are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown VAEConfig fields {unknown} (checkpoint from a newer version?)")
        return cls(**d)

    def replace(self, **changes: Any) -> "VAEConfig":
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, VAEConfig] = {
    # The supplementary's sizes.
    # Two sparse 3³ convs per transformer block: 79.3M parameters, within 3% of the paper's 77M (Table 1);
    # the text read literally (one conv, ``replace(block_convs=1)``) gives 51.0M (docs/network.md).
    "paper": VAEConfig(block_convs=2),
    # For CPU users: half width and depth; the 12³-resolution encoder convs (most of the FLOPs)
    # are 4x thinner. The local decoder projects the token to a learned 4³ grid (64, 24, 8
    # channels, two nearest upsamplings to 16³): it won the equal-compute A/B against the 1³ start
    # and is what the shipped weights use (issue 28; docs/training.md, "The decoder A/B").
    "small": VAEConfig(
        name="small",
        dim=128,
        heads=4,
        enc_depth=4,
        dec_depth=4,
        enc_channels=(8, 16, 32, 128),
        dec_channels=(64, 24, 8),
        dec_scales=(1, 2, 2),
        dec_stem=4,
        dec_upsample="nearest",
        chunk_size=512,
    ),
    # For tests: every code path, almost no arithmetic.
    "tiny": VAEConfig(
        name="tiny",
        dim=32,
        heads=2,
        enc_depth=2,
        dec_depth=2,
        mlp_ratio=2.0,
        enc_channels=(4, 8, 16, 32),
        dec_channels=(32, 16, 8, 8, 4),
        chunk_size=256,
    ),
}


def preset(name: str) -> VAEConfig:
    """A fresh copy of a preset config (mutating it does not change ``PRESETS``)."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name])


# ----------------------------------------------------------------------------------------------
# Local (per-UBlock) convolution stacks
# ----------------------------------------------------------------------------------------------


def _group_norm(channels: int, max_groups: int) -> nn.GroupNorm:
    """GroupNorm with at most ``max_groups`` groups and at least 4 channels per group.

    The floor of 4 matters at 1³ resolution (decoder's first block), where a group of one channel
    would normalise a single number to zero.
    """
    groups = math.gcd(max_groups, max(channels // 4, 1))
    return nn.GroupNorm(groups, channels)


class EncoderLayer(nn.Module):
    """GroupNorm → 1×1×1 conv (the "MLP") → conv3³+ReLU → GroupNorm → conv3³+ReLU → MaxPool."""

    def __init__(self, cin: int, cout: int, pool: int, max_groups: int) -> None:
        super().__init__()
        self.norm1 = _group_norm(cin, max_groups)
        self.mlp = nn.Conv3d(cin, cout, 1)
        self.conv1 = nn.Conv3d(cout, cout, 3, padding=1)
        self.norm2 = _group_norm(cout, max_groups)
        self.conv2 = nn.Conv3d(cout, cout, 3, padding=1)
        self.pool = nn.MaxPool3d(pool) if pool > 1 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.conv1(self.mlp(self.norm1(x))), inplace=True)
        x = F.relu(self.conv2(self.norm2(x)), inplace=True)
        return self.pool(x)


def voxel_shuffle(x: Tensor, scale: int) -> Tensor:
    """[n, C·s³, D, H, W] → [n, C, D·s, H·s, W·s]: each voxel's channels become its s³ children
    (the 3D pixel shuffle)."""
    n, cs, d, h, w = x.shape
    c = cs // scale**3
    x = x.reshape(n, c, scale, scale, scale, d, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(n, c, d * scale, h * scale, w * scale)


class DecoderLayer(nn.Module):
    """Upsampling → GroupNorm → conv3³+ReLU → GroupNorm → conv3³+ReLU.

    ``upsample = "nearest"`` (the paper) copies each voxel to its children; ``"shuffle"`` maps the
    voxel's channels with a 1×1×1 conv to ``cin``·s³ and gives each child its own share."""

    def __init__(self, cin: int, cout: int, scale: int, max_groups: int, upsample: str = "nearest") -> None:
        super().__init__()
        self.scale = scale
        self.upsample = upsample
        if upsample == "shuffle" and scale > 1:
            self.expand = nn.Conv3d(cin, cin * scale**3, 1)
        self.norm1 = _group_norm(cin, max_groups)
        self.conv1 = nn.Conv3d(cin, cout, 3, padding=1)
        self.norm2 = _group_norm(cout, max_groups)
        self.conv2 = nn.Conv3d(cout, cout, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        if self.scale > 1:
            if self.upsample == "shuffle":
                x = voxel_shuffle(self.expand(x), self.scale).contiguous(memory_format=torch.channels_last_3d)
            else:
                x = F.interpolate(x, scale_factor=self.scale, mode="nearest")
        x = F.relu(self.conv1(self.norm1(x)), inplace=True)
        return F.relu(self.conv2(self.norm2(x)), inplace=True)


class LocalEncoder(nn.Module):
    """[n, 1, 12, 12, 12] → [n, dim]: per-voxel lift to enc_channels[0], then the encoder layers."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.stem = nn.Conv3d(1, cfg.enc_channels[0], 1)
        cins = (cfg.enc_channels[0],) + cfg.enc_channels[:-1]
        self.layers = nn.ModuleList(
            EncoderLayer(ci, co, p, cfg.norm_groups) for ci, co, p in zip(cins, cfg.enc_channels, cfg.enc_pools)
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for layer in self.layers:
            x = layer(x)
        return x.flatten(1)


class LocalDecoder(nn.Module):
    """[n, dim] → [n, 12, 12, 12]: upsampling blocks, 1×1×1 conv to one channel, central crop."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.stem_size = cfg.dec_stem
        self.stem_channels = cfg.dec_channels[0] if cfg.dec_stem > 1 else cfg.dim
        if cfg.dec_stem > 1:  # the token → a learned grid (dec_stem = 1: the token is the 1³ voxel)
            self.stem = nn.Linear(cfg.dim, self.stem_channels * cfg.dec_stem**3)
        cins = (self.stem_channels,) + cfg.dec_channels[:-1]
        self.layers = nn.ModuleList(
            DecoderLayer(ci, co, s, cfg.norm_groups, cfg.dec_upsample)
            for ci, co, s in zip(cins, cfg.dec_channels, cfg.dec_scales)
        )
        self.head = nn.Conv3d(cfg.dec_channels[-1], 1, 1)
        with torch.no_grad():
            self.head.weight.mul_(0.1)
            self.head.bias.fill_(cfg.output_init)
        self.crop = (cfg.decoded_size - cfg.block_size) // 2
        self.block_size = cfg.block_size
        self.signed_head = cfg.dec_output == "abs"

    def forward(self, x: Tensor) -> Tensor:
        if self.stem_size > 1:
            s = self.stem_size
            x = self.stem(x).reshape(x.shape[0], self.stem_channels, s, s, s)
            x = x.contiguous(memory_format=torch.channels_last_3d)
        else:
            x = x[:, :, None, None, None]
        for layer in self.layers:
            x = layer(x)
        x = self.head(x)[:, 0]
        if self.signed_head:
            x = x.abs()
        c, b = self.crop, self.block_size
        return x[:, c : c + b, c : c + b, c : c + b]


class SparseTransformer(nn.Module):
    """``depth`` sparse transformer blocks, odd ones shifted by ``shift``, then a LayerNorm."""

    def __init__(self, cfg: VAEConfig, depth: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SparseTransformerBlock(
                cfg.dim, cfg.heads, cfg.window, cfg.shift if i % 2 else 0, cfg.mlp_ratio, cfg.block_convs
            )
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(cfg.dim)

    def forward(self, x: Tensor, ctx: SparseContext, grad_checkpoint: bool = False) -> Tensor:
        for blk in self.blocks:
            if grad_checkpoint and torch.is_grad_enabled():
                x = checkpoint(blk, x, ctx, use_reentrant=False)
            else:
                x = blk(x, ctx)
        return self.norm(x)


def _chunked(
    fn: Callable[[Tensor], Tensor], x: Tensor, chunk: int, grad_checkpoint: bool, channels_last: bool
) -> Tensor:
    """Apply ``fn`` to x in slices of ``chunk`` rows; optionally recompute activations in backward.

    ``channels_last`` hands 5-D slices to the convs as NDHWC, which oneDNN runs up to 2x faster on
    CPU for the small channel counts of the local stacks.
    """
    outs = []
    for i in range(0, x.shape[0], chunk):
        part = x[i : i + chunk]
        if channels_last and part.ndim == 5:
            part = part.contiguous(memory_format=torch.channels_last_3d)
        if grad_checkpoint and torch.is_grad_enabled():
            outs.append(checkpoint(fn, part, use_reentrant=False))
        else:
            outs.append(fn(part))
    return torch.cat(outs)


# ----------------------------------------------------------------------------------------------
# The VAE
# ----------------------------------------------------------------------------------------------


class LogVAE(nn.Module):
    """LoG-VAE over the active UBlocks of one shape."""

    def __init__(self, config: VAEConfig | None = None) -> None:
        super().__init__()
        cfg = config if config is not None else VAEConfig()
        self.config = cfg
        self.enc_local = LocalEncoder(cfg)
        self.encoder = SparseTransformer(cfg, cfg.enc_depth)
        self.to_moments = nn.Linear(cfg.dim, 2 * cfg.latent_dim)
        self.from_latent = nn.Linear(cfg.latent_dim, cfg.dim)
        self.decoder = SparseTransformer(cfg, cfg.dec_depth)
        self.dec_local = LocalDecoder(cfg)
        # Stored NDHWC so the convs never reorder weights; load_state_dict and .to() keep the layout.
        self.enc_local.to(memory_format=torch.channels_last_3d)
        self.dec_local.to(memory_format=torch.channels_last_3d)

    # -- helpers --------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.to_moments.weight.device

    def context(self, coords: Tensor) -> SparseContext:
        """Windows and neighbour map of ``coords``; pass it to encode/decode to build them once."""
        return SparseContext(coords.to(self.device), attn_max_pairs=self.config.attn_max_pairs)

    def _context(self, coords: Tensor, ctx: SparseContext | None, n: int) -> SparseContext:
        if ctx is None:
            ctx = self.context(coords)
        if ctx.num_tokens != n:
            raise ValueError(f"{n} blocks but {ctx.num_tokens} coordinates")
        return ctx

    def _position(self, ctx: SparseContext) -> Tensor:
        return sinusoidal_position_encoding(ctx.coords, self.config.dim, self.config.pos_max_period)

    # -- public API -----------------------------------------------------------------------------

    def encode(self, blocks: Tensor, coords: Tensor, ctx: SparseContext | None = None) -> tuple[Tensor, Tensor]:
        """blocks [L, 12, 12, 12] or [L, 1, 12, 12, 12], coords [L, 3] → (mean, logvar), each [L, latent]."""
        b = self.config.block_size
        if blocks.shape[-3:] != (b, b, b) or blocks.ndim not in (4, 5):
            raise ValueError(f"blocks must be [L, {b}, {b}, {b}] or [L, 1, {b}, {b}, {b}], got {tuple(blocks.shape)}")
        L = blocks.shape[0]
        ctx = self._context(coords, ctx, L)
        x = blocks.reshape(L, 1, b, b, b).to(self.device, self.to_moments.weight.dtype)
        if L == 0:
            z = x.new_zeros(0, self.config.latent_dim)
            return z, z.clone()
        cfg = self.config
        tokens = _chunked(self.enc_local, x, cfg.chunk_size, cfg.grad_checkpoint, cfg.channels_last)
        h = self.encoder(tokens + self._position(ctx), ctx, self.config.grad_checkpoint)
        mean, logvar = self.to_moments(h).chunk(2, dim=-1)
        return mean, logvar.clamp(*_LOGVAR_RANGE)

    def decode(self, latents: Tensor, coords: Tensor, ctx: SparseContext | None = None) -> Tensor:
        """latents [L, latent], coords [L, 3] → normalised UDF blocks [L, 12, 12, 12]."""
        L = latents.shape[0]
        ctx = self._context(coords, ctx, L)
        b = self.config.block_size
        z = latents.to(self.device, self.to_moments.weight.dtype)
        if L == 0:
            return z.new_zeros(0, b, b, b)
        h = self.decoder(self.from_latent(z) + self._position(ctx), ctx, self.config.grad_checkpoint)
        cfg = self.config
        return _chunked(self.dec_local, h, cfg.chunk_size, cfg.grad_checkpoint, cfg.channels_last)

    def forward(self, blocks: Tensor, coords: Tensor, sample: bool | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(reconstruction [L, 12, 12, 12], mean, logvar).

        ``sample``: draw z = mean + σ·ε (reparameterisation) or use the mean; None (default) means
        sample in training mode and use the mean in eval mode.
        """
        if sample is None:
            sample = self.training
        ctx = self.context(coords)
        mean, logvar = self.encode(blocks, coords, ctx)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean) if sample else mean
        return self.decode(z, coords, ctx), mean, logvar


# ----------------------------------------------------------------------------------------------
# Utilities: size, save/load, description
# ----------------------------------------------------------------------------------------------


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def save_model(model: LogVAE, path: str | Path, dtype: torch.dtype = torch.float32) -> None:
    """Write weights and config to a safetensors file; ``dtype=torch.float16`` halves the size
    for shipping (loading upcasts to float32)."""
    write_checkpoint(path, model.state_dict(), model.config.to_dict(), model.config.name, dtype)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LogVAE:
    """Build a LogVAE from the config embedded in ``path`` and load its weights (eval mode)."""
    state, meta = read_checkpoint(path)
    model = LogVAE(VAEConfig.from_dict(meta["config"]))
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def load_weights(model: LogVAE, path: str | Path) -> LogVAE:
    """Load a checkpoint into an existing model; raises ConfigMismatchError naming every differing
    architecture field (runtime fields such as chunk_size are ignored)."""
    meta = read_metadata(path)
    # a checkpoint written before a field existed holds that field's default (from_dict fills it)
    saved = VAEConfig.from_dict(meta["config"]).to_dict()
    diff = config_differences(model.config.to_dict(), saved, ignore=RUNTIME_FIELDS)
    if diff:
        raise ConfigMismatchError(diff, path)
    state, _ = read_checkpoint(path, device=model.device)
    model.load_state_dict(state, strict=True)
    return model


def describe(model: LogVAE, device: str | torch.device | None = None) -> dict[str, Any]:
    """What ``log3d info`` prints: preset, size, device and the attention path."""
    cfg = model.config
    dev = torch.device(device) if device is not None else model.device
    n = count_parameters(model)
    return {
        "preset": cfg.name,
        "parameters": n,
        "parameters_millions": round(n / 1e6, 2),
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "attention_backend": attention_backend(dev, head_dim=cfg.dim // cfg.heads),
        "dim": cfg.dim,
        "heads": cfg.heads,
        "depth": [cfg.enc_depth, cfg.dec_depth],
        "window": cfg.window,
        "latent_dim": cfg.latent_dim,
        "chunk_size": cfg.chunk_size,
    }
