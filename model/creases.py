"""Edges turned along the zero set's creases: the last step of a clean field's extraction, after its
vertices are settled (:mod:`model.zero_set`).

Why: settled vertices lie on the zero set, and at a crease the settling puts some on the crease
itself (where the planes meet), but the marching-cubes triangulation between them was chosen before,
by the ε-level set's cells: an edge between two vertices on either side of a crease cuts the corner,
its middle inside a convex crease, outside a concave one. On the exact fields of the shared meshes at
N = 256 the samples within a voxel of a crease carried 70–80 % of the extraction's Chamfer distance
(fandisk, counter, cow) against 5–35 % of the surface. Direct mode lays its quads by the input's
own normals; here the field decides:

* the edge (a, b) of the faces (a, b, c) and (b, a, d) becomes (c, d) where the middle of (c, d)
  lies nearer the zero set than the middle of (a, b) — by half at least, and by ``gain`` voxels;
* "nearer the zero set" is the distance from the point to the nearest tangent plane of the voxels
  around it that touch the surface within ``radius`` voxels of it (:func:`plane_distance`): at a
  crease, the middle of a chord across it lies off both faces' planes, the middle of an edge along
  it on both. (Settling the middle alone and measuring its move was tried first: near a crease the
  planes of the voxels whose nearest point is the edge itself pull such a point off the faces —
  midpoints 0.015 voxel off by median were measured at 0.076 — and the splits and flips it chose
  doubled a tilted box's error.)
* a flip is made only if both new faces keep the pair's side and (c, d) is not already an edge, so
  the mesh stays manifold and unfolded; a face takes part in one flip per pass, largest gain first.

No vertex moves and none is added, so pieces, loops and edges of 3+ faces are what the clean-up
left. Only a clean field's planes name its creases (:func:`model.zero_set.is_clean`): on decoded
fields with the shipped weights the flips followed the noise (normal error +7–15 % on the counter and
the fandisk at 256 for ±0.7 % of CD), so there the step is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba as nb
import numpy as np

from .edges import half_edge_groups
from .geometry import vertex_faces
from .grid import BLOCK_SIZE, SparseField
from .grid_kernels import window_blocks
from .zero_set import Planes, zero_set_planes


@dataclass(frozen=True)
class CreaseOptions:
    """``passes``: rounds of flips, the first over every edge, the next over the edges of the faces the
    one before flipped (each re-measures them; it stops early when none is made).
    ``gain`` (voxels) and ``radius`` (voxels): see the module's docstring. ``reach``: voxels on each
    side of a point whose planes it reads (a window of 2·reach per axis)."""

    passes: int = 3
    gain: float = 0.01
    radius: float = 1.0
    reach: int = 2

    def validate(self) -> "CreaseOptions":
        if self.passes < 0:
            raise ValueError(f"passes must be >= 0, got {self.passes}")
        if self.gain <= 0 or self.radius <= 0:
            raise ValueError(f"gain and radius must be > 0, got {self.gain}, {self.radius}")
        if not 1 <= self.reach <= 4:
            raise ValueError(f"reach must be 1..4 voxels, got {self.reach}")
        return self


@nb.njit(parallel=True, cache=True)
def _pair_edges(faces, vertices, owner, corner, first, size, touched, gain, keep):
    """Per half-edge group, whether it is a consistently oriented manifold edge (two faces, the
    second running the other way, distinct opposite corners), of a face in ``touched`` (empty: any),
    and — where ``gain`` > 0 — bent by more than ``gain`` (:func:`_bent`)."""
    for g in nb.prange(first.shape[0]):
        keep[g] = False
        if size[g] != 2:
            continue
        h = first[g]
        f1, k1, f2, k2 = owner[h], corner[h], owner[h + 1], corner[h + 1]
        if touched.shape[0] and not (touched[f1] or touched[f2]):
            continue
        a, b, c = faces[f1, k1], faces[f1, (k1 + 1) % 3], faces[f1, (k1 + 2) % 3]
        d = faces[f2, (k2 + 2) % 3]
        if faces[f2, k2] != b or faces[f2, (k2 + 1) % 3] != a or c == d:
            continue
        keep[g] = gain <= 0.0 or _bent(vertices, a, b, c, d, gain)


@nb.njit(parallel=True, cache=True)
def _gather_pairs(faces, owner, corner, first, groups, out):
    for i in nb.prange(groups.shape[0]):
        h = first[groups[i]]
        f1, k1, f2, k2 = owner[h], corner[h], owner[h + 1], corner[h + 1]
        out[0, i], out[1, i], out[2, i] = faces[f1, k1], faces[f1, (k1 + 1) % 3], faces[f1, (k1 + 2) % 3]
        out[3, i], out[4, i], out[5, i] = faces[f2, (k2 + 2) % 3], f1, f2


def pair_edges(faces: np.ndarray, vertices: np.ndarray | None = None, gain: float = 0.0,
               touched: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """The edges two faces share, the second running the other way (a consistently oriented
    manifold edge): per edge (a, b, c, d, f1, f2) with f1 = (a, b, c) and f2 = (b, a, d) up to
    rotation, c ≠ d; only those of the faces ``touched`` (bool [F]; None: all) and, with ``gain`` > 0,
    only those whose two diagonals' middles lie more than ``gain`` apart along the pair's normal
    (``vertices`` [V, 3]): an edge a flip could move by that much. One pass in compiled code: at
    N = 512 this ran over two million edges three times, and the same selection by numpy indexing
    took a third of the crease step."""
    faces = np.ascontiguousarray(faces, dtype=np.int64).reshape(-1, 3)
    owner, corner, first, size = half_edge_groups(faces)
    if gain > 0.0 and vertices is None:
        raise ValueError("pair_edges needs the vertices to measure a bend")
    points = np.zeros((0, 3)) if vertices is None else np.ascontiguousarray(vertices, dtype=np.float64)
    keep = np.empty(len(first), dtype=np.bool_)
    _pair_edges(faces, points, owner, corner, first, size,
                np.zeros(0, dtype=np.bool_) if touched is None else np.ascontiguousarray(touched, dtype=np.bool_),
                float(gain), keep)
    out = np.empty((6, int(keep.sum())), dtype=np.int64)
    _gather_pairs(faces, owner, corner, first, np.flatnonzero(keep), out)
    return tuple(out)


@nb.njit(parallel=True, cache=True)
def _plane_distance(keys, grid, dist, grads, points, reach, radius, out):
    n = grid * BLOCK_SIZE
    for q in nb.prange(points.shape[0]):
        vx, vy, vz = points[q, 0], points[q, 1], points[q, 2]
        x0, y0, z0 = int(np.floor(vx)) - reach + 1, int(np.floor(vy)) - reach + 1, int(np.floor(vz)) - reach + 1
        bx0, by0, bz0 = x0 >> 3, y0 >> 3, z0 >> 3
        blocks = window_blocks(keys, grid, x0, y0, z0)
        best = np.inf
        for x in range(max(x0, 0), min(x0 + 2 * reach, n)):
            for y in range(max(y0, 0), min(y0 + 2 * reach, n)):
                for z in range(max(z0, 0), min(z0 + 2 * reach, n)):
                    b = blocks[(x >> 3) - bx0, (y >> 3) - by0, (z >> 3) - bz0]
                    if b < 0:
                        continue
                    li, lj, lk = x & 7, y & 7, z & 7
                    gx, gy, gz = grads[b, li, lj, lk, 0], grads[b, li, lj, lk, 1], grads[b, li, lj, lk, 2]
                    if gx * gx + gy * gy + gz * gz < 0.5:  # no plane here
                        continue
                    d = dist[b, li, lj, lk]
                    cx, cy, cz = x - d * gx, y - d * gy, z - d * gz  # where this voxel touches the surface
                    if (vx - cx) ** 2 + (vy - cy) ** 2 + (vz - cz) ** 2 > radius * radius:
                        continue
                    off = abs(gx * (vx - cx) + gy * (vy - cy) + gz * (vz - cz))
                    if off < best:
                        best = off
        out[q] = best


def plane_distance(points: np.ndarray, field: SparseField, planes: Planes,
                   options: CreaseOptions = CreaseOptions()) -> np.ndarray:
    """Per point (voxel coordinates [P, 3]), its distance to the nearest tangent plane of the voxels
    that touch the surface within ``options.radius`` of it; inf where none does. ``planes``: the
    field's :func:`model.zero_set.zero_set_planes`."""
    dist, grads = planes
    out = np.empty(len(points))
    _plane_distance(np.asarray(field.keys, dtype=np.int64), field.resolution // BLOCK_SIZE, dist, grads,
                    np.ascontiguousarray(points, dtype=np.float64), options.reach, options.radius, out)
    return out


