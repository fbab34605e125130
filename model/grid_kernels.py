"""The grid's block keys inside numba kernels: the compiled twins of :func:`model.grid.block_keys`
and :func:`model.grid.key_coords` (``model.grid`` must load without numba), and the sorted-key
search every kernel that reads a sparse field uses, and the one id a voxel of the stored blocks has
in a flat queue or edge list. Inlined into their callers."""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True, inline="always")
def block_key(bx, by, bz, grid):
    """The linear key of block (bx, by, bz) on a grid of ``grid`` blocks per axis (x-major)."""
    return (bx * grid + by) * grid + bz


@nb.njit(cache=True, inline="always")
def block_origin(key, grid):
    """The voxel coordinates of the first voxel of the block with linear key ``key``."""
    return 8 * (key // (grid * grid)), 8 * ((key // grid) % grid), 8 * (key % grid)


@nb.njit(cache=True, inline="always")
def voxel_id(b, x, y, z):
    """One int for voxel (x, y, z) of stored block ``b`` (blocks of 8³): b · 512 + x · 64 + y · 8 + z."""
    return b * 512 + (x * 64 + y * 8 + z)


@nb.njit(cache=True, inline="always")
def voxel_of(v):
    """(b, x, y, z) of the voxel whose :func:`voxel_id` is ``v``."""
    b, local = v // 512, v % 512
    return b, local // 64, (local // 8) % 8, local % 8


@nb.njit(cache=True, inline="always")
def lower_bound(sorted_values, start, stop, value):
    """First index in [start, stop) of a sorted array whose entry is not below ``value``."""
    lo, hi = start, stop
    while lo < hi:
        mid = (lo + hi) >> 1
        if sorted_values[mid] < value:
            lo = mid + 1
        else:
            hi = mid
    return lo


@nb.njit(cache=True, inline="always")
def find_block(keys, key):
    """Index of ``key`` in the sorted block keys, or -1."""
    lo = lower_bound(keys, 0, keys.shape[0], key)
    if lo < keys.shape[0] and keys[lo] == key:
        return lo
    return -1


@nb.njit(cache=True, inline="always")
def window_blocks(keys, grid, x0, y0, z0):
    """The stored blocks [2, 2, 2] (index in ``keys`` or −1) of a window of voxels starting at
    (x0, y0, z0) and at most 8 voxels wide per axis — it spans at most two blocks per axis, so a
    kernel reading many voxels of it searches the keys eight times, not once per voxel. Voxel (x, y,
    z) of the window lies in ``blocks[(x >> 3) - (x0 >> 3), (y >> 3) - (y0 >> 3), (z >> 3) - (z0 >> 3)]``."""
    blocks = np.full((2, 2, 2), -1, dtype=np.int64)
    for i in range(2):
        for j in range(2):
            for k in range(2):
                bx, by, bz = (x0 >> 3) + i, (y0 >> 3) + j, (z0 >> 3) + k
                if 0 <= bx < grid and 0 <= by < grid and 0 <= bz < grid:
                    blocks[i, j, k] = find_block(keys, block_key(bx, by, bz, grid))
    return blocks


__all__ = ["block_key", "block_origin", "find_block", "lower_bound", "window_blocks"]
