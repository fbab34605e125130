"""UBlock gathering and Pad-Average on a torch device: the twins of :mod:`model.ublocks`.

Why flat index tables: both directions map the 12³ voxels of a padded block to (neighbour block,
voxel within it) by the same fixed pattern. Precomputing that pattern once as two [1728] tables
turns gathering into one indexed read and Pad-Average into one ``index_add_`` over flattened
(block, voxel) indices, so neither needs a loop over blocks nor the CPU path's parity classes
(atomic adds make overlapping writes safe).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from ..grid import BLOCK_SIZE, CHUNK_BLOCKS, FAR, NEIGHBOR_OFFSETS, PAD, PADDED_SIZE, SparseField, block_keys, check_resolution, key_coords
from ..ublocks import UBlocks

VOXELS_PER_BLOCK = BLOCK_SIZE**3


def lookup_keys(sorted_keys: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Index of each key in ``sorted_keys`` or -1 where absent (the torch twin of
    :func:`model.grid.lookup_blocks`; callers map off-grid coordinates to a negative key first)."""
    if sorted_keys.numel() == 0:
        return torch.full_like(keys, -1)
    pos = torch.searchsorted(sorted_keys, keys).clamp_(max=sorted_keys.numel() - 1)
    found = (sorted_keys[pos] == keys) & (keys >= 0)
    return torch.where(found, pos, torch.full_like(pos, -1))


def grid_keys(coords: torch.Tensor, grid: int) -> torch.Tensor:
    """Linear keys (:func:`model.grid.block_keys`) of int64 block coordinates [K, 3]; -1 for
    coordinates off the grid."""
    inside = ((coords >= 0) & (coords < grid)).all(dim=1)
    keys = block_keys(coords, grid)
    return torch.where(inside, keys, torch.full_like(keys, -1))


