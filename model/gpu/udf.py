"""Narrow-band UDF on a torch device: the twin of :func:`model.udf.compute_udf`.

Why triangle-parallel instead of the CPU path's block loop: a GPU wants flat batches of identical
work, not a per-block walk over a short triangle list with data-dependent early exits. So the
(triangle, block) pairs are enumerated as flat tensors (an octree refinement of each triangle's
grown bounding box, then one distance test per block), and every surviving pair measures all 512
voxel centres of its block; the per-voxel minimum is a scatter-min into the block values. Both
stages run in fixed-size chunks, so memory grows with the chunk sizes and the number of stored
blocks, never with N³.

Why per-pair frames: the triangle is re-expressed, in float64 once per pair, relative to its block's
origin: per edge, an orthonormal frame with the offsets of the edge's line and plane and the
positions of its ends along the line. The 512-voxel stage then only combines small numbers (local
voxel coordinates 0..7 and offsets that are small whenever they decide the result), so float32
stays accurate to ~1e-6 voxel even at N = 2048 with triangles spanning the grid, where absolute
float32 voxel coordinates would lose about 1e-4 voxel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..grid import BLOCK_SIZE, TRUNCATION_VOXELS, SparseField, check_resolution, key_coords
from .blocks import grid_keys

VOXELS_PER_BLOCK = BLOCK_SIZE**3


@dataclass
class _Triangles:
    """Per-triangle geometry in float64 voxel coordinates (voxel i of an axis sits at i)."""

    corners: torch.Tensor  # [F, 3, 3]
    axes: torch.Tensor  # [F, 3 edges, 3, 3] orthonormal frame per edge: direction, then two normals
    edge_len: torch.Tensor  # [F, 3]
    degenerate: torch.Tensor  # bool [F]
    block_lo: torch.Tensor  # int64 [F, 3] first block of the bounding box grown by τ
    block_hi: torch.Tensor  # int64 [F, 3] last block (lo > hi: the triangle is off the grid)


@dataclass
class _PairFrames:
    """One triangle per pair, seen from its block's origin; the pair dimension comes first.

    ``matrix`` [P, 9, 4] maps a homogeneous local point to, per edge e, its coordinate along the
    edge line (rows 0-2, no offset, so it stays small), its signed distance from the line within
    the triangle's plane, positive inside (rows 3-5), and its height over the plane (rows 6-8).
    ``s_lo``/``s_hi`` [P, 3] are the edge's ends along its line; ``flat`` [P] marks degenerate
    triangles, which have no interior and whose two normals are an arbitrary completion.
    """

    matrix: torch.Tensor
    s_lo: torch.Tensor
    s_hi: torch.Tensor
    flat: torch.Tensor

    def to(self, dtype: torch.dtype) -> "_PairFrames":
        return _PairFrames(self.matrix.to(dtype), self.s_lo.to(dtype), self.s_hi.to(dtype), self.flat)


def _as_tensor(array: object, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Upload numpy (any integer or float type torch may lack) or move a tensor, as ``dtype``."""
    if isinstance(array, torch.Tensor):
        return array.to(device=device, dtype=dtype)
    host = np.asarray(array, dtype=np.float64 if dtype.is_floating_point else np.int64)
    return torch.as_tensor(host, device=device).to(dtype)


