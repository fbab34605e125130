"""Sparse tokens on the UBlock grid: shifted-window attention and submanifold 3×3×3 convolution.

One token per active UBlock, addressed by its integer block coordinate (0 <= c < s, s = N/8 <= 256).
Everything here costs memory proportional to L × (window population), never L² and never s³:

* windows are found by sorting tokens on the id of ``(coords + shift) // window`` and attention runs
  inside each window only (a varlen flash kernel on CUDA when it exists and works, otherwise SDPA
  on windows grouped by population into a few padded batches with a key-padding mask);
* the 3×3×3 convolution gathers neighbours through an [L, 27] table built once from sorted linear
  keys and ``torch.searchsorted``, then runs one GEMM with K = 27·C per chunk of rows, in a custom
  autograd function that recomputes the gathers in backward instead of storing 27 copies of the
  features.

Both structures depend on the coordinates only, so :class:`SparseContext` builds them once per
forward pass and every transformer block reuses them.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "SparseContext",
    "WindowPartition",
    "NeighbourMap",
    "window_attention",
    "attention_backend",
    "sparse_conv3d",
    "SparseConv3d",
    "WindowAttention",
    "SparseTransformerBlock",
    "sinusoidal_position_encoding",
    "KERNEL_OFFSETS",
]

# Bits per axis when packing a 3D integer coordinate into one int64 key. 21 bits leave room for
# grids far beyond s = 256 and for the +1 margin used by the neighbour search.
_KEY_BITS = 21
_KEY_MAX = (1 << _KEY_BITS) - 2

#: The 27 offsets of a 3×3×3 kernel in lexicographic (dx, dy, dz) order; offset k and 26 - k are
#: opposite, which the convolution's backward relies on. Index k = (dx+1)*9 + (dy+1)*3 + (dz+1),
#: the same order as a dense ``conv3d`` weight ``w[:, :, dx+1, dy+1, dz+1]``.
KERNEL_OFFSETS: Tensor = torch.tensor(
    [(dx, dy, dz) for dx in (-1, 0, 1) for dy in (-1, 0, 1) for dz in (-1, 0, 1)], dtype=torch.long
)


def _pack(c: Tensor) -> Tensor:
    """Pack non-negative integer coordinates [..., 3] into int64 keys that sort like (x, y, z)."""
    return (c[..., 0] << (2 * _KEY_BITS)) | (c[..., 1] << _KEY_BITS) | c[..., 2]


# ----------------------------------------------------------------------------------------------
# Window partition
# ----------------------------------------------------------------------------------------------


@dataclass
class WindowPartition:
    """Tokens grouped into cubic windows of ``window`` blocks, shifted by ``shift`` blocks.

    Two execution plans are kept, both built from one sort:

    * varlen: ``order`` sorts tokens by window, ``cu_seqlens`` delimits windows (flash varlen);
    * padded (built lazily): windows bucketed by population (powers of two), each bucket cut into
      batches of at most ``max_pairs`` query-key pairs; ``batches`` holds (token index [B, P], key mask [B, 1, 1, P] or
      None when every window of the batch is full, flat positions of real tokens in [B*P]), and
      ``unpermute`` maps the concatenated real tokens back to the input order.
    """

    window: int
    shift: int
    num_tokens: int
    order: Tensor
    inverse_order: Tensor
    counts: Tensor
    cu_seqlens: Tensor
    max_population: int
    max_pairs: int = 1 << 22
    _batches: list[tuple[Tensor, Tensor | None, Tensor]] | None = field(default=None, repr=False)
    _unpermute: Tensor | None = field(default=None, repr=False)

    @property
    def num_windows(self) -> int:
        return int(self.counts.numel())

    @staticmethod
    def build(coords: Tensor, window: int, shift: int, max_pairs: int = 1 << 22) -> "WindowPartition":
        """Partition tokens with block coordinates ``coords`` [L, 3] (long) into shifted windows."""
        if window < 1 or not 0 <= shift < window:
            raise ValueError(f"need window >= 1 and 0 <= shift < window, got {window=} {shift=}")
        device = coords.device
        L = coords.shape[0]
        wid = _pack(torch.div(coords + shift, window, rounding_mode="floor"))
        sorted_wid, order = torch.sort(wid, stable=True)
        _, counts = torch.unique_consecutive(sorted_wid, return_counts=True)
        cu = torch.zeros(counts.numel() + 1, dtype=torch.int32, device=device)
        cu[1:] = torch.cumsum(counts, 0)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(L, device=device)
        max_pop = int(counts.max()) if L else 0
        return WindowPartition(window, shift, L, order, inverse, counts, cu, max_pop, max_pairs)

    @property
    def batches(self) -> list[tuple[Tensor, Tensor | None, Tensor]]:
        """The padded plan, built on first use (the varlen path never needs it)."""
        if self._batches is None:
            self._build_padded()
        assert self._batches is not None
        return self._batches

    @property
    def unpermute(self) -> Tensor:
        if self._unpermute is None:
            self._build_padded()
        assert self._unpermute is not None
        return self._unpermute

    def _build_padded(self) -> None:
        device = self.order.device
        counts = self.counts
        max_pairs = self.max_pairs
        batches: list[tuple[Tensor, Tensor | None, Tensor]] = []
        if self.num_tokens == 0:
            self._batches, self._unpermute = batches, torch.zeros(0, dtype=torch.long, device=device)
            return
        starts = (self.cu_seqlens[:-1]).long()
        # Bucket b holds windows with population in (2^(b-1), 2^b]: padding wastes < 2x.
        bucket = torch.ceil(torch.log2(counts.double())).long()
        real_tokens: list[Tensor] = []
        for b in torch.unique(bucket).tolist():
            wins = torch.nonzero(bucket == b).flatten()
            pop = counts[wins]
            P = int(pop.max())
            per_batch = max(1, max_pairs // (P * P))
            for i in range(0, wins.numel(), per_batch):
                w = wins[i : i + per_batch]
                n = pop[i : i + per_batch]
                ar = torch.arange(P, device=device)
                valid = ar[None, :] < n[:, None]  # [B, P]
                # Padded slots repeat the window's first token: queries stay finite, keys are masked.
                idx = torch.where(valid, starts[w][:, None] + ar[None, :], starts[w][:, None])
                tok = self.order[idx]
                mask = None if bool(valid.all()) else valid[:, None, None, :]
                flat = torch.nonzero(valid.flatten()).flatten()
                batches.append((tok, mask, flat))
                real_tokens.append(tok.flatten()[flat])
        cat = torch.cat(real_tokens)
        unperm = torch.empty_like(cat)
        unperm[cat] = torch.arange(cat.numel(), device=device)
        self._batches, self._unpermute = batches, unperm


# ----------------------------------------------------------------------------------------------
# Neighbour map (rule book) for the submanifold 3×3×3 convolution
# ----------------------------------------------------------------------------------------------


@dataclass
class NeighbourMap:
    """``table[i, k]`` is the token at ``coords[i] + KERNEL_OFFSETS[k]``, or ``num_tokens`` (a zero
    row appended to the features) where there is none. Built once from sorted linear keys with
    ``torch.searchsorted``; ``table[:, 13]`` is the identity.
    """

    num_tokens: int
    table: Tensor

    @staticmethod
    def build(coords: Tensor) -> "NeighbourMap":
        L = coords.shape[0]
        device = coords.device
        if L == 0:
            return NeighbourMap(0, torch.zeros(0, 27, dtype=torch.long, device=device))
        keys = _pack(coords + 1)  # +1 so that coords - 1 stays non-negative
        sorted_keys, perm = torch.sort(keys)
        offsets = KERNEL_OFFSETS.to(device)
        query = _pack(coords[:, None, :] + 1 + offsets[None, :, :])  # [L, 27]
        pos = torch.searchsorted(sorted_keys, query).clamp_(max=L - 1)
        found = sorted_keys[pos] == query
        table = torch.where(found, perm[pos], torch.full_like(pos, L))
        return NeighbourMap(L, table)


# ----------------------------------------------------------------------------------------------
# Context shared by all blocks of one forward pass
# ----------------------------------------------------------------------------------------------


class SparseContext:
    """The coordinate-only structures of one shape, computed lazily and cached.

    Pass one instance to every transformer block of a forward pass (encoder and decoder alike):
    windows for each (window, shift) and the neighbour map are then built once, not 16 times.
    """

    def __init__(self, coords: Tensor, attn_max_pairs: int = 1 << 22) -> None:
        if coords.ndim != 2 or coords.shape[1] != 3:
            raise ValueError(f"coords must be [L, 3], got {tuple(coords.shape)}")
        if coords.is_floating_point():
            raise TypeError("coords must be an integer tensor")
        coords = coords.long()
        if coords.numel():
            lo, hi = int(coords.min()), int(coords.max())
            if lo < 0 or hi > _KEY_MAX:
                raise ValueError(f"block coordinates must lie in [0, {_KEY_MAX}], got [{lo}, {hi}]")
            keys = torch.sort(_pack(coords)).values
            if bool((keys[1:] == keys[:-1]).any()):
                raise ValueError("coords contain duplicate blocks")
        self.coords = coords
        self.attn_max_pairs = attn_max_pairs
        self._windows: dict[tuple[int, int], WindowPartition] = {}
        self._neighbours: NeighbourMap | None = None

    @property
    def num_tokens(self) -> int:
        return int(self.coords.shape[0])

    def windows(self, window: int, shift: int) -> WindowPartition:
        key = (window, shift)
        if key not in self._windows:
            self._windows[key] = WindowPartition.build(self.coords, window, shift, self.attn_max_pairs)
        return self._windows[key]

    @property
    def neighbours(self) -> NeighbourMap:
        if self._neighbours is None:
            self._neighbours = NeighbourMap.build(self.coords)
        return self._neighbours


# ----------------------------------------------------------------------------------------------
# Window attention
# ----------------------------------------------------------------------------------------------


def _varlen_fn():
    """torch.nn.attention.varlen.varlen_attn when this torch has it (2.9+), else None."""
    try:
        from torch.nn.attention.varlen import varlen_attn  # type: ignore[attr-defined]
    except Exception:  # pragma: no cover - depends on the torch build
        return None
    return varlen_attn


def _varlen_eligible(device: torch.device, dtype: torch.dtype, head_dim: int) -> bool:
    """Static conditions for the flash varlen kernel: CUDA, Ampere+, half precision, head dim."""
    return (
        device.type == "cuda"
        and dtype in (torch.float16, torch.bfloat16)
        and head_dim % 8 == 0
        and head_dim <= 256
        and _varlen_fn() is not None
        and torch.cuda.get_device_capability(device) >= (8, 0)
    )


@functools.lru_cache(maxsize=None)
def _varlen_works(device_str: str, dtype: torch.dtype, head_dim: int) -> bool:
    """Run the varlen kernel once, forward and backward, on tiny data and compare with padded SDPA.

    Some builds expose the Python API without a usable kernel (or backward) for a given GPU;
    finding out once, and falling back to padded SDPA with a warning, beats failing mid-job.
    """
    device = torch.device(device_str)
    try:
        with torch.inference_mode(False), torch.enable_grad(), torch.autocast(device.type, enabled=False):
            g = torch.Generator(device="cpu").manual_seed(0)
            coords = torch.unique(torch.randint(0, 12, (40, 3), generator=g), dim=0).to(device)
            part = WindowPartition.build(coords, 8, 0)
            qkv = [torch.randn(coords.shape[0], 2, head_dim, generator=g).to(device, dtype) for _ in range(3)]
            qkv = [t.requires_grad_() for t in qkv]
            got = _attention_varlen(*qkv, part)
            got.float().square().sum().backward()
            ref = _attention_padded(*(t.detach().float() for t in qkv), part)
            ok = bool(torch.allclose(got.detach().float(), ref, atol=3e-2, rtol=3e-2))
            ok = ok and all(t.grad is not None and bool(torch.isfinite(t.grad).all()) for t in qkv)
        if not ok:
            warnings.warn("varlen attention disagrees with padded SDPA on this device; using padded SDPA")
        return ok
    except Exception as exc:
        why = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}" if str(exc) else type(exc).__name__
        warnings.warn(f"varlen attention unavailable on {device_str} ({why}); using padded SDPA")
        return False


def _attention_padded(q: Tensor, k: Tensor, v: Tensor, part: WindowPartition) -> Tensor:
    """SDPA over windows padded to a common population inside each population bucket."""
    outs = []
    H, D = q.shape[1], q.shape[2]
    for tok, mask, flat in part.batches:
        B, P = tok.shape
        qb, kb, vb = (t[tok].transpose(1, 2) for t in (q, k, v))  # [B, H, P, D]
        o = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask)
        outs.append(o.transpose(1, 2).reshape(B * P, H, D)[flat])
    return torch.cat(outs)[part.unpermute]


def _attention_varlen(q: Tensor, k: Tensor, v: Tensor, part: WindowPartition) -> Tensor:
    """Flash varlen attention on tokens sorted by window (no padding at all)."""
    varlen_attn = _varlen_fn()
    o = part.order
    m = part.max_population
    out = varlen_attn(q[o].contiguous(), k[o].contiguous(), v[o].contiguous(), part.cu_seqlens, part.cu_seqlens, m, m)
    return out[part.inverse_order]


def _choose_backend(device: torch.device, dtype: torch.dtype, head_dim: int) -> str:
    if _varlen_eligible(device, dtype, head_dim) and _varlen_works(str(device), dtype, head_dim):
        return "varlen"
    return "padded"


def window_attention(q: Tensor, k: Tensor, v: Tensor, part: WindowPartition, backend: str = "auto") -> Tensor:
    """Multi-head attention restricted to the windows of ``part``.

    q, k, v: [L, H, D] in the token order of the coordinates the partition was built from.
    Returns [L, H, D]. ``backend`` is "auto" (varlen flash on capable CUDA devices in fp16/bf16,
    padded SDPA elsewhere), "padded" or "varlen".
    """
    if q.shape[0] != part.num_tokens:
        raise ValueError(f"{q.shape[0]} tokens but the partition was built for {part.num_tokens}")
    if q.shape[0] == 0:
        return q.new_zeros(q.shape)
    if backend == "auto":
        backend = _choose_backend(q.device, q.dtype, q.shape[-1])
    if backend == "varlen":
        return _attention_varlen(q, k, v, part)
    if backend == "padded":
        return _attention_padded(q, k, v, part)
    raise ValueError(f"unknown attention backend {backend!r}")


def attention_backend(device: torch.device | str, dtype: torch.dtype | None = None, head_dim: int = 32) -> str:
    """Human-readable name of the window-attention path used on ``device``.

    With ``dtype`` None, describes the policy for every dtype (what ``log3d info`` prints);
    with a dtype, the path a tensor of that dtype will take. ``head_dim`` defaults to the paper's
    256 / 8 heads.
    """
    device = torch.device(device)
    padded = f"padded SDPA over population-bucketed windows ({device.type})"
    if device.type != "cuda":
        return padded
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if dtype is not None:
        if _choose_backend(device, dtype, head_dim) == "varlen":
            return "flash varlen attention (torch.nn.attention.varlen)"
        return padded
    half = next((d for d in (torch.bfloat16, torch.float16) if _varlen_eligible(device, d, head_dim)), None)
    if half is not None and _varlen_works(str(device), half, head_dim):
        return f"flash varlen attention for fp16/bf16 (torch.nn.attention.varlen); {padded} for fp32"
    return padded


# ----------------------------------------------------------------------------------------------
# Submanifold sparse 3×3×3 convolution
# ----------------------------------------------------------------------------------------------


def _zero_row(feats: Tensor) -> Tensor:
    """feats [L, C] with a zero row L appended: where the neighbour table points when none exists."""
    return torch.cat([feats, feats.new_zeros(1, feats.shape[1])])


class _SubmanifoldConv(torch.autograd.Function):
    """out = gather(x, table) @ W as one GEMM with K = 27·Cin, in row chunks of ``rows``.

    Backward recomputes the gathers instead of saving [L, 27, C], and the input gradient is also a
    gather + GEMM: token i has neighbour j at offset k exactly when j has neighbour i at offset
    26 - k, so grad_x = gather(grad, table flipped along k) @ Wᵀ. No scatter-add anywhere (slow on
    CPU, atomic on CUDA), so results are deterministic.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, table: Tensor, rows: int) -> Tensor:  # type: ignore[override]
        k, cin, cout = weight.shape
        w = weight.reshape(k * cin, cout)
        xp = _zero_row(x)
        out = x.new_empty(x.shape[0], cout)
        for r in range(0, x.shape[0], rows):
            t = table[r : r + rows]
            out[r : r + rows] = xp[t].reshape(t.shape[0], -1) @ w
        ctx.save_for_backward(x, weight, table)
        ctx.rows = rows
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        x, weight, table = ctx.saved_tensors
        rows = ctx.rows
        k, cin, cout = weight.shape
        grad = grad.contiguous()
        gx = gw = None
        if ctx.needs_input_grad[0]:
            wt = weight.transpose(1, 2).reshape(k * cout, cin)
            gp = _zero_row(grad)
            gx = torch.empty_like(x)
            for r in range(0, x.shape[0], rows):
                t = table[r : r + rows].flip(1)
                gx[r : r + rows] = gp[t].reshape(t.shape[0], -1) @ wt
        if ctx.needs_input_grad[1]:
            xp = _zero_row(x)
            gw = weight.new_zeros(k * cin, cout)
            for r in range(0, x.shape[0], rows):
                t = table[r : r + rows]
                gw += xp[t].reshape(t.shape[0], -1).t() @ grad[r : r + rows]
            gw = gw.reshape(k, cin, cout)
        return gx, gw, None, None


