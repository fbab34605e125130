"""UBlocks: the sparse set of active 8³ blocks, padded by α = 2 to 12³ (seed A.2), and their
reassembly with Pad-Average (seed A.5).

The network sees only ``UBlocks``; the geometry on both sides of it is a :class:`SparseField`.
Large shapes are handled in chunks of blocks so that neither the padded tensor [L, 12³] nor the
reassembly ever needs more than one chunk at a time on top of the sparse field itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Protocol

import numba as nb
import numpy as np

from .grid import (
    BLOCK_SIZE,
    CHUNK_BLOCKS,
    FAR,
    NEIGHBOR_OFFSETS,
    PAD,
    PADDED_SIZE,
    SparseField,
    block_keys,
    check_resolution,
    neighbor_table,
)


@dataclass
class UBlocks:
    """Padded active blocks of one shape: ``blocks`` float32 [L, 12, 12, 12] (indexed [x, y, z],
    voxel (8c - 2 + i) at index i) and block coordinates [L, 3] on the (N/8)³ grid, sorted by
    linear key — numpy (int32 coordinates) or torch tensors on one device (int64), like
    :class:`~model.grid.SparseField`."""

    resolution: int
    blocks: Any
    coords: Any

    @property
    def num_blocks(self) -> int:
        return int(self.coords.shape[0])


def active_indices(field: SparseField) -> np.ndarray:
    """Indices of the blocks with at least one inner voxel below the maximum (truncated) value."""
    if field.num_blocks == 0:
        return np.empty(0, dtype=np.int64)
    return np.flatnonzero(field.values.reshape(field.num_blocks, -1).min(axis=1) < FAR)


# Per padded index p (0..11) along one axis: which neighbour (0: previous, 1: the block itself,
# 2: next) holds that voxel, and at which local index 0..7 it sits there.
_PAD_NEIGHBOR = np.array([0] * PAD + [1] * BLOCK_SIZE + [2] * PAD, dtype=np.int64)
_PAD_LOCAL = np.concatenate([np.arange(BLOCK_SIZE - PAD, BLOCK_SIZE), np.arange(BLOCK_SIZE), np.arange(PAD)]).astype(np.int64)


@nb.njit(parallel=True, cache=True)
def _gather_padded(values, neighbors, pad_neighbor, pad_local, far, out):
    for b in nb.prange(neighbors.shape[0]):
        for pi in range(PADDED_SIZE):
            oi, li = pad_neighbor[pi], pad_local[pi]
            for pj in range(PADDED_SIZE):
                oj, lj = pad_neighbor[pj], pad_local[pj]
                for pk in range(PADDED_SIZE):
                    src = neighbors[b, oi * 9 + oj * 3 + pad_neighbor[pk]]
                    out[b, pi, pj, pk] = far if src < 0 else values[src, li, lj, pad_local[pk]]


@nb.njit(parallel=True, cache=True)
def _scatter_padded(blocks, targets, order, class_start, pad_neighbor, pad_local, sums, counts):
    """Add each padded block into the inner voxels of the (up to 27) blocks its 12³ region covers.

    Blocks are visited one parity class (x, y, z mod 2) at a time: two blocks of the same class are
    at least two blocks apart along some axis, so their padded regions never share a voxel and the
    blocks of a class can be added in parallel without races.
    """
    for cls in range(8):
        for q in nb.prange(class_start[cls], class_start[cls + 1]):
            b = order[q]
            for pi in range(PADDED_SIZE):
                oi, li = pad_neighbor[pi], pad_local[pi]
                for pj in range(PADDED_SIZE):
                    oj, lj = pad_neighbor[pj], pad_local[pj]
                    for pk in range(PADDED_SIZE):
                        t = targets[b, oi * 9 + oj * 3 + pad_neighbor[pk]]
                        if t >= 0:
                            sums[t, li, lj, pad_local[pk]] += blocks[b, pi, pj, pk]
                            counts[t, li, lj, pad_local[pk]] += 1


def iter_ublocks(field: SparseField, chunk_size: int = CHUNK_BLOCKS) -> Iterator[UBlocks]:
    """Active UBlocks of a field, ``chunk_size`` blocks at a time, each padded with the true field
    values of its neighbourhood (FAR where the neighbour block holds no surface)."""
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    active = active_indices(field)
    coords_all = field.coords
    for start in range(0, active.shape[0], chunk_size):
        idx = active[start : start + chunk_size]
        coords = coords_all[idx]
        neighbors = neighbor_table(field.keys, coords, field.grid, NEIGHBOR_OFFSETS)
        out = np.empty((idx.shape[0], PADDED_SIZE, PADDED_SIZE, PADDED_SIZE), dtype=np.float32)
        _gather_padded(field.values, neighbors, _PAD_NEIGHBOR, _PAD_LOCAL, np.float32(FAR), out)
        yield UBlocks(resolution=field.resolution, blocks=out, coords=coords)


def extract_ublocks(field: SparseField) -> UBlocks:
    """All active UBlocks at once (for shapes whose [L, 12³] tensor fits in memory)."""
    chunks = list(iter_ublocks(field, chunk_size=max(field.num_blocks, 1)))
    if not chunks:
        return UBlocks(field.resolution, np.empty((0, PADDED_SIZE, PADDED_SIZE, PADDED_SIZE), np.float32), np.empty((0, 3), np.int32))
    return chunks[0]


def iter_chunks(ublocks: UBlocks, chunk_blocks: int) -> Iterator[UBlocks]:
    """Views of ``chunk_blocks`` blocks at a time (for Pad-Average)."""
    for start in range(0, ublocks.num_blocks, chunk_blocks):
        stop = start + chunk_blocks
        yield UBlocks(ublocks.resolution, ublocks.blocks[start:stop], ublocks.coords[start:stop])


class PadAverage:
    """Reassembles padded 12³ blocks into a sparse field, averaging every voxel over all the blocks
    whose padded region covers it (seed A.5, "Pad-Average").

    The covered region is the active blocks plus their 26-neighbours: every voxel a padded block
    can write to, so every marching-cubes cell that can cross ε has its corner block stored.
    Blocks are added chunk by chunk; only the sums and counts of the covered region are kept.
    """

    def __init__(self, resolution: int, coords: np.ndarray) -> None:
        self.resolution = check_resolution(resolution)
        self.grid = self.resolution // BLOCK_SIZE
        coords64 = np.asarray(coords, dtype=np.int64).reshape(-1, 3)
        around = (coords64[:, None, :] + NEIGHBOR_OFFSETS[None, :, :]).reshape(-1, 3)
        inside = np.all((around >= 0) & (around < self.grid), axis=1)
        self.keys = np.unique(block_keys(around[inside], self.grid))
        self._sums = np.zeros((self.keys.shape[0], BLOCK_SIZE, BLOCK_SIZE, BLOCK_SIZE), dtype=np.float32)
        self._counts = np.zeros(self._sums.shape, dtype=np.uint8)

    def add(self, blocks: np.ndarray, coords: np.ndarray) -> None:
        """Accumulate padded blocks [l, 12, 12, 12] (any float dtype) placed at ``coords`` [l, 3]."""
        blocks = np.asarray(blocks)
        if blocks.ndim == 5 and blocks.shape[1] == 1:
            blocks = blocks[:, 0]
        if blocks.shape[1:] != (PADDED_SIZE,) * 3 or blocks.shape[0] != len(coords):
            raise ValueError(f"expected blocks [{len(coords)}, 12, 12, 12], got {list(blocks.shape)}")
        coords = np.asarray(coords)
        targets = neighbor_table(self.keys, coords, self.grid, NEIGHBOR_OFFSETS)
        parity = (coords[:, 0] % 2) + 2 * (coords[:, 1] % 2) + 4 * (coords[:, 2] % 2)
        order = np.argsort(parity, kind="stable")
        class_start = np.searchsorted(parity[order], np.arange(9)).astype(np.int64)
        _scatter_padded(np.ascontiguousarray(blocks, dtype=np.float32), targets, order, class_start,
                        _PAD_NEIGHBOR, _PAD_LOCAL, self._sums, self._counts)

    def finish(self) -> SparseField:
        """The averaged field; voxels no block covered are FAR. Frees the accumulators."""
        sums, counts = self._sums, self._counts
        covered = counts > 0
        np.divide(sums, counts, out=sums, where=covered)
        sums[~covered] = FAR
        self._sums = self._counts = None  # type: ignore[assignment]
        return SparseField(resolution=self.resolution, keys=self.keys, values=sums)


class Assembler(Protocol):
    """What Pad-Average accumulates into: :class:`PadAverage` (numpy) or the torch engine's twin."""

    def add(self, blocks: Any, coords: Any) -> None: ...

    def finish(self) -> SparseField: ...


