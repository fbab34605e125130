"""Artist-grade output from the ε-surface of an unsigned field: deflate, outer shell, single layer,
target face count.

The marching-cubes surface at ε = 1/N *double covers* the shape (DCUDF, Hou et al., SIGGRAPH Asia
2023, "Robust Zero Level-Set Extraction from Unsigned Distance Fields Based on Double Covering"):
every closed surface comes back as an outer and an inner shell, every open sheet as a thin closed
slab, and all of it one voxel off the true surface. We follow DCUDF's plan — start from the double
cover, pull it onto the zero level set, then cut the double cover down to a single layer — with
cheaper steps that fit meshes of tens of millions of faces:

* **Deflate.** A vertex p of the ε-surface with unit normal n (which points away from the surface,
  towards larger distances) sees the zero set at depth t₀ along −n. The field is linear in t on both
  sides of the zero set, with the same slope, so values taken about one voxel from the kink (where
  trilinear interpolation is exact for a linear field) give t₀ whatever the slope, i.e. however
  tilted n is (see :func:`deflate`). Three lookups per vertex, no iteration, no gradient of the
  non-differentiable UDF at its zero set. In direct mode the input mesh itself is known, and a
  vertex whose closest point on it lies straight along its normal (within ~18°: flat parts and
  convex edges and corners, where the interpolated field rounds the feature off) goes exactly onto
  that closest point. Near concave creases the closest point of the ε-vertex jumps to one face and
  would chamfer the crease, so there the field's estimate along the normal comes first and is then
  put onto its own closest input point. Every vertex ends on the input; on the fandisk at N=512 the
  Chamfer distance drops from 4.68e-6 (field only) to 3.08e-6 (Blender's Voxel Remesh: 2.19e-6).
* **Outer shell.** Faces are oriented towards larger field values, so an outer shell encloses
  positive volume and an inner shell (the one inside a closed surface) negative volume; components
  with negative signed volume are dropped.
* **Single layer** (opt-in). After deflation, the two sides of a slab coincide: a face with a
  coincident, opposite face of the same component is *doubled*. Doubled faces are two-coloured
  breadth-first (same side across edges whose normals agree, other side across opposite pairs) and
  one colour is dropped with the collapsed rim. What remains is one open layer with a boundary where
  the input had one; thin-but-closed parts, whose sides stay apart after deflation, are never
  doubled and stay closed. Without it, slabs are kept closed at ε.
* **Target face count.** Quadric-error decimation (Garland & Heckbert) through fast-simplification.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numba as nb
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from .bvh import PrimitiveIndex
from .contour import edge_pieces
from .edges import boundary_half_edges
from .manifold import split_edges_by_pairs
from .geometry import compact, face_components, signed_volumes, vertex_normals
from .grid import BLOCK_SIZE, FAR, ISO_VOXELS, TRUNCATION_VOXELS, SparseField
from .grid_kernels import block_key, find_block
from .mesh import face_normals_and_areas


SLAB_VOLUME_RATIO = 0.25
"""A component whose enclosed volume shrinks below this fraction when deflated is a slab around an
open sheet (or a part thinner than ε/1.5, which at this resolution is one)."""


SLAB_THICKNESS = 1.6
"""See :func:`thin_components`: 1.0 is a perfect slab; a decoded slab reads 1.2–1.25 (woody, beetle
at N=128), a solid 3 voxels thick 1.5."""


SLAB_CHECK_RATIO = 0.9
"""Components whose volume shrinks below this fraction (but not below SLAB_VOLUME_RATIO) are checked
for doubled faces: a sheet nearly enclosing a cavity, or a sheet on a solid the flood could not get
into — the lion statue's decoded field at 256, hollow and open at its base, whose hollow the decoder
reads too low for the flood to pass: its base, flooded from below, lay doubled (40 % of the area,
1.232× the input's; 0.84 of the volume kept). At 0.6 it was not checked."""


DOUBLED_SLAB_SHARE = 0.3
"""...and are slabs when more than this share of their deflated area lies on an opposite face."""


RIM_AREA_RATIO = 0.1
"""Slab faces left with less than this fraction of their area after deflation are the collapsed rim
around the sheet's boundary: degenerate slivers, dropped with the second side."""


EXACT_ALIGNMENT = 0.95
"""Cosine between a vertex's normal and the direction to its closest input point above which the
deflated vertex is put exactly on that point (direct mode). Chosen on the fandisk at N=512, before
the remaining vertices were projected too (CD ×1e3: 0.99 → 4.08e-3, 0.95 → 3.66e-3, 0.8 →
4.02e-3; the field alone 4.68e-3)."""


HOLE_PERIMETER_VOXELS = 16.0
"""After the single-layer cut, boundary loops shorter than this (in voxels) are filled. The ε-surface
closes any real hole narrower than 2ε, so a loop this short is almost always a pinhole left where
the two-colouring of the doubled faces frayed (at non-manifold junctions, e.g. the teapot's spout
entering its body: 1064 of 1092 loops at N=512), not a boundary of the input."""


DECODED_SPECK_AREA = 64.0
"""Closed pieces of a decoded field under this many square voxels (a ball about 4.5 voxels across)
are stray dips of the decoder below ε, not parts: cow at N=512 decoded two of 16–17 voxel² beside its
267,000-voxel² body. The network cannot place a real part that small anyway."""


RIM_STRIP_WIDTH = 1.0
"""After the single-layer cut, a kept piece whose mean width (2 × area / boundary length) is below
this many voxels is a strip left over from the slab's rim, not a sheet."""


MIN_PIECE_AREA = 8.0
"""...and so is a kept piece of less than this many square voxels: a crumb of the dropped side (the
ε-surface cannot represent a separate part that small; Suzanne at N=512 kept ~70 of them)."""


@dataclass
class CleanupOptions:
    """Clean-up of the ε-surface.

    ``deflate``: move the surface from ε back onto the zero level set. ``outer_shell``: drop the
    inner shells of closed surfaces. ``single_layer``: collapse slabs around open sheets to one open
    layer, then close the pinholes the cut leaves at non-manifold junctions (it acts only on slabs:
    closed solids are untouched); without it, slabs are left at ε — a thin closed solid — because
    deflating them would stack their two sides on top of each other. ``target_faces``: decimate to
    about this many faces (0: keep all). ``settle``: a field without its input (VAE mode, a decode)
    — with every other step on, its cleaned surface's vertices go onto the zero set by the tangent
    planes of the voxels around them (:mod:`model.zero_set`; the deflated ε-surface sits off it by
    a few hundredths of a voxel, by a voxel where a thin wall was crumpled). ``contour_slabs``: a
    field without its input — with every other step on, the slabs are not cut but replaced by the
    zero set of the field around them, dual-contoured (:func:`clean_surface`'s ``contour_slabs``):
    the cut tears a decoded sheet (the bunny at 256 in 207 pieces), the contour keeps it whole.
    ``fill_gaps``: a field without its input — the outside flood goes on down into gaps narrower than
    it passes (1.5 voxels from the surface at their middle, :class:`~model.shell.ShellOptions`'
    descent): without it a leg against a belly is capped and deflation folds the cap into the gap.
    ``creases``: a clean field without its input (one whose planes agree as an exact field's do,
    :func:`model.zero_set.is_clean`) — after settling, the edges that cut the zero set's creases are
    turned along them (:mod:`model.creases`).
    """

    deflate: bool = True
    outer_shell: bool = True
    single_layer: bool = True
    target_faces: int = 0
    settle: bool = True
    contour_slabs: bool = True
    fill_gaps: bool = True
    creases: bool = True

    @classmethod
    def none(cls) -> "CleanupOptions":
        """The paper's raw output: the ε-surface as marching cubes made it."""
        return cls(deflate=False, outer_shell=False, single_layer=False, target_faces=0, settle=False,
                   contour_slabs=False, fill_gaps=False, creases=False)

    def validate(self) -> "CleanupOptions":
        if int(self.target_faces) < 0:
            raise ValueError(f"target_faces must be >= 0, got {self.target_faces}")
        return self

    @property
    def cuts_slabs(self) -> bool:
        """Single layer acts only on a deflated surface (the two sides of a slab meet only then)."""
        return self.single_layer and self.deflate

    @property
    def full(self) -> bool:
        """Every step on (the default): direct mode then contours the input itself, whose output is
        one closed or open layer on the zero set by construction; turning a step off asks for the
        field's ε-surface with the remaining steps instead."""
        return self.deflate and self.outer_shell and self.single_layer

    @property
    def active(self) -> bool:
        return self.deflate or self.outer_shell or self.target_faces > 0


# --- field sampling ------------------------------------------------------------------------------


@nb.njit(cache=True, inline="always")
def _sample_point(keys, values, grid, px, py, pz, far):
    n = grid * BLOCK_SIZE
    x0, y0, z0 = int(np.floor(px)), int(np.floor(py)), int(np.floor(pz))
    fx, fy, fz = px - x0, py - y0, pz - z0
    # most cells lie inside one block: search the base corner's block once, others only when the
    # cell crosses into a neighbouring block (no per-point allocation inside the parallel loop)
    base = -1
    if 0 <= x0 < n and 0 <= y0 < n and 0 <= z0 < n:
        base = find_block(keys, block_key(x0 >> 3, y0 >> 3, z0 >> 3, grid))
    acc = 0.0
    for c in range(8):
        dx, dy, dz = c & 1, (c >> 1) & 1, (c >> 2) & 1
        x, y, z = x0 + dx, y0 + dy, z0 + dz
        w = (fx if dx else 1.0 - fx) * (fy if dy else 1.0 - fy) * (fz if dz else 1.0 - fz)
        value = far
        if 0 <= x < n and 0 <= y < n and 0 <= z < n:
            same = (x >> 3) == (x0 >> 3) and (y >> 3) == (y0 >> 3) and (z >> 3) == (z0 >> 3)
            block = base if same else find_block(keys, block_key(x >> 3, y >> 3, z >> 3, grid))
            if block >= 0:
                value = values[block, x & 7, y & 7, z & 7]
        acc += w * value
    return acc


@nb.njit(parallel=True, cache=True)
def _trilinear(keys, values, grid, points, far, out):
    for i in nb.prange(points.shape[0]):
        out[i] = _sample_point(keys, values, grid, points[i, 0], points[i, 1], points[i, 2], far)


@nb.njit(parallel=True, cache=True)
def _deflate(keys, values, grid, vertices, normals, far, scale, eps, out):
    for i in nb.prange(vertices.shape[0]):
        px, py, pz = vertices[i, 0], vertices[i, 1], vertices[i, 2]
        nx, ny, nz = normals[i, 0], normals[i, 1], normals[i, 2]
        a = scale * _sample_point(keys, values, grid, px, py, pz, far)
        b = scale * _sample_point(keys, values, grid, px - 2 * eps * nx, py - 2 * eps * ny, pz - 2 * eps * nz, far)
        c = scale * _sample_point(keys, values, grid, px + eps * nx, py + eps * ny, pz + eps * nz, far)
        from_inside = 2.0 * eps * a / max(a + b, 1e-9)
        from_outside = eps * a / max(c - a, 1e-3)
        depth = min(max(min(from_inside, from_outside), 0.0), 2.0 * eps)
        out[i, 0] = px - depth * nx
        out[i, 1] = py - depth * ny
        out[i, 2] = pz - depth * nz


def sample_field(field: SparseField, voxel_points: np.ndarray) -> np.ndarray:
    """Trilinear interpolation of the normalised field at points in voxel coordinates."""
    pts = np.ascontiguousarray(voxel_points, dtype=np.float64)
    out = np.empty(pts.shape[0], dtype=np.float64)
    _trilinear(field.keys, np.ascontiguousarray(field.values, dtype=np.float32), field.grid, pts, float(FAR), out)
    return out


# --- mesh helpers --------------------------------------------------------------------------------


def _dual_edges(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of faces sharing an edge (each manifold edge once)."""
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    owner = np.tile(np.arange(len(faces)), 3)
    key = np.sort(edges, axis=1)
    order = np.lexsort((key[:, 1], key[:, 0]))
    key, owner = key[order], owner[order]
    same = np.all(key[1:] == key[:-1], axis=1)
    return owner[:-1][same], owner[1:][same]


# --- the steps -----------------------------------------------------------------------------------


def deflate(vertices: np.ndarray, faces: np.ndarray, field: SparseField, surface: PrimitiveIndex | None = None) -> np.ndarray:
    """Move ε-surface vertices (voxel coordinates) onto the zero level set of the field.

    Two estimates of the depth t₀ of the zero set along −n, each exact where the field is linear
    with the same slope on both sides: from inside, t₀ = 2ε·a/(a + b) with b = u(p − 2εn); from
    outside, t₀ = ε·a/(c − a) with c = u(p + εn). Inside a part thinner than 2ε the first reaches the
    far side and overshoots; in a gap narrower than 4ε the second meets the medial axis and
    overshoots; neither undershoots, so the smaller one is taken.

    ``surface``: the input triangles in voxel coordinates (direct mode); vertices whose closest
    point on it lies along their normal (cosine > :data:`EXACT_ALIGNMENT`) go exactly there.
    """
    normals = vertex_normals(vertices, faces)
    vertices = np.ascontiguousarray(vertices, dtype=np.float64)
    values = np.ascontiguousarray(field.values, dtype=np.float32)

    def field_estimate(points: np.ndarray, directions: np.ndarray) -> np.ndarray:
        moved = np.empty_like(points)
        _deflate(field.keys, values, field.grid, np.ascontiguousarray(points), np.ascontiguousarray(directions),
                 float(FAR), TRUNCATION_VOXELS, ISO_VOXELS, moved)
        return moved

    if surface is None or len(vertices) == 0:
        return field_estimate(vertices, normals)
    _, _, closest = surface.closest_points(vertices, near=2.0 * ISO_VOXELS)  # ε-surface vertices lie ~ε away
    to_point = vertices - closest
    length = np.linalg.norm(to_point, axis=1)
    aligned = (to_point * normals).sum(axis=1) > EXACT_ALIGNMENT * length
    aligned &= length <= 2.0 * ISO_VOXELS  # never further than the band the field estimate trusts
    out = closest
    rest = np.flatnonzero(~aligned)
    if len(rest):  # near concave creases: the field's estimate, then onto the input from there
        out[rest] = surface.closest_points(field_estimate(vertices[rest], normals[rest]), near=ISO_VOXELS)[2]
    return out


def opposite_pairs(vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray, radius: float = 0.5,
                   chunk: int = 1 << 20) -> np.ndarray:
    """Pairs [P, 2] of faces that coincide with opposite normals (centroids within ``radius`` voxels):
    the two sides of a deflated slab lying on each other."""
    centroids = vertices[faces].mean(axis=1)
    tree = cKDTree(centroids)
    found: list[np.ndarray] = []
    for start in range(0, len(faces), chunk):  # bounded memory: k nearest within the radius, per chunk
        stop = min(start + chunk, len(faces))
        dist, idx = tree.query(centroids[start:stop], k=8, distance_upper_bound=radius, workers=-1)
        rows = np.repeat(np.arange(start, stop), idx.shape[1]).reshape(idx.shape)
        valid = np.isfinite(dist)
        p, q = rows[valid], idx[valid]
        opposite = np.einsum("ij,ij->i", normals[p], normals[q]) < -0.5
        found.append(np.stack([p[opposite], q[opposite]], axis=1))
    return np.concatenate(found) if found else np.empty((0, 2), dtype=np.int64)


def slab_components(vertices: np.ndarray, faces: np.ndarray, component: np.ndarray, volume_before: np.ndarray,
                    volume_after: np.ndarray) -> np.ndarray:
    """Which ε-surface components (bool per component) are slabs around open sheets, given their
    enclosed volume before and after deflation.

    A slab's own volume (its sheet's area × 2ε) vanishes when deflated, so a ratio under
    :data:`SLAB_VOLUME_RATIO` says slab. A sheet that almost encloses a cavity (the teapot's body
    under its lid) keeps the cavity's volume, and its ratio rises with N (0.18 at 512, 0.31 at
    1024); so components up to :data:`SLAB_CHECK_RATIO` are also slabs when more than
    :data:`DOUBLED_SLAB_SHARE` of their deflated area lies doubled on itself."""
    slab, check = volume_slabs(volume_before, volume_after)
    for c in np.flatnonzero(check):
        slab[c] = lies_doubled(vertices, faces[component == c])
    return slab


def component_areas(vertices: np.ndarray, faces: np.ndarray, component: np.ndarray, count: int) -> np.ndarray:
    """Area per component (``count`` of them), voxel²."""
    return np.bincount(component, weights=face_normals_and_areas(vertices, faces)[1], minlength=count)


def thin_components(volume: np.ndarray, area: np.ndarray, iso_voxels: float = ISO_VOXELS) -> np.ndarray:
    """Components (bool per component) whose ε-shell (ε = ``iso_voxels``; ``volume`` and ``area``
    per component) encloses less than :data:`SLAB_THICKNESS` · ε voxels of volume per unit of its
    area: a slab of thickness 2ε around a sheet encloses about ε·area, a solid of thickness T about
    (T/2 + ε)·area."""
    return (volume > 0) & (volume < SLAB_THICKNESS * iso_voxels * area)


def crumbs(area: np.ndarray) -> np.ndarray:
    """Components (bool per component, ``area`` their ε-surface's) under :data:`MIN_PIECE_AREA`: a
    thin wire sampled between voxel centres at a small ε (an exact field's 0.6 voxel: the scorpion's
    at 256) leaves a row of them. Not slabs: a slab's contour would read the zero set within reach
    of them, the body beside them included, and bring that back as a loose patch (two of 65–84
    voxel² on the scorpion); left alone they are dropped as specks."""
    return area < MIN_PIECE_AREA


def volume_slabs(volume_before, volume_after):  # numpy arrays or torch tensors alike
    """(slab, check) per component from the volume rule of :func:`slab_components`: slabs by
    volume alone, and the components that :func:`lies_doubled` must decide."""
    positive = volume_before > 0
    slab = positive & (volume_after < SLAB_VOLUME_RATIO * volume_before)
    return slab, positive & ~slab & (volume_after < SLAB_CHECK_RATIO * volume_before)


def lies_doubled(vertices: np.ndarray, faces: np.ndarray) -> bool:
    """More than :data:`DOUBLED_SLAB_SHARE` of the faces' area lies on opposite faces of their own."""
    normals, areas = face_normals_and_areas(vertices, faces)
    doubled = np.zeros(len(faces), dtype=bool)
    doubled[opposite_pairs(vertices, faces, normals).ravel()] = True
    return bool(areas[doubled].sum() > DOUBLED_SLAB_SHARE * areas.sum())


def cut_slabs(vertices: np.ndarray, before: np.ndarray, faces: np.ndarray, slab: np.ndarray, component: np.ndarray,
              surface: PrimitiveIndex | None) -> tuple[np.ndarray, np.ndarray]:
    """The single-layer step: cut the deflated slab faces (``slab``) down to one layer, then fill the
    pinholes the cut leaves. ``before``: the vertices before deflation. Unused vertices are left for
    the caller's compaction."""
    normals_before, areas_before = face_normals_and_areas(before, faces[slab])
    faces = faces[single_layer(vertices, faces, slab, normals_before, areas_before, component[slab])]
    return fill_small_holes(vertices, faces, HOLE_PERIMETER_VOXELS, surface)


def replace_slabs(before: np.ndarray, vertices: np.ndarray, faces: np.ndarray, slab: np.ndarray,
                  contour: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The slab faces (``slab``) replaced by ``contour`` of their ε-surface vertices (``before``):
    the solids stay as they are, each sheet comes back as the field's zero set around it."""
    in_slab = np.zeros(len(before), dtype=bool)  # a mark, not np.unique: 1.2 s of sorting at 512 (the bunny)
    in_slab[faces[slab].ravel()] = True
    slab_vertices, slab_faces = contour(before[in_slab])
    return (np.concatenate([vertices, np.asarray(slab_vertices, dtype=vertices.dtype).reshape(-1, 3)]),
            np.concatenate([faces[~slab], np.asarray(slab_faces, dtype=faces.dtype).reshape(-1, 3) + len(vertices)]))


def single_layer(vertices: np.ndarray, faces: np.ndarray, in_slab: np.ndarray, normals_before: np.ndarray,
                 areas_before: np.ndarray, slab_component: np.ndarray, radius: float = 0.5,
                 chunk: int = 1 << 20) -> np.ndarray:
    """Collapse the doubled regions of deflated slab faces (``in_slab``) to one side; returns a mask
    of the faces to keep. ``normals_before``/``areas_before``: the slab faces' normals and areas
    before deflation; ``slab_component``: the ε-surface component of each slab face."""
    keep = np.ones(len(faces), dtype=bool)
    slab_faces = np.flatnonzero(in_slab)
    if len(slab_faces) == 0:
        return keep
    sub = faces[slab_faces]
    normals, areas = face_normals_and_areas(vertices, sub)
    pairs = opposite_pairs(vertices, sub, normals, radius, chunk)
    doubled = np.zeros(len(sub), dtype=bool)
    doubled[pairs.ravel()] = True
    if not doubled.any():
        return keep

    # Two-colour the doubled faces: across an edge whose normals agree a face keeps its neighbour's
    # side, across a coincident opposite pair it takes the other side. Breadth-first from the
    # largest faces, so every face is labelled along the shortest chain of such steps: its opposite
    # partner is one step away, while a leak around the rim's fold is many, and loses.
    a, b = _dual_edges(sub)
    # the slab's rim collapses onto the sheet's boundary while deflating: those faces lose nearly all
    # their area (marching cubes' own slivers were small before too, and stay)
    collapsed = areas < RIM_AREA_RATIO * areas_before
    solid = doubled & ~collapsed  # collapsed faces have unreliable normals
    agree = solid[a] & solid[b] & (np.einsum("ij,ij->i", normals[a], normals[b]) > 0.5)
    src = np.concatenate([a[agree], b[agree], pairs[:, 0], pairs[:, 1]])
    dst = np.concatenate([b[agree], a[agree], pairs[:, 1], pairs[:, 0]])
    flip = np.concatenate([np.zeros(2 * int(agree.sum()), np.int8), np.ones(2 * len(pairs), np.int8)])
    order = np.argsort(src, kind="stable")
    offsets = np.searchsorted(src[order], np.arange(len(sub) + 1)).astype(np.int64)
    seeds = np.argsort(-areas * doubled, kind="stable").astype(np.int64)
    side = _two_colour(offsets, dst[order].astype(np.int64), flip[order], seeds, doubled)
    drop = doubled & (side == 1)
    # the collapsed rim goes, and so do faces that folded over (normal turned around) while deflating
    drop |= collapsed | (np.einsum("ij,ij->i", normals, normals_before) < 0.0)
    drop |= _leftovers(vertices, sub, ~drop, areas, slab_component)
    keep[slab_faces[drop]] = False
    return keep


@nb.njit(cache=True)
def _two_colour(offsets, targets, flip, seeds, active):
    """Breadth-first 0/1 labels over a graph with "same" (flip 0) and "other" (flip 1) edges;
    -1 for inactive faces. The first label a face receives is kept."""
    n = offsets.shape[0] - 1
    side = np.full(n, -1, dtype=np.int8)
    queue = np.empty(n, dtype=np.int64)
    for seed in seeds:
        if not active[seed] or side[seed] >= 0:
            continue
        side[seed] = 0
        head, tail = 0, 0
        queue[tail] = seed
        tail += 1
        while head < tail:
            f = queue[head]
            head += 1
            for e in range(offsets[f], offsets[f + 1]):
                g = targets[e]
                if active[g] and side[g] < 0:
                    side[g] = side[f] ^ flip[e]
                    queue[tail] = g
                    tail += 1
    return side


def _leftovers(vertices: np.ndarray, faces: np.ndarray, kept: np.ndarray, areas: np.ndarray,
               component: np.ndarray) -> np.ndarray:
    """Kept faces in pieces the cut left behind, strips of the rim: a piece whose mean width (twice
    its area over its boundary length) is under :data:`RIM_STRIP_WIDTH` voxels, or whose area is
    under :data:`MIN_PIECE_AREA` — except the largest piece of each slab (``component``), which is
    the sheet itself however small the sheet is. Judged by shape, not by size against the slab's largest piece, so the small parts
    of an assembly of open sheets (a beetle's legs and antennae) are kept."""
    idx = np.flatnonzero(kept)
    sub = faces[idx]
    a, b = _dual_edges(sub)
    graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(len(idx), len(idx)))
    count, piece = connected_components(graph, directed=False)
    piece_area = np.bincount(piece, weights=areas[idx], minlength=count)
    half, border = boundary_half_edges(len(vertices), sub)
    owner = np.tile(np.arange(len(sub)), 3)
    length = np.linalg.norm(vertices[half[border, 0]] - vertices[half[border, 1]], axis=1)
    perimeter = np.bincount(piece[owner[border]], weights=length, minlength=count)
    strip = (2.0 * piece_area < RIM_STRIP_WIDTH * np.maximum(perimeter, 1e-12)) | (piece_area < MIN_PIECE_AREA)
    piece_component = np.zeros(count, dtype=np.int64)
    piece_component[piece] = component[idx]
    by_size = np.lexsort((-piece_area, piece_component))  # per slab, its largest piece first
    first = np.ones(count, dtype=bool)
    first[1:] = piece_component[by_size][1:] != piece_component[by_size][:-1]
    strip[by_size[first]] = False
    out = np.zeros(len(faces), dtype=bool)
    out[idx[strip[piece]]] = True
    return out


def loop_centres(vertices: np.ndarray, border: np.ndarray, loop: np.ndarray, count: int) -> np.ndarray:
    """Per loop (``loop``: the loop of each boundary half-edge of ``border``, 0..count−1) the mean of
    its half-edges' start vertices [count, 3]."""
    size = np.bincount(loop, minlength=count)
    return np.stack([np.bincount(loop, weights=vertices[border[:, 0], k], minlength=count) for k in range(3)],
                    axis=1) / np.maximum(size, 1)[:, None]


def loop_perimeters(vertices: np.ndarray, border: np.ndarray, loop: np.ndarray, count: int) -> np.ndarray:
    """Per loop the length of its boundary half-edges [count]."""
    length = np.linalg.norm(vertices[border[:, 0]] - vertices[border[:, 1]], axis=1)
    return np.bincount(loop, weights=length, minlength=count)


def add_fans(vertices: np.ndarray, faces: np.ndarray, border: np.ndarray, loop: np.ndarray, close: np.ndarray,
             centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The loops ``close`` (bool per loop) closed by fans from ``centre`` (per loop, one new vertex
    each), every fan face running its boundary half-edge the other way (so it is wound like the
    faces around the hole)."""
    chosen = close[loop]
    new_vertex = len(vertices) + np.cumsum(close) - 1
    fan = np.stack([border[chosen, 1], border[chosen, 0], new_vertex[loop[chosen]]], axis=1)
    return np.concatenate([vertices, centre[close]]), np.concatenate([faces, fan.astype(faces.dtype)])


def fill_small_holes(vertices: np.ndarray, faces: np.ndarray, max_perimeter: float,
                     surface: PrimitiveIndex | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Close every boundary loop shorter than ``max_perimeter`` with a fan around its centroid
    (put onto ``surface`` when the input is known), oriented like the faces around it."""
    if len(faces) == 0:
        return vertices, faces
    half, on_border = boundary_half_edges(len(vertices), faces)
    border = half[on_border]
    if len(border) == 0:
        return vertices, faces
    graph = coo_matrix((np.ones(len(border), np.int8), (border[:, 0], border[:, 1])), shape=(len(vertices),) * 2)
    _, label = connected_components(graph, directed=False)
    loops, loop = np.unique(label[border[:, 0]], return_inverse=True)
    fill = loop_perimeters(vertices, border, loop, len(loops)) < max_perimeter
    if not fill.any():
        return vertices, faces
    centre = loop_centres(vertices, border, loop, len(loops))
    if surface is not None:
        centre[fill] = surface.closest_points(centre[fill])[2]
    return add_fans(vertices, faces, border, loop, fill, centre)


def drop_specks(vertices: np.ndarray, faces: np.ndarray, min_area: float = MIN_PIECE_AREA) -> np.ndarray:
    """The faces without the pieces of less than ``min_area`` square voxels: a piece the ε-surface
    cannot represent, or (:data:`DECODED_SPECK_AREA`) a decoded field's stray dip below ε. Pieces
    are counted through shared edges: a crumb that hangs off a sheet by one vertex (the bunny's
    decoded base at 256: 55 faces, 11 voxel²) is a piece too."""
    if len(faces) == 0:
        return faces
    piece = edge_pieces(faces)
    area = np.bincount(piece, weights=face_normals_and_areas(vertices, faces)[1], minlength=len(faces))
    return faces[area[piece] >= min_area]


def decimate(vertices: np.ndarray, faces: np.ndarray, target_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """Quadric-error decimation to about ``target_faces`` faces."""
    if target_faces <= 0 or len(faces) <= target_faces:
        return vertices, faces
    import fast_simplification

    v, f = vertices.astype(np.float64), faces.astype(np.int64)
    for _ in range(4):  # a single pass stops short of very large reductions; a few more reach them
        if len(f) <= 1.05 * target_faces:
            break
        v, f = fast_simplification.simplify(v, f, target_reduction=1.0 - target_faces / len(f))
    return np.asarray(v, dtype=np.float64), np.asarray(f, dtype=np.int64)


def clean_surface(vertices: np.ndarray, faces: np.ndarray, field: SparseField, options: CleanupOptions,
                  progress: Callable[[float], None] | None = None,
                  surface: PrimitiveIndex | None = None,
                  contour_slabs: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
                  iso_voxels: float = ISO_VOXELS) -> tuple[np.ndarray, np.ndarray]:
    """Apply the enabled clean-up steps to an ε-surface given in voxel coordinates.

    ``surface``: the exact zero set when it is known (direct mode: the input triangles in voxel
    coordinates), used by :func:`deflate`; None for a decoded field.

    ``contour_slabs``: for a decoded field, what replaces its slabs instead of the single-layer cut:
    called with the slabs' ε-surface vertices, it returns the zero set around them as a mesh
    (vertices, faces; :func:`model.udf_contour.field_contour` of :func:`model.udf_contour.field_near`
    in the pipeline — this module stays below the contouring one).

    ``iso_voxels``: the ε the surface was extracted at (an exact field's may be less than the
    paper's voxel: :meth:`model.shell.ShellOptions.for_clean_field`).

    ``progress`` is called between steps (the pipeline's reporter also checks for cancellation)."""
    options.validate()
    report = progress or (lambda fraction: None)
    if len(faces) and (options.outer_shell or options.deflate):
        count, component = face_components(len(vertices), faces)
        volume_before = signed_volumes(vertices, faces, component, count)
        if options.outer_shell:  # inner shells enclose negative volume
            kept = volume_before[component] >= 0.0
            faces, component = faces[kept], component[kept]
            vertices, faces = compact(vertices, faces)  # the dropped shells' vertices need no more work
    report(0.2)
    before = vertices
    if options.deflate and len(faces):
        vertices = deflate(vertices, faces, field, surface)
        # A slab's volume (its sheet's area times 2ε) vanishes once deflated; a solid keeps its own.
        volume_after = signed_volumes(vertices, faces, component, count)
        slab_of = slab_components(vertices, faces, component, volume_before, volume_after)
        area_before = component_areas(before, faces, component, count)
        if surface is None:  # a decoded field: the deflated volume is as rough as the field, the shell's is not
            slab_of |= thin_components(volume_before, area_before, iso_voxels)
        slab_of &= ~crumbs(area_before)
        slab = slab_of[component]
        contoured = contour_slabs is not None and surface is None and options.cuts_slabs
        if slab.any() and not contoured and (surface is not None or not options.cuts_slabs):
            in_slab = np.zeros(len(vertices), dtype=bool)
            in_slab[faces[slab].ravel()] = True
            if not options.cuts_slabs:  # keep slabs closed at ε rather than doubled
                vertices = np.where(in_slab[:, None], before, vertices)
            else:  # the single-layer cut is tuned on the field's estimate: on Suzanne at N=512 the exact
                # positions fold the rims where the eyes meet the head and lose whole patches (CD 3.9e-4 vs 6.3e-5)
                vertices = np.where(in_slab[:, None], deflate(before, faces[slab], field), vertices)
    report(0.5)
    speck_area = MIN_PIECE_AREA if surface is not None else DECODED_SPECK_AREA
    if options.cuts_slabs and len(faces) and slab.any():
        if contoured:
            assert contour_slabs is not None
            vertices, faces = replace_slabs(before, vertices, faces, slab, contour_slabs)
        else:
            vertices, faces = cut_slabs(vertices, before, faces, slab, component, surface)
        # where a sheet met the shell or another sheet along an edge, each keeps its own
        vertices, faces = split_edges_by_pairs(vertices, faces, speck_area)
    if len(faces) and options.outer_shell:
        faces = drop_specks(vertices, faces, speck_area)
    if len(faces):
        vertices, faces = compact(vertices, faces)
    report(0.8)
    if options.target_faces:
        vertices, faces = decimate(vertices, faces, int(options.target_faces))
    return vertices, faces
