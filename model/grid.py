"""The voxel grid that LoG3D samples the unit cube on, and the sparse field stored over it.

One place defines how a resolution N maps unit coordinates to voxel indices, how big a UBlock is
and how far the UDF is truncated, so the UDF, the UBlocks, the network and the extraction cannot
disagree about it.

Grid: voxel i (per axis, 0 <= i < N) samples the unit coordinate ``-0.5 + (i + 0.5) / N``.
Blocks: 8³ voxels, block c covers voxels ``8c .. 8c+7``; the block grid has s = N / 8 cells per axis.
Values: the truncated UDF divided by the truncation distance τ = 4/N, so 1.0 means "τ or farther".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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


def unit_to_voxel(points: np.ndarray, resolution: int) -> np.ndarray:
    return (np.asarray(points, dtype=np.float64) + 0.5) * resolution - 0.5


def voxel_to_unit(points: np.ndarray, resolution: int) -> np.ndarray:
    return (np.asarray(points, dtype=np.float64) + 0.5) / resolution - 0.5


def block_keys(coords: np.ndarray, grid: int) -> np.ndarray:
    """Linear keys of block coordinates [K, 3] on a grid of ``grid`` blocks per axis (x-major)."""
    c = np.asarray(coords, dtype=np.int64)
    return (c[:, 0] * grid + c[:, 1]) * grid + c[:, 2]


def key_coords(keys: np.ndarray, grid: int) -> np.ndarray:
    """Inverse of :func:`block_keys`: int32 coordinates [K, 3]."""
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
    """A normalised, truncated UDF stored only on a set of 8³ blocks.

    ``keys`` are sorted linear block keys [M]; ``values`` float32 [M, 8, 8, 8] indexed [x, y, z];
    every voxel of a block not listed is :data:`FAR`. Memory grows with the surface, never with N³.
    """

    resolution: int
    keys: np.ndarray
    values: np.ndarray

    @property
    def grid(self) -> int:
        return self.resolution // BLOCK_SIZE

    @property
    def num_blocks(self) -> int:
        return int(self.keys.shape[0])

    @property
    def coords(self) -> np.ndarray:
        return key_coords(self.keys, self.grid)

    def nbytes(self) -> int:
        return int(self.keys.nbytes + self.values.nbytes)
