"""Exact closest points on the input triangles, on a torch device, without a BVH.

Why not a BVH on the device: the direct-mode deflate (:func:`model.cleanup.deflate`) needs the exact
closest input point of every ε-surface vertex, and a branch-and-bound tree walk is the kind of
data-dependent, divergent loop a GPU runs badly (and building the tree is sequential). But the UDF
stage has already answered the hard part of the question: for every 8³ block it listed the
triangles that can come within τ of its voxels (:func:`model.gpu.udf.compute_udf_torch`). A point
near the surface only has to measure the short list of the block it falls in — flat (point,
triangle) pairs of identical work, which is what a GPU wants — and keep the nearest.

Why the result is exact (the bound): the UDF keeps triangle t for block b when the distance from
the block's centre c = 8b + 3.5 (voxel units, per axis) to t is at most R = τ + 3.5·√3 (τ plus the
half-diagonal of the block's voxel centres; :func:`model.udf._bin_triangles`, and the octree
culling of the torch UDF never drops such a pair). A point p is looked up in the block whose
centre is nearest, per axis (block = ⌊p + ½⌋ >> 3), so |p − c| ≤ 4·√3. If p's true nearest triangle
t* is at distance d, then dist(c, t*) ≤ |c − p| + d ≤ 4·√3 + d, which is ≤ R whenever
d ≤ τ − √3/2 ≈ 3.13 voxels (:data:`EXACT_RADIUS`). So every point within 3.13 voxels of the input
finds its true nearest triangle in its block's list. (Looking the point up in the block of ⌊p⌋, whose
cell [8b, 8b + 8)³ is off-centre by half a voxel, would only guarantee τ − √3 ≈ 2.27 voxels.) The
deflate asks about ε-surface vertices (about ε = 1 voxel from the input; the clean-up only trusts
those within 2ε) and the field's deflated estimates (within a fraction of a voxel), well inside the
bound. Farther points get the nearest of their block's candidates, an upper bound, and points
whose block has no candidates at all get ``dist = inf`` and themselves as ``closest``.

Zero-area triangles are left out of the lists, as :func:`model.pipeline.input_surface` leaves them
out of the CPU's :class:`model.bvh.PrimitiveIndex`: they carry no surface. Near-degenerate ones (the
UDF's rule: doubled area ≤ 1e-12·scale²) are measured as their longest edge, where Ericson's
barycentric walk would divide by a vanishing area.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..grid import BLOCK_SIZE, TRUNCATION_VOXELS
from .field import coords_to_keys, lookup_keys

EXACT_RADIUS = TRUNCATION_VOXELS + (BLOCK_SIZE - 1) / 2 * math.sqrt(3.0) - BLOCK_SIZE / 2 * math.sqrt(3.0)
"""Points at most this far (voxels) from the input get their exact closest point: τ − √3/2."""

CLOSEST_CHUNK = 1 << 20
"""(point, triangle) pairs measured per pass. The cheap first pass (:func:`_cull`) keeps about 200
bytes of temporaries a pair and the exact walk (~450 bytes a pair) only sees the few pairs it leaves,
so a pass needs some 250 MB however many points and candidates there are, while being large enough
to keep a GPU busy."""


@dataclass
class BlockCandidates:
    """Per 8³ block, the input triangles that can come within τ of its voxels (the UDF's pairs).

    ``keys``: sorted int64 block keys [K] (x-major, as :class:`~model.gpu.field.TorchField`) of the
    blocks that have candidates; block ``keys[i]`` owns ``triangles[offsets[i]:offsets[i + 1]]``
    (``offsets`` int64 [K + 1], ``triangles`` int64 [P], ids into ``corners``); ``corners``: float64
    [F, 3, 3] triangle corners in voxel coordinates. All on one device. See the module docstring
    for why a point within :data:`EXACT_RADIUS` of the input finds its nearest triangle in the list
    of its block.
    """

    resolution: int
    keys: torch.Tensor
    offsets: torch.Tensor
    triangles: torch.Tensor
    corners: torch.Tensor

    @property
    def grid(self) -> int:
        return self.resolution // BLOCK_SIZE

    @property
    def device(self) -> torch.device:
        return self.keys.device

    @property
    def num_blocks(self) -> int:
        return int(self.keys.shape[0])

    def to(self, device: torch.device | str) -> "BlockCandidates":
        return BlockCandidates(self.resolution, self.keys.to(device), self.offsets.to(device),
                               self.triangles.to(device), self.corners.to(device))


def _zero_area(corners: torch.Tensor) -> torch.Tensor:
    """Triangles whose cross product vanishes: :func:`model.mesh.face_normals_and_areas` gives them
    area 0, and :func:`model.pipeline.input_surface` leaves them out."""
    cross = torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0], dim=-1)
    return (cross == 0).all(dim=1)


def candidates_from_pairs(resolution: int, keys: torch.Tensor, pair_block: torch.Tensor, pair_tri: torch.Tensor,
                          corners: torch.Tensor) -> BlockCandidates:
    """Group the UDF's (triangle, block) pairs by block. ``keys`` [M]: the sorted block keys,
    ``pair_block`` [P]: each pair's index into ``keys``, ``pair_tri`` [P]: its triangle,
    ``corners`` [F, 3, 3]: float64 voxel coordinates. Pairs of zero-area triangles are dropped, and
    blocks left with no pair with them."""
    keep = ~_zero_area(corners)[pair_tri]
    pair_block, pair_tri = pair_block[keep], pair_tri[keep]
    counts = torch.bincount(pair_block, minlength=keys.numel())
    used = counts > 0
    order = torch.sort(pair_block, stable=True).indices
    offsets = torch.cat([counts.new_zeros(1), torch.cumsum(counts[used], dim=0)])
    return BlockCandidates(resolution=resolution, keys=keys[used], offsets=offsets, triangles=pair_tri[order],
                           corners=corners.to(torch.float64))


def _measured_corners(corners: torch.Tensor) -> torch.Tensor:
    """The corners the closest-point walk uses: near-degenerate triangles (the UDF's rule) become
    (p, q, q) with pq their longest edge — the segment they collapse to, on which Ericson's walk
    reduces to the exact segment projection (its vertex and first-edge tests cover every point, so
    no division by a vanishing area is taken)."""
    edges = corners.roll(-1, dims=1) - corners  # edge e: corner e -> e + 1
    cross = torch.linalg.cross(edges[:, 0], -edges[:, 2], dim=-1)
    scale = corners.abs().amax(dim=(1, 2)).clamp_min(1.0)
    flat = torch.linalg.vector_norm(cross, dim=-1) <= 1e-12 * scale * scale
    longest = (edges * edges).sum(dim=-1).argmax(dim=1)
    rows = torch.arange(corners.shape[0], device=corners.device)
    start, end = corners[rows, longest], corners[rows, (longest + 1) % 3]
    segment = torch.stack([start, end, end], dim=1)
    return torch.where(flat[:, None, None], segment, corners)


def _dot(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return u[:, 0] * v[:, 0] + u[:, 1] * v[:, 1] + u[:, 2] * v[:, 2]


def closest_on_triangles(p: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Closest point to p on triangle abc, row by row ([M, 3] each): Ericson's Voronoi-region walk
    (Real-Time Collision Detection, 5.1.5), as in :func:`model.bvh._closest_on_triangle`.

    Every region's barycentric weights (v, w) are computed for all rows and the walk's precedence is
    kept by applying the regions from last to first with ``torch.where``, so that the first region
    that applies wins; the point is a + v·ab + w·ac. A zero-area triangle with no earlier region
    applying falls back to its first corner, as in the BVH.
    """
    ab, ac = b - a, c - a
    ap, bp, cp = p - a, p - b, p - c
    d1, d2, d3, d4, d5, d6 = _dot(ab, ap), _dot(ac, ap), _dot(ab, bp), _dot(ac, bp), _dot(ab, cp), _dot(ac, cp)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    denom = va + vb + vc
    safe = torch.where(denom == 0, torch.ones_like(denom), denom)
    zero, one = torch.zeros_like(d1), torch.ones_like(d1)
    v = torch.where(denom == 0, zero, vb / safe)
    w = torch.where(denom == 0, zero, vc / safe)
    s = (d4 - d3) / ((d4 - d3) + (d5 - d6))  # along bc
    regions = [  # Ericson's order, applied from the last to the first
        ((va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0), 1.0 - s, s),
        ((vb <= 0) & (d2 >= 0) & (d6 <= 0), zero, d2 / (d2 - d6)),
        ((d6 >= 0) & (d5 <= d6), zero, one),
        ((vc <= 0) & (d1 >= 0) & (d3 <= 0), d1 / (d1 - d3), zero),
        ((d3 >= 0) & (d4 <= d3), one, zero),
        ((d1 <= 0) & (d2 <= 0), zero, zero),
    ]
    for applies, region_v, region_w in regions:  # six passes over the rows
        v = torch.where(applies, region_v, v)
        w = torch.where(applies, region_w, w)
    return a + v[:, None] * ab + w[:, None] * ac


def _point_blocks(points: torch.Tensor, candidates: BlockCandidates) -> torch.Tensor:
    """Index into ``candidates.keys`` of the block whose centre is nearest each point (clamped to the
    grid), -1 where that block has no candidates."""
    coords = (torch.floor(points + 0.5).long() >> 3).clamp_(0, candidates.grid - 1)
    return lookup_keys(candidates.keys, coords_to_keys(coords, candidates.grid))


def _bounds(corners: torch.Tensor) -> torch.Tensor:
    """Per triangle, as rows of a [8, F] tensor: centroid (3), radius of the sphere around it that
    holds the triangle, unit normal (3, zero for the segments of :func:`_measured_corners`) and the
    plane's offset n·a — what the cheap first pass of :func:`_measure_chunk` needs. Stored as rows
    so that the per-pair gathers and arithmetic run over contiguous memory (column views of a
    [F, 8] tensor made that pass several times slower on the CPU)."""
    centroid = corners.mean(dim=1)
    radius = torch.linalg.vector_norm(corners - centroid[:, None], dim=-1).amax(dim=1)
    cross = torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0], dim=-1)
    length = torch.linalg.vector_norm(cross, dim=-1, keepdim=True)
    normal = torch.where(length > 0, cross / length.clamp_min(1e-300), torch.zeros_like(cross))
    offset = (normal * corners[:, 0]).sum(dim=1)
    return torch.cat([centroid, radius[:, None], normal, offset[:, None]], dim=1).T.contiguous()