def pad_average(chunks: Iterable[UBlocks], resolution: int, coords: Any,
                progress: Callable[[float], None] | None = None,
                assembler: Callable[[int, Any], Assembler] = PadAverage) -> SparseField:
    """Pad-Average a stream of (decoded or exact) UBlock chunks covering the blocks ``coords``, into
    the engine's ``assembler`` (numpy :class:`PadAverage` by default)."""
    acc = assembler(resolution, coords)
    total = max(len(coords), 1)
    done = 0
    for chunk in chunks:
        acc.add(chunk.blocks, chunk.coords)
        done += chunk.num_blocks
        if progress:
            progress(done / total)
    return acc.finish()


def validate_block_coords(coords: np.ndarray, grid: int) -> None:
    """Raise if block coordinates fall off the (N/8)³ grid or repeat (a corrupt latent set)."""
    c = np.asarray(coords)
    if c.ndim != 2 or c.shape[1] != 3:
        raise ValueError(f"block coordinates must have shape [L, 3], got {list(c.shape)}")
    if c.size and (c.min() < 0 or c.max() >= grid):
        raise ValueError(f"block coordinates must lie in [0, {grid}) for this resolution")
    keys = block_keys(c, grid)
    if np.unique(keys).shape[0] != keys.shape[0]:
        raise ValueError("block coordinates contain duplicates")


__all__ = ["Assembler", "UBlocks", "PadAverage", "active_indices", "iter_ublocks", "extract_ublocks", "iter_chunks", "pad_average", "validate_block_coords"]
