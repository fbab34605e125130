"""The voxel grid that LoG3D samples the unit cube on, and the sparse field stored over it.

One place defines how a resolution N maps unit coordinates to voxel indices, how big a UBlock is
and how far the UDF is truncated, so the UDF, the UBlocks, the network and the extraction cannot
disagree about it.

Grid: voxel i (per axis, 0 <= i < N) samples the unit coordinate ``-0.5 + (i + 0.5) / N``.
Blocks: 8³ voxels, block c covers voxels ``8c .. 8c+7``; the block grid has s = N / 8 cells per axis.
Values: the truncated UDF divided by the truncation distance τ = 4/N, so 1.0 means "τ or farther".
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

Array = Any
"""A numpy array or a torch tensor (torch is typed loosely so that this module never imports it)."""

BLOCK_SIZE = 8  # D = 8³ inner voxels per UBlock (seed A.2)
PAD = 2  # α = 2 voxels of padding on every side (seed A.2)
PADDED_SIZE = BLOCK_SIZE + 2 * PAD  # 12
TRUNCATION_VOXELS = 4.0  # τ = 4/N (seed A.1)
ISO_VOXELS = 1.0  # ε = 1/N (seed A.5)
MIN_RESOLUTION = 64
MAX_RESOLUTION = 2048
FAR = 1.0  # the normalised value of every voxel at distance ≥ τ
CHUNK_BLOCKS = 16384
"""UBlocks gathered, encoded or decoded at a time: bounds the memory of every stage that walks the
blocks (16384 padded blocks are 113 MB of float32 values) whatever N is."""


class ResolutionError(ValueError):
    """A resolution the representation cannot do."""


def check_resolution(resolution: int) -> int:
    """Accept N when it is an integer multiple of 8 in [64, 2048]; raise a clear error otherwise."""
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)):
        raise ResolutionError(f"resolution must be an integer, got {resolution!r}")
    n = int(resolution)
    if n % BLOCK_SIZE != 0:
        raise ResolutionError(f"resolution {n} is not a multiple of {BLOCK_SIZE} (UBlocks are {BLOCK_SIZE}³ voxels)")
    if not MIN_RESOLUTION <= n <= MAX_RESOLUTION:
        raise ResolutionError(f"resolution {n} is outside the supported range {MIN_RESOLUTION}..{MAX_RESOLUTION}")
    return n


def iso_level() -> float:
    """The extraction level ε = 1/N in normalised units (ε / τ), the same at every N."""
    return ISO_VOXELS / TRUNCATION_VOXELS


def unit_margin(resolution: int) -> float:
    """Margin kept free on each side of the unit cube when normalising a mesh, in unit length.

    The whole truncation band (τ plus one voxel) must fit inside the grid, otherwise the ε-surface
    would be cut open at the cube's faces.
    """
    return (TRUNCATION_VOXELS + 1.0) / resolution


def check_voxel_size(voxel_size: object) -> float:
    """Accept a voxel size that is a finite number > 0; raise a clear error otherwise."""
    if not (isinstance(voxel_size, (int, float, np.floating)) and math.isfinite(voxel_size) and voxel_size > 0):
        raise ResolutionError(f"voxel size must be a positive number, got {voxel_size!r}")
    return float(voxel_size)


def resolution_for_voxel_size(extent: float, voxel_size: float) -> int:
    """The smallest N (a multiple of 8, at least 64) whose grid holds an object ``extent`` across at
    ``voxel_size`` (same units) with the margin :func:`unit_margin` keeps; raises a clear error past
    2048 or for a size that is not a positive number."""
    voxel_size = check_voxel_size(voxel_size)
    margin_voxels = 2.0 * (TRUNCATION_VOXELS + 1.0)
    needed = extent / voxel_size + margin_voxels
    n = max(MIN_RESOLUTION, BLOCK_SIZE * math.ceil(needed / BLOCK_SIZE - 1e-9))
    if n > MAX_RESOLUTION:
        smallest = extent / (MAX_RESOLUTION - margin_voxels)
        raise ResolutionError(f"voxel size {voxel_size:.6g} on an object {extent:.6g} across needs N={n}, over the "
                              f"largest supported {MAX_RESOLUTION}; the smallest voxel size for it is {smallest:.6g}")
    return n


def unit_to_voxel(points: np.ndarray, resolution: int) -> np.ndarray:
    return (np.asarray(points, dtype=np.float64) + 0.5) * resolution - 0.5


def voxel_to_unit(points: np.ndarray, resolution: int) -> np.ndarray:
    return (np.asarray(points, dtype=np.float64) + 0.5) / resolution - 0.5


def _torch_of(array: object) -> Any:
    """The torch module when ``array`` is a torch tensor, else None. Reads ``sys.modules`` so that a
    numpy-only caller never pays for importing torch."""
    torch = sys.modules.get("torch")
    return torch if torch is not None and isinstance(array, torch.Tensor) else None


def block_keys(coords: Array, grid: int) -> Array:
    """Linear keys of block coordinates [K, 3] on a grid of ``grid`` blocks per axis (x-major), as
    int64 numpy or torch, like ``coords``: the one home of the key formula."""
    torch = _torch_of(coords)
    c = coords.to(torch.int64) if torch is not None else np.asarray(coords, dtype=np.int64)
    return (c[:, 0] * grid + c[:, 1]) * grid + c[:, 2]


def key_coords(keys: Array, grid: int) -> Array:
    """Inverse of :func:`block_keys`: int32 numpy coordinates [K, 3], or int64 for torch keys (the
    dtype torch indexing wants)."""
    torch = _torch_of(keys)
    if torch is not None:
        return torch.stack([keys // (grid * grid), (keys // grid) % grid, keys % grid], dim=1)
    k = np.asarray(keys, dtype=np.int64)
    return np.stack([k // (grid * grid), (k // grid) % grid, k % grid], axis=1).astype(np.int32)


def lookup_blocks(sorted_keys: np.ndarray, coords: np.ndarray, grid: int) -> np.ndarray:
    """Index of each block coordinate in ``sorted_keys``, or -1 where it is absent or off the grid."""
    c = np.asarray(coords, dtype=np.int64)
    inside = np.all((c >= 0) & (c < grid), axis=1)
    keys = block_keys(np.where(inside[:, None], c, 0), grid)
    pos = np.searchsorted(sorted_keys, keys)
    pos_clipped = np.minimum(pos, max(len(sorted_keys) - 1, 0))
    found = inside & (len(sorted_keys) > 0)
    if len(sorted_keys):
        found &= sorted_keys[pos_clipped] == keys
    return np.where(found, pos_clipped, -1).astype(np.int64)


NEIGHBOR_OFFSETS = np.array([(dx, dy, dz) for dx in (-1, 0, 1) for dy in (-1, 0, 1) for dz in (-1, 0, 1)], dtype=np.int64)
"""The 27 block offsets of a 3×3×3 neighbourhood, x-major; index 13 is the block itself."""


def neighbor_table(sorted_keys: np.ndarray, coords: np.ndarray, grid: int, offsets: np.ndarray) -> np.ndarray:
    """For each block in ``coords`` [K, 3] and each offset [O, 3]: the index of the neighbour in
    ``sorted_keys`` or -1. Returns int64 [K, O]."""
    c = np.asarray(coords, dtype=np.int64)
    table = np.empty((c.shape[0], offsets.shape[0]), dtype=np.int64)
    for j, off in enumerate(offsets):
        table[:, j] = lookup_blocks(sorted_keys, c + off, grid)
    return table


@dataclass
class SparseField:
    """A normalised, truncated UDF stored only on a set of 8³ blocks, as numpy arrays (the numba
    engine, the extraction) or as torch tensors on one device (the torch engine).

    ``keys`` are sorted int64 linear block keys [M] (:func:`block_keys`); ``values`` float32
    [M, 8, 8, 8] indexed [x, y, z]; every voxel of a block not listed is :data:`FAR`. Memory grows
    with the surface, never with N³.
    """

    resolution: int
    keys: Array
    values: Array

    @property
    def grid(self) -> int:
        return self.resolution // BLOCK_SIZE

    @property
    def num_blocks(self) -> int:
        return int(self.keys.shape[0])

    @property
    def coords(self) -> Array:
        return key_coords(self.keys, self.grid)

    @property
    def on_host(self) -> bool:
        """Whether the arrays are numpy (what the extraction reads)."""
        return isinstance(self.keys, np.ndarray)

    def nbytes(self) -> int:
        if self.on_host:
            return int(self.keys.nbytes + self.values.nbytes)
        return int(self.keys.numel() * self.keys.element_size() + self.values.numel() * self.values.element_size())

    def to_host(self) -> "SparseField":
        """The same field as numpy arrays (float32 values): a copy from a device, else itself."""
        if self.on_host:
            return self
        return SparseField(self.resolution, self.keys.cpu().numpy(), self.values.float().cpu().numpy())

    def to(self, device: Any) -> "SparseField":
        """The same field as torch tensors on ``device`` (int64 keys, float32 values)."""
        import torch

        keys = self.keys if not self.on_host else np.ascontiguousarray(self.keys, dtype=np.int64)
        values = self.values if not self.on_host else np.ascontiguousarray(self.values, dtype=np.float32)
        return SparseField(self.resolution, torch.as_tensor(keys, device=device).to(torch.int64),
                           torch.as_tensor(values, device=device).to(torch.float32))
