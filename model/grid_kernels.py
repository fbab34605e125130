"""The grid's block keys inside numba kernels: the compiled twins of :func:`model.grid.block_keys`
and :func:`model.grid.key_coords` (``model.grid`` must load without numba), and the sorted-key
search every kernel that reads a sparse field uses. Inlined into their callers."""

from __future__ import annotations

import numba as nb


@nb.njit(cache=True, inline="always")
def block_key(bx, by, bz, grid):
    """The linear key of block (bx, by, bz) on a grid of ``grid`` blocks per axis (x-major)."""
    return (bx * grid + by) * grid + bz


@nb.njit(cache=True, inline="always")
def block_origin(key, grid):
    """The voxel coordinates of the first voxel of the block with linear key ``key``."""
    return 8 * (key // (grid * grid)), 8 * ((key // grid) % grid), 8 * (key % grid)


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


__all__ = ["block_key", "block_origin", "find_block", "lower_bound"]