@nb.njit(cache=True, inline="always")
def _pair_normal(vertices, p, q, r, s):
    """The (area-weighted, not unit) normal of the faces (p, q, r) and (q, p, s) together (vertex
    ids; scalar arithmetic: array temporaries in a kernel over millions of edges cost more than the
    arithmetic)."""
    px, py, pz = vertices[p, 0], vertices[p, 1], vertices[p, 2]
    qx, qy, qz = vertices[q, 0], vertices[q, 1], vertices[q, 2]
    ux, uy, uz = qx - px, qy - py, qz - pz
    vx, vy, vz = vertices[r, 0] - px, vertices[r, 1] - py, vertices[r, 2] - pz
    wx, wy, wz = vertices[s, 0] - qx, vertices[s, 1] - qy, vertices[s, 2] - qz
    # (q − p) × (r − p) + (p − q) × (s − q) = (q − p) × (r − p − s + q)
    tx, ty, tz = vx - wx, vy - wy, vz - wz
    return uy * tz - uz * ty, uz * tx - ux * tz, ux * ty - uy * tx


@nb.njit(cache=True, inline="always")
def _turns_with(vertices, p, r, s, nx, ny, nz):
    """Whether the face (p, s, r) faces the same side as the normal n."""
    ax, ay, az = vertices[s, 0] - vertices[p, 0], vertices[s, 1] - vertices[p, 1], vertices[s, 2] - vertices[p, 2]
    bx, by, bz = vertices[r, 0] - vertices[p, 0], vertices[r, 1] - vertices[p, 1], vertices[r, 2] - vertices[p, 2]
    return (ay * bz - az * by) * nx + (az * bx - ax * bz) * ny + (ax * by - ay * bx) * nz > 0.0