def _unit(vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit vectors along the last axis (zero where the input is zero) and the lengths."""
    length = torch.linalg.vector_norm(vectors, dim=-1)
    return vectors / length.clamp_min(1e-300)[..., None], length


def _any_frame(direction: torch.Tensor) -> torch.Tensor:
    """An orthonormal frame [..., 3, 3] starting with each unit direction [..., 3] (a zero direction,
    an edge of no length, becomes the x axis). Only degenerate triangles use these: they have no
    plane of their own."""
    x_axis = torch.zeros_like(direction)
    x_axis[..., 0] = 1.0
    is_zero = (direction == 0).all(dim=-1, keepdim=True)
    direction = torch.where(is_zero, x_axis, direction)
    helper = torch.zeros_like(direction).scatter_(-1, direction.abs().argmin(dim=-1, keepdim=True), 1.0)
    first, _ = _unit(torch.linalg.cross(direction, helper, dim=-1))
    return torch.stack([direction, first, torch.linalg.cross(direction, first, dim=-1)], dim=-2)


def _edge_frames(corners: torch.Tensor, degenerate: torch.Tensor, normal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per edge e (corner e -> e+1): [F, 3, 3, 3] frames (direction, inward in-plane normal, plane
    normal) and the edge lengths [F, 3]."""
    direction, length = _unit(corners.roll(-1, dims=1) - corners)
    plane = normal[:, None, :].expand_as(direction)
    inward = torch.linalg.cross(plane, direction, dim=-1)  # normal × direction points into the triangle
    own = torch.stack([direction, inward, plane], dim=2)
    return torch.where(degenerate[:, None, None, None], _any_frame(direction), own), length


def _prepare_triangles(unit_vertices: object, faces: object, resolution: int, device: torch.device) -> _Triangles:
    """Triangle geometry in voxel units, with the CPU path's degenerate-triangle rule."""
    verts = (_as_tensor(unit_vertices, torch.float64, device) + 0.5) * resolution - 0.5
    corners = verts[_as_tensor(faces, torch.int64, device)].reshape(-1, 3, 3)
    normal, area2 = _unit(torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0], dim=-1))
    scale = corners.abs().amax(dim=(1, 2)).clamp_min(1.0)
    degenerate = area2 <= 1e-12 * scale * scale
    axes, edge_len = _edge_frames(corners, degenerate, normal)
    grid = resolution // BLOCK_SIZE
    block_lo = torch.floor((corners.amin(dim=1) - TRUNCATION_VOXELS) / BLOCK_SIZE).clamp_min(0).long()
    block_hi = torch.floor((corners.amax(dim=1) + TRUNCATION_VOXELS) / BLOCK_SIZE).clamp_max(grid - 1).long()
    return _Triangles(corners, axes, edge_len, degenerate, block_lo, block_hi)


def _pair_frames(tris: _Triangles, tri: torch.Tensor, origin: torch.Tensor) -> _PairFrames:
    """float64 frames of triangles ``tri`` [P] relative to block origins [P, 3] (voxel units)."""
    rel = tris.corners[tri] - origin[:, None, :]  # [P, 3 corners, 3]; corner e lies on edge e
    axes = tris.axes[tri]  # [P, 3 edges, 3 roles, 3]
    along_lo = (axes[:, :, 0] * rel).sum(dim=-1)
    offset = -(axes * rel[:, :, None, :]).sum(dim=-1)  # [P, 3 edges, 3 roles]
    offset[:, :, 0] = 0.0
    rows = torch.cat([axes, offset[..., None]], dim=-1)  # [P, 3 edges, 3 roles, 4]
    return _PairFrames(
        matrix=rows.transpose(1, 2).reshape(-1, 9, 4),
        s_lo=along_lo,
        s_hi=along_lo + tris.edge_len[tri],
        flat=tris.degenerate[tri],
    )


def _dist2(frames: _PairFrames, points: torch.Tensor) -> torch.Tensor:
    """Squared distance [P, Q] from local homogeneous points [Q, 4] to each pair's triangle.

    Edge/face projection in each edge's own orthonormal frame: the squared distance to edge e is
    (overshoot past its ends)² + (in-plane distance from its line)² + (height over the plane)²,
    three small, cancellation-free terms. Inside the triangle's prism (all in-plane distances ≥ 0)
    the distance is the height alone; both branches agree on the prism's boundary, so rounding in
    the inside test cannot create a jump.
    """
    proj = torch.matmul(frames.matrix, points.T)  # [P, 9, Q]
    along, side, height = proj[:, 0:3], proj[:, 3:6], proj[:, 6:9]
    edge2 = along - torch.clamp(along, min=frames.s_lo[..., None], max=frames.s_hi[..., None])
    edge2.mul_(edge2).addcmul_(side, side).addcmul_(height, height)
    inside = (side >= 0).all(dim=1) & ~frames.flat[:, None]
    face = height[:, 0]
    return torch.where(inside, face * face, edge2.amin(dim=1))