def _padded_tables(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """For each of the 12³ padded voxels (x-major): the neighbour slot 0..26 that holds it (ordered
    like :data:`model.grid.NEIGHBOR_OFFSETS`) and its linear index 0..511 inside that block."""
    p = torch.arange(PADDED_SIZE, device=device)
    which = (p >= PAD).long() + (p >= PAD + BLOCK_SIZE).long()  # 0: previous, 1: itself, 2: next
    local = (p - PAD) % BLOCK_SIZE
    slot = which[:, None, None] * 9 + which[None, :, None] * 3 + which[None, None, :]
    voxel = local[:, None, None] * BLOCK_SIZE**2 + local[None, :, None] * BLOCK_SIZE + local[None, None, :]
    return slot.reshape(-1), voxel.reshape(-1)


def _neighbors(sorted_keys: torch.Tensor, coords: torch.Tensor, grid: int) -> torch.Tensor:
    """Index in ``sorted_keys`` of each of the 27 neighbours of every block [l, 3], or -1: [l, 27]."""
    offsets = torch.as_tensor(NEIGHBOR_OFFSETS, device=coords.device)
    around = (coords[:, None, :] + offsets[None, :, :]).reshape(-1, 3)
    return lookup_keys(sorted_keys, grid_keys(around, grid)).reshape(-1, offsets.shape[0])


def _padded_sources(sorted_keys: torch.Tensor, coords: torch.Tensor, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat (block × 512 + voxel) index of every padded voxel of the blocks [l, 3] in a field keyed by
    ``sorted_keys``: [l, 1728], and whether that neighbour block exists there."""
    slot, voxel = _padded_tables(coords.device)
    block = _neighbors(sorted_keys, coords, grid)[:, slot]
    present = block >= 0
    return block.clamp_min(0) * VOXELS_PER_BLOCK + voxel, present


def active_indices_torch(field: SparseField) -> torch.Tensor:
    """Indices of the blocks with at least one inner voxel below FAR (the UBlocks the network sees)."""
    if field.num_blocks == 0:
        return torch.empty(0, dtype=torch.int64, device=field.keys.device)
    return torch.nonzero(field.values.reshape(field.num_blocks, -1).amin(dim=1) < FAR).flatten()


def gather_ublocks_torch(field: SparseField, indices: torch.Tensor) -> torch.Tensor:
    """The blocks ``indices`` of ``field`` padded by 2 from their 26 neighbours: float32
    [l, 12, 12, 12], voxel (8c − 2 + i) at index i, FAR where the neighbour block is not stored."""
    size = (PADDED_SIZE,) * 3
    if indices.numel() == 0:
        return torch.empty((0, *size), dtype=torch.float32, device=field.keys.device)
    coords = key_coords(field.keys[indices], field.grid)
    source, present = _padded_sources(field.keys, coords, field.grid)
    values = field.values.reshape(-1)[source]
    return torch.where(present, values, torch.full_like(values, FAR)).reshape(-1, *size)


def iter_ublocks_torch(field: SparseField, chunk_size: int = CHUNK_BLOCKS) -> Iterator[UBlocks]:
    """The active blocks as UBlocks of tensors (padded blocks [l, 12, 12, 12], int64 block
    coordinates [l, 3]), ``chunk_size`` at a time in key order, so the padded tensor never exceeds
    one chunk."""
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    active = active_indices_torch(field)
    for start in range(0, active.numel(), chunk_size):
        idx = active[start : start + chunk_size]
        yield UBlocks(field.resolution, gather_ublocks_torch(field, idx), key_coords(field.keys[idx], field.grid))


def all_ublocks_torch(field: SparseField, chunk_size: int = CHUNK_BLOCKS) -> UBlocks:
    """All active UBlocks at once (for the encoder, which sees the whole shape), filled chunk by
    chunk so that the gathering's index tensors (twice the size of the blocks) never exist for the
    whole shape."""
    active = active_indices_torch(field)
    blocks = torch.empty((int(active.numel()),) + (PADDED_SIZE,) * 3, dtype=torch.float32, device=field.keys.device)
    start = 0
    for part in iter_ublocks_torch(field, chunk_size):
        blocks[start:start + part.num_blocks] = part.blocks
        start += part.num_blocks
    return UBlocks(field.resolution, blocks, key_coords(field.keys[active], field.grid))


class PadAverageTorch:
    """Reassembles padded 12³ blocks into a :class:`SparseField`, averaging every voxel over all the
    blocks whose padded region covers it (the twin of :class:`model.ublocks.PadAverage`).

    The covered region is the blocks ``coords`` plus their 26-neighbours. Sums and counts live in
    flat buffers with one extra slot at the end that swallows writes outside the covered region,
    which keeps :meth:`add` free of boolean compaction (a device sync on CUDA).
    """

    def __init__(self, resolution: int, coords: torch.Tensor | np.ndarray) -> None:
        self.resolution = check_resolution(resolution)
        self.grid = self.resolution // BLOCK_SIZE
        coords = torch.as_tensor(coords).to(torch.int64).reshape(-1, 3)
        offsets = torch.as_tensor(NEIGHBOR_OFFSETS, device=coords.device)
        around = grid_keys((coords[:, None, :] + offsets[None, :, :]).reshape(-1, 3), self.grid)
        self.keys = torch.unique(around[around >= 0])
        slots = self.keys.numel() * VOXELS_PER_BLOCK + 1
        self._sums = torch.zeros(slots, dtype=torch.float32, device=coords.device)
        self._counts = torch.zeros(slots, dtype=torch.float32, device=coords.device)

    def add(self, blocks: torch.Tensor, coords: torch.Tensor) -> None:
        """Accumulate padded blocks [l, 12, 12, 12] (or [l, 1, 12, 12, 12], any float dtype) placed
        at block coordinates ``coords`` [l, 3]."""
        if blocks.dim() == 5 and blocks.shape[1] == 1:
            blocks = blocks[:, 0]
        if tuple(blocks.shape[1:]) != (PADDED_SIZE,) * 3 or blocks.shape[0] != len(coords):
            raise ValueError(f"expected blocks [{len(coords)}, 12, 12, 12], got {list(blocks.shape)}")
        if blocks.shape[0] == 0:
            return
        coords = torch.as_tensor(coords, device=self.keys.device).to(torch.int64)
        target, present = _padded_sources(self.keys, coords, self.grid)
        target = torch.where(present, target, torch.full_like(target, self._sums.numel() - 1)).reshape(-1)
        self._sums.index_add_(0, target, blocks.reshape(-1).to(torch.float32))
        self._counts.index_add_(0, target, torch.ones((), device=target.device).expand(target.numel()))

    def finish(self) -> SparseField:
        """The averaged field; voxels no block covered are FAR. Frees the accumulators."""
        shape = (-1, BLOCK_SIZE, BLOCK_SIZE, BLOCK_SIZE)
        sums, counts = self._sums[:-1], self._counts[:-1]
        values = torch.where(counts > 0, sums / counts.clamp_min(1.0), torch.full_like(sums, FAR))
        self._sums = self._counts = None  # type: ignore[assignment]
        return SparseField(resolution=self.resolution, keys=self.keys, values=values.reshape(shape))


__all__ = ["active_indices_torch", "all_ublocks_torch", "gather_ublocks_torch", "grid_keys", "iter_ublocks_torch", "lookup_keys", "PadAverageTorch"]