@nb.njit(cache=True)
def _flip(faces, vertices, a, b, c, d, f1, f2, order, ring_start, ring_faces, used):
    """Greedy flips in ``order``: (a, b) → (c, d) unless a face of the pair already flipped this pass
    (``used``, set here), (c, d) is an edge (among c's faces as they are now, or made by a flip this
    pass) or a new face turns against the pair's normal. Returns the number made."""
    made = dict()
    made[np.int64(-1)] = True
    count = 0
    num_vertices = vertices.shape[0]
    for i in order:
        p, q, r, s, g, h = a[i], b[i], c[i], d[i], f1[i], f2[i]
        if used[g] or used[h]:
            continue
        key = min(r, s) * num_vertices + max(r, s)
        if key in made:
            continue
        exists = False
        for t in range(ring_start[r], ring_start[r + 1]):
            f = ring_faces[t]
            if f != g and f != h and (faces[f, 0] == s or faces[f, 1] == s or faces[f, 2] == s):
                exists = True
                break
        if exists:
            continue
        # the pair's normal, and the new faces' (p, s, r) and (q, r, s)
        nx, ny, nz = _pair_normal(vertices, p, q, r, s)
        if not _turns_with(vertices, p, r, s, nx, ny, nz) or not _turns_with(vertices, q, s, r, nx, ny, nz):
            continue
        faces[g, 0], faces[g, 1], faces[g, 2] = p, s, r
        faces[h, 0], faces[h, 1], faces[h, 2] = q, r, s
        used[g] = True
        used[h] = True
        made[key] = True
        count += 1
    return count


@nb.njit(cache=True, inline="always")
def _bent(vertices, a, b, c, d, gain):
    """Whether the middles of the edge (a, b)'s two diagonals lie more than ``gain`` apart along the
    pair's normal (a flip gains at most that much: a flat quad's diagonals are one surface)."""
    nx, ny, nz = _pair_normal(vertices, a, b, c, d)
    length = np.sqrt(nx * nx + ny * ny + nz * nz)
    ox = 0.5 * (vertices[c, 0] + vertices[d, 0] - vertices[a, 0] - vertices[b, 0])
    oy = 0.5 * (vertices[c, 1] + vertices[d, 1] - vertices[a, 1] - vertices[b, 1])
    oz = 0.5 * (vertices[c, 2] + vertices[d, 2] - vertices[a, 2] - vertices[b, 2])
    return length > 0.0 and abs(ox * nx + oy * ny + oz * nz) > gain * length


def flip_pass(vertices: np.ndarray, faces: np.ndarray, field: SparseField, planes: Planes,
              options: CreaseOptions = CreaseOptions(), touched: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """One pass of flips (see the module's docstring) over the edges of the faces ``touched`` (bool
    [F]; None: all): the new faces and which faces it flipped (bool [F])."""
    a, b, c, d, f1, f2 = pair_edges(faces, vertices, options.gain, touched)
    flipped = np.zeros(len(faces), dtype=np.bool_)
    if len(a) == 0:
        return faces, flipped
    across = plane_distance(0.5 * (vertices[a] + vertices[b]), field, planes, options)
    along = plane_distance(0.5 * (vertices[c] + vertices[d]), field, planes, options)
    known = np.isfinite(across) & np.isfinite(along)
    gain = np.zeros(len(a))
    gain[known] = across[known] - along[known]
    candidates = np.flatnonzero((gain > options.gain) & (along < 0.5 * across))
    if len(candidates) == 0:
        return faces, flipped
    order = candidates[np.argsort(-gain[candidates], kind="stable")]
    faces = faces.copy()
    start, ring = vertex_faces(faces, len(vertices))
    _flip(faces, vertices, a, b, c, d, f1, f2, order, start, ring, flipped)
    return faces, flipped


def flip_along_creases(vertices: np.ndarray, faces: np.ndarray, field: SparseField,
                       options: CreaseOptions = CreaseOptions(), planes: Planes | None = None) -> np.ndarray:
    """``faces`` [F, 3] of the settled ``vertices`` [V, 3] (voxel coordinates) with the edges that
    cut the zero set's creases turned along them (see the module's docstring): int64 [F, 3], the
    same vertices. ``planes``: the field's :func:`model.zero_set.zero_set_planes`, when the
    settling already made them (None: made here)."""
    options.validate()
    vertices = np.ascontiguousarray(vertices, dtype=np.float64)
    faces = np.ascontiguousarray(faces, dtype=np.int64).reshape(-1, 3)
    if len(faces) == 0 or len(field.keys) == 0 or options.passes == 0:
        return faces
    planes = zero_set_planes(field) if planes is None else planes
    touched = None  # the first pass reads every edge, the next ones those of the faces just flipped
    for _ in range(options.passes):
        faces, touched = flip_pass(vertices, faces, field, planes, options, touched)
        if not touched.any():
            break
    return faces