@dataclass
class _Boxes:
    """Boxes of blocks (inclusive block ranges ``lo``..``hi`` [B, 3]), each paired with one triangle."""

    tri: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor

    def __len__(self) -> int:
        return int(self.tri.numel())

    def select(self, which: torch.Tensor | slice) -> "_Boxes":
        return _Boxes(self.tri[which], self.lo[which], self.hi[which])

    def volume(self) -> torch.Tensor:
        return (self.hi - self.lo + 1).prod(dim=1)


def _near(tris: _Triangles, boxes: _Boxes) -> torch.Tensor:
    """Whether a box may contain a block that the CPU path keeps for its triangle (block centre
    within τ plus the block's half-diagonal). For a single block this is exactly that rule; for a
    bigger box the reach grows by the distance a block centre can lie from the box centre, so by
    the triangle inequality no such block is ever dropped with its box."""
    span = ((boxes.hi - boxes.lo + 1) * BLOCK_SIZE - 1).to(torch.float64)  # voxel-centre extent
    centre = boxes.lo.to(torch.float64) * BLOCK_SIZE + span / 2
    slack = torch.linalg.vector_norm((span - (BLOCK_SIZE - 1)) / 2, dim=1)
    reach = TRUNCATION_VOXELS + (BLOCK_SIZE - 1) / 2 * math.sqrt(3.0) + slack
    here = torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64, device=centre.device)
    return _dist2(_pair_frames(tris, boxes.tri, centre), here)[:, 0] <= reach * reach


def _split(boxes: _Boxes) -> _Boxes:
    """The (up to) eight octants of every box, halving each axis of more than one block."""
    half = (boxes.hi - boxes.lo + 2) // 2  # blocks in the lower half
    parts = []
    for octant in range(8):
        upper = torch.tensor([(octant >> 2) & 1, (octant >> 1) & 1, octant & 1], dtype=torch.bool, device=half.device)
        lo = torch.where(upper, boxes.lo + half, boxes.lo)
        hi = torch.where(upper, boxes.hi, boxes.lo + half - 1)
        parts.append(_Boxes(boxes.tri, lo, hi))
    children = _Boxes(*(torch.cat([getattr(p, name) for p in parts]) for name in ("tri", "lo", "hi")))
    return children.select((children.hi >= children.lo).all(dim=1))