BOUND_SLACK = 1e-6
"""Voxels added to the first pass's per-point upper bound before culling: far above the rounding of
the bounds (~1e-12 voxel at N = 2048), so the nearest triangle is never culled."""


def _cull(p: list[torch.Tensor], bounds: list[torch.Tensor], local: torch.Tensor, owners: int) -> torch.Tensor:
    """Indices of the pairs that may hold their point's nearest triangle; ``p`` (3 rows [M]) and
    ``bounds`` (8 rows [M], :func:`_bounds`) per pair.

    Why: a block's list holds every triangle within τ + 3.5·√3 ≈ 10 voxels of its centre, so on a
    fine mesh most candidates are far from any one point (fandisk at N = 128: 6 % of the pairs
    survive), and the exact walk (~60 operations a pair) would spend nearly all its time on them.
    The distance to a triangle's centroid is an upper bound of the distance to the triangle; the
    distance to its bounding sphere and to its plane are lower bounds. A pair whose lower bound
    exceeds its point's smallest upper bound cannot be the nearest, and is dropped after a dozen
    operations.
    """
    dx, dy, dz = p[0] - bounds[0], p[1] - bounds[1], p[2] - bounds[2]
    upper = (dx * dx).addcmul_(dy, dy).addcmul_(dz, dz).sqrt_()
    smallest = torch.full((owners,), math.inf, dtype=upper.dtype, device=upper.device)
    smallest.scatter_reduce_(0, local, upper, "amin")
    plane = (p[0] * bounds[4]).addcmul_(p[1], bounds[5]).addcmul_(p[2], bounds[6]).sub_(bounds[7]).abs_()
    lower = torch.maximum(upper.sub_(bounds[3]), plane)
    return torch.nonzero(lower <= torch.index_select(smallest, 0, local).add_(BOUND_SLACK)).squeeze(1)