def sparse_conv3d(
    x: Tensor, weight: Tensor, bias: Tensor | None, nmap: NeighbourMap, max_elements: int = 1 << 24
) -> Tensor:
    """Submanifold 3×3×3 convolution of token features x [L, Cin] with weight [27, Cin, Cout].

    Output sites are the input sites (the sparsity pattern is preserved), as in a dense conv3d with
    padding 1 evaluated only at active blocks over a grid that is zero elsewhere. Rows are processed
    so that a gathered chunk holds at most ``max_elements`` values (64 MB in fp32).
    """
    if x.shape[0] != nmap.num_tokens:
        raise ValueError(f"{x.shape[0]} tokens but the neighbour map was built for {nmap.num_tokens}")
    dtype = x.dtype
    dev = x.device.type
    if torch.is_autocast_enabled(dev):  # custom Functions are not autocast-aware
        dtype = torch.get_autocast_dtype(dev)
    rows = max(1, max_elements // (weight.shape[0] * max(weight.shape[1], weight.shape[2])))
    out = _SubmanifoldConv.apply(x.to(dtype), weight.to(dtype), nmap.table, rows)
    if bias is not None:
        out = out + bias.to(dtype)
    return out


class SparseConv3d(nn.Module):
    """Submanifold 3×3×3 convolution on the block grid (weights [27, Cin, Cout])."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(27, in_channels, out_channels))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Same scale as nn.Conv3d's default: uniform(±1/sqrt(fan_in)), fan_in = 27 * Cin.
        bound = 1.0 / math.sqrt(self.weight.shape[0] * self.weight.shape[1])
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor, ctx: SparseContext) -> Tensor:
        return sparse_conv3d(x, self.weight, self.bias, ctx.neighbours)


# ----------------------------------------------------------------------------------------------
# Transformer pieces
# ----------------------------------------------------------------------------------------------


def sinusoidal_position_encoding(coords: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Absolute sinusoidal encoding of 3D integer block coordinates, [L, 3] -> [L, dim] float32.

    Each axis gets ``dim // 6`` frequencies (sin and cos); the remaining ``dim % 6`` channels are
    zero so any ``dim`` works.
    """
    nf = dim // 6
    freqs = torch.exp(-math.log(max_period) * torch.arange(nf, device=coords.device, dtype=torch.float32) / max(nf, 1))
    ang = coords.float()[:, :, None] * freqs[None, None, :]  # [L, 3, nf]
    pe = torch.cat([ang.sin(), ang.cos()], dim=-1).reshape(coords.shape[0], 6 * nf)
    if pe.shape[1] < dim:
        pe = F.pad(pe, (0, dim - pe.shape[1]))
    return pe


class WindowAttention(nn.Module):
    """Multi-head self-attention inside (shifted) windows of the block grid."""

    def __init__(self, dim: int, heads: int, window: int, shift: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.window = window
        self.shift = shift
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, ctx: SparseContext) -> Tensor:
        L, C = x.shape
        q, k, v = self.qkv(x).view(L, 3, self.heads, C // self.heads).unbind(1)
        o = window_attention(q, k, v, ctx.windows(self.window, self.shift))
        return self.proj(o.reshape(L, C))


class SparseTransformerBlock(nn.Module):
    """Pre-norm block: x += Attn(LN x); x += MLP(LN x); then ``convs`` times x += SparseConv(LN x).

    The sparse conv is the paper's "feature-preserving sparse voxel convolution appended to the end
    of each transformer block"; it lets information cross window borders every block.
    """

    def __init__(self, dim: int, heads: int, window: int, shift: int, mlp_ratio: float = 4.0, convs: int = 1) -> None:
        super().__init__()
        hidden = int(round(dim * mlp_ratio))
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window, shift)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.conv_norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(convs))
        self.convs = nn.ModuleList(SparseConv3d(dim, dim) for _ in range(convs))

    def forward(self, x: Tensor, ctx: SparseContext) -> Tensor:
        x = x + self.attn(self.norm1(x), ctx)
        x = x + self.mlp(self.norm2(x))
        for norm, conv in zip(self.conv_norms, self.convs):
            x = x + conv(norm(x), ctx)
        return x