def _blocks_of(boxes: _Boxes) -> _Boxes:
    """Every block of every box, as single-block boxes (``repeat_interleave`` over the box sizes)."""
    dims = boxes.hi - boxes.lo + 1
    count = dims.prod(dim=1)
    tri = torch.repeat_interleave(boxes.tri, count)
    first = torch.repeat_interleave(count.cumsum(dim=0) - count, count)
    local = torch.arange(tri.numel(), device=tri.device) - first
    d = torch.repeat_interleave(dims, count, dim=0)
    rest = local // d[:, 2]
    offset = torch.stack([rest // d[:, 1], rest % d[:, 1], local % d[:, 2]], dim=1)
    coords = torch.repeat_interleave(boxes.lo, count, dim=0) + offset
    return _Boxes(tri, coords, coords)


def _cull_pairs(tris: _Triangles, grid: int, candidate_chunk: int, split_volume: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """The (triangle, block key) pairs the CPU path bins: blocks of the triangle's box grown by τ
    whose centre is within τ plus the block's half-diagonal of the triangle.

    Why boxes are refined as an octree first: a long triangle at N = 2048 can have a grown bounding
    box of millions of blocks while touching only a few thousand. Boxes of more than
    ``split_volume`` blocks are split into octants and the octants that cannot hold a kept block
    dropped, so the work follows the triangle, not its box. Boxes are processed in batches of at
    most ``candidate_chunk`` blocks, which bounds the memory of this stage.
    """
    batch = max(1, candidate_chunk // split_volume)
    valid = (tris.block_hi >= tris.block_lo).all(dim=1)
    everything = torch.arange(valid.numel(), device=valid.device)
    pending = [_Boxes(everything, tris.block_lo, tris.block_hi).select(valid)]
    kept: list[_Boxes] = []
    while pending:
        boxes = pending.pop()
        if len(boxes) > batch:
            pending.extend(boxes.select(slice(s, s + batch)) for s in range(0, len(boxes), batch))
            continue
        small = boxes.volume() <= split_volume
        blocks = _blocks_of(boxes.select(small))
        kept.append(blocks.select(_near(tris, blocks)))
        children = _split(boxes.select(~small))
        if len(children):
            pending.append(children.select(_near(tris, children)))
    tri = torch.cat([b.tri for b in kept]) if kept else everything[:0]
    coords = torch.cat([b.lo for b in kept]) if kept else tris.block_lo[:0]
    return tri, grid_keys(coords, grid)


def _local_voxels(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The 512 voxel centres of a block relative to its origin, homogeneous [512, 4], x-major like
    the block values."""
    axis = torch.arange(BLOCK_SIZE, dtype=dtype, device=device)
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
    return torch.cat([grid, torch.ones_like(grid[:, :1])], dim=1)


def compute_udf_torch(
    unit_vertices: object,
    faces: object,
    resolution: int,
    device: torch.device | str,
    pair_chunk: int = 2048,
    *,
    candidate_chunk: int = 65536,
    dtype: torch.dtype = torch.float32,
) -> SparseField:
    """The normalised truncated UDF of a mesh in the unit cube, on every 8³ block that can hold a
    voxel closer than τ = 4/N (blocks not returned are entirely FAR), computed on ``device``.

    ``pair_chunk`` bounds the voxel stage to about ``pair_chunk × 512 × 100`` bytes at a time and
    ``candidate_chunk`` the culling stage to about ``candidate_chunk × 1 KB``; ``dtype`` is the
    voxel-stage precision (float64 is exact to ~1e-12 voxel but slow on most GPUs).

    """
    n = check_resolution(resolution)
    if pair_chunk <= 0 or candidate_chunk <= 0:
        raise ValueError(f"chunk sizes must be positive, got {pair_chunk} and {candidate_chunk}")
    device = torch.device(device)
    grid = n // BLOCK_SIZE
    tris = _prepare_triangles(unit_vertices, faces, n, device)
    pair_tri, pair_key = _cull_pairs(tris, grid, candidate_chunk)
    keys, pair_block = torch.unique(pair_key, return_inverse=True)

    tau2 = TRUNCATION_VOXELS * TRUNCATION_VOXELS
    best = torch.full((keys.numel(), VOXELS_PER_BLOCK), tau2, dtype=dtype, device=device)
    voxels = _local_voxels(dtype, device)
    for start in range(0, pair_tri.numel(), pair_chunk):
        tri = pair_tri[start : start + pair_chunk]
        block = pair_block[start : start + pair_chunk]
        origin = (key_coords(keys[block], grid) * BLOCK_SIZE).to(torch.float64)
        frames = _pair_frames(tris, tri, origin).to(dtype)
        dist2 = _dist2(frames, voxels)
        best.scatter_reduce_(0, block[:, None].expand_as(dist2), dist2, "amin")
    values = best.clamp_max_(tau2).sqrt_().div_(TRUNCATION_VOXELS).to(torch.float32)
    return SparseField(resolution=n, keys=keys, values=values.reshape(-1, BLOCK_SIZE, BLOCK_SIZE, BLOCK_SIZE))


__all__ = ["compute_udf_torch"]