def _gather_rows(rows: torch.Tensor, index: torch.Tensor) -> list[torch.Tensor]:
    """``rows[:, index]`` as one contiguous tensor per row: gathering along the second axis of a 2-D
    tensor is far slower on the CPU than a 1-D gather per row (a loop over the 3 or 8 rows)."""
    return [torch.index_select(row, 0, index) for row in rows]


def _measure_chunk(points: torch.Tensor, corners: torch.Tensor, bounds: torch.Tensor, triangles: torch.Tensor,
                   first: torch.Tensor, end: torch.Tensor, count: torch.Tensor, span: tuple[int, int, int, int]
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs ``start..stop`` of the flat pair list (points ``p0..p1`` own them; ``end`` is the
    inclusive cumulative pair count per point, ``first`` each point's first list entry): the
    squared distance to each owned point's nearest candidate in the chunk (inf if none) and that
    closest point (ties: the candidate listed first). ``points`` [3, V] and ``bounds`` [8, F] are
    rows (see :func:`_bounds`)."""
    start, stop, p0, p1 = span
    owners = slice(p0, p1 + 1)
    begin = end[owners] - count[owners]
    here = end[owners].clamp(max=stop) - begin.clamp(min=start)  # each owner's pairs inside the chunk
    local = torch.repeat_interleave(torch.arange(p1 - p0 + 1, device=points.device), here.clamp_(min=0),
                                    output_size=stop - start)
    pair = torch.arange(start, stop, device=points.device)
    # index_select rather than tensor indexing: the same gathers, several times faster on the CPU
    entry = torch.index_select(first[owners] - begin, 0, local).add_(pair)
    tri = torch.index_select(triangles, 0, entry)
    p = _gather_rows(points[:, owners], local)
    near = _cull(p, _gather_rows(bounds, tri), local, p1 - p0 + 1)  # ascending: "first listed" stays first
    local, tri, p = local[near], tri[near], torch.stack([torch.index_select(row, 0, near) for row in p], dim=1)
    abc = torch.index_select(corners, 0, tri)
    closest = closest_on_triangles(p, abc[:, 0], abc[:, 1], abc[:, 2])
    diff = p - closest
    d2 = _dot(diff, diff)
    best = torch.full((p1 - p0 + 1,), math.inf, dtype=d2.dtype, device=d2.device)
    best.scatter_reduce_(0, local, d2, "amin")
    if d2.numel() == 0:
        return best, points[:, owners].T
    rank = torch.arange(d2.numel(), device=d2.device)
    winner = torch.full_like(best, d2.numel(), dtype=torch.int64)
    winner.scatter_reduce_(0, local, torch.where(d2 == best[local], rank, d2.numel()), "amin")
    return best, closest[winner.clamp_(max=d2.numel() - 1)]


def closest_points_torch(points: torch.Tensor, candidates: BlockCandidates,
                         chunk: int = CLOSEST_CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance [V] and closest point [V, 3] on the input triangles of points [V, 3] in voxel
    coordinates, both float64, on the candidates' device.

    Exact for points within :data:`EXACT_RADIUS` (≈ 3.13 voxels) of the input; farther points get
    the nearest of their block's candidates, and points whose block has none get ``inf`` and
    themselves. (point, candidate) pairs are expanded ``chunk`` at a time (``repeat_interleave``
    over the points' list lengths), culled by cheap bounds, measured exactly in float64 and reduced
    per point with an ``amin`` scatter; among equally near candidates the first listed wins. (Exact
    ties — a point on the input's medial axis — may therefore resolve otherwise than in
    :class:`model.bvh.PrimitiveIndex`: both answers are exact closest points.)
    """
    if chunk <= 0:
        raise ValueError(f"chunk must be positive, got {chunk}")
    points = points.to(device=candidates.device, dtype=torch.float64).reshape(-1, 3)
    best = torch.full((points.shape[0],), math.inf, dtype=torch.float64, device=points.device)
    closest = points.clone()
    if points.shape[0] == 0 or candidates.num_blocks == 0:
        return best, closest
    block = _point_blocks(points, candidates)
    found = block >= 0
    at = block.clamp(min=0)
    first = candidates.offsets[at]
    count = torch.where(found, candidates.offsets[at + 1] - first, torch.zeros_like(first))
    end = torch.cumsum(count, dim=0)
    # host reads: the pair total and the owners of each chunk's first and last pair here, and the
    # number of pairs left by each chunk's cull; no array leaves the device
    total = int(end[-1])
    starts = torch.arange(0, total, chunk, device=points.device)
    lasts = torch.cat([starts[1:], starts.new_tensor([total])]) - 1
    owners = torch.searchsorted(end, torch.stack([starts, lasts]), right=True).tolist()
    corners = _measured_corners(candidates.corners)
    spheres, rows = _bounds(corners), points.T.contiguous()
    for start, p0, p1 in zip(starts.tolist(), *owners):
        stop = min(start + chunk, total)
        d2, point = _measure_chunk(rows, corners, spheres, candidates.triangles, first, end, count,
                                   (start, stop, p0, p1))
        better = d2 < best[p0:p1 + 1]
        best[p0:p1 + 1] = torch.where(better, d2, best[p0:p1 + 1])
        closest[p0:p1 + 1] = torch.where(better[:, None], point, closest[p0:p1 + 1])
    return best.sqrt_(), closest


__all__ = ["EXACT_RADIUS", "CLOSEST_CHUNK", "BlockCandidates", "candidates_from_pairs", "closest_on_triangles",
           "closest_points_torch"]
