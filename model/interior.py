"""The surfaces inside the outer shell — a solid's inner cavities, bodies within them, sheets
floating in them — read from the field alone, for VAE mode's extraction
(:func:`model.pipeline.extract_surface`).

Why: the outside flood (:mod:`model.shell`) keeps the outer shell and clamps everything it did not
reach below ε, so whatever zero set lies inside was lost: a sphere with a cavity of half its radius
came back as one sphere with 80 % of the input's area, a box with 3-voxel walls as its outside
alone, where direct mode and the dual contour keep both. Here the field's zero set *deep* inside —
farther than about :attr:`InteriorOptions.reach` voxels from every voxel the flood reached, so the
outer shell's own zero set (within ε + 1 voxel of the flood) is never read twice — is
dual-contoured (:func:`model.udf_contour.field_contour`), and the pieces that are whole there are
kept: closed ones (a cavity, a body in a cavity, the closed end of a teapot's handle inside its
body) and open ones whose every rim lies amid the deep voxels (a sheet floating in a cavity: its rim
is its own).

What goes on out of the deep voxels is dropped — most of it before it is contoured
(:func:`whole_deep_voxels`: the zero set traced from the shell's own), the rest by its rim where
the deep voxels end: it is the inside part of a sheet or a body
that passes through the outer shell (a spout's tube inside the pot, gear teeth inside a meshing
gear, the back of an eye inside a head), cut where it nears the shell. Kept, each would add a
boundary loop the input does not have; joined to the shell, each would add edges of three faces.
Measured on the exact fields of the shared meshes at N = 256 (``/work/runs/i48/interior.py``):
keeping them took the CD down by up to 70 % (the cycloidal gears) but gave the gears 287 boundary
loops and 150 pieces where the input has none and 112, the armchair 9 loops and 10 pieces (input 0
and 4). So is a closed piece under :attr:`InteriorOptions.min_area`: a bubble a few voxels across
where a self-intersecting input folds into itself (one in the cow), which counts as a piece and
is no cavity an artist made; and a closed piece flatter than :attr:`InteriorOptions.min_thickness`,
a sheet read from both sides (55 of the 56 closed inner pieces of the cycloidal gears, where two
gears overlap, were 0.01–0.6 voxel thick).

From a decoded field (not clean, :func:`model.zero_set.is_clean`) only closed pieces are kept: its
rims inside are its own tears (:attr:`InteriorOptions.open_sheets`).

Orientation: a closed piece faces away from the material it bounds. By parity, a piece inside the
outer shell and inside an odd number of other closed inner pieces bounds material (a body in a
cavity) and faces out of itself; inside an even number (none, for a plain cavity) it bounds a hole
and faces into it (negative enclosed volume), as an input cavity is wound.
"""

from __future__ import annotations

from dataclasses import dataclass, field as dataclass_field

import numba as nb
import numpy as np

from .edges import edge_valence
from .geometry import compact, face_components, signed_volumes
from .grid import BLOCK_SIZE, NEIGHBOR_OFFSETS, TRUNCATION_VOXELS, SparseField, key_coords, neighbor_table
from .grid_kernels import voxel_id, voxel_of
from .mesh import face_normals_and_areas
from .shell import FACE_OFFSETS, Outside, _step, labelled_neighbours
from .udf_contour import FieldContourOptions, field_contour, field_where, local_floor, orient, voxels_near


NEAR_ZERO = 0.9
"""Voxels: the voxels nearer the zero set than this trace it (:func:`whole_deep_voxels`). Above half
a cell's diagonal (0.87), so that every point of the zero set has one; a wall of 3 voxels or more
parts a cavity's from the shell's (of 2, their layers may touch, and the cavity goes)."""

BAND = 2.5
"""Voxels around a zero set that goes on out of the deep voxels left out with it: the field
contour reads voxels this far from the surface (:data:`model.udf_contour` ``band``)."""


@dataclass(frozen=True)
class InteriorOptions:
    """``reach`` (voxels): the zero set read inside lies farther than about this from every voxel
    the outside flood reached (the outer shell's own zero set lies within ε + 1 voxel of it, and the
    dual contour reads a voxel around each crossing).
    ``min_area`` (voxel²): smaller pieces are dropped (50: a sphere 4 voxels across; the outer
    shell's specks are 8, but a speck inside is a piece no one sees). ``min_thickness`` (voxels): a
    closed piece must enclose at least this mean thickness (2 · volume / area; a sphere of radius r
    encloses 2r/3): flatter, it is a sheet contoured from both sides, not a cavity. ``open_sheets``:
    keep open pieces whose rims are their own (a clean field's); a decoded field's rims inside are
    its own tears (the cycloidal gears' decoded field at 256 gave 24 such pieces with 23 rims, where
    the input has none), so there only closed pieces are kept. ``contour``: how the inside's zero set
    is contoured (:class:`model.udf_contour.FieldContourOptions`; an exact field's: its
    ``for_clean_field``)."""

    reach: float = 2.5
    min_area: float = 50.0
    min_thickness: float = 1.0
    open_sheets: bool = True
    contour: FieldContourOptions = dataclass_field(default_factory=FieldContourOptions)

    def validate(self) -> "InteriorOptions":
        if not 2.0 <= self.reach < BLOCK_SIZE / 2:
            raise ValueError(f"reach must be in [2, {BLOCK_SIZE // 2}) voxels, got {self.reach}")
        if self.min_area < 0 or self.min_thickness < 0:
            raise ValueError(f"min_area and min_thickness must be >= 0, got {self.min_area}, {self.min_thickness}")
        return self


def _voxel_points(field: SparseField, mask: np.ndarray) -> np.ndarray:
    """The voxel coordinates (float64 [P, 3]) of the stored voxels ``mask`` (bool [M, 8, 8, 8]) marks."""
    block, x, y, z = np.nonzero(mask)
    return key_coords(np.asarray(field.keys, dtype=np.int64), field.grid)[block].astype(np.float64) * BLOCK_SIZE + \
        np.stack([x, y, z], axis=1)


@nb.njit(cache=True)
def _inside_border(outside, nbr, unstored_out, border):
    """Mark the voxels the flood did not reach that have a face neighbour it did (stored outside, or
    an unstored block of an outside component)."""
    s = BLOCK_SIZE
    for b in range(outside.shape[0]):
        for x in range(s):
            for y in range(s):
                for z in range(s):
                    if outside[b, x, y, z]:
                        continue
                    for d in range(6):
                        c, nx, ny, nz = _step(nbr, b, x, y, z, d)
                        if outside[c, nx, ny, nz] if c >= 0 else unstored_out[-1 - c]:
                            border[b, x, y, z] = True
                            break


def deep_voxels(field: SparseField, flooded: Outside, reach: float) -> np.ndarray:
    """Per stored voxel (bool [M, 8, 8, 8]) whether it lies inside (the flood did not reach it) and
    farther than about ``reach`` voxels from every voxel the flood did reach."""
    if len(field.keys) == 0:
        return np.zeros(np.shape(field.values), dtype=bool)
    nbr = labelled_neighbours(field, flooded.labels, FACE_OFFSETS)
    border = np.zeros(np.shape(field.values), dtype=np.bool_)
    _inside_border(flooded.outside, nbr, flooded.unstored_out, border)
    points = _voxel_points(field, border)
    # the border is one voxel from the outside: a voxel within reach − 1 of it is within reach of the outside
    return ~flooded.outside & ~voxels_near(field, points, reach - 1.0)


@nb.njit(cache=True, inline="always")
def _neighbour(near, b, x, y, z, dx, dy, dz):
    """The voxel (block, x, y, z) at offset (dx, dy, dz) from (b, x, y, z); block −1 where not stored."""
    s = BLOCK_SIZE
    nx, ny, nz = x + dx, y + dy, z + dz
    ox = 0 if nx < 0 else (2 if nx >= s else 1)
    oy = 0 if ny < 0 else (2 if ny >= s else 1)
    oz = 0 if nz < 0 else (2 if nz >= s else 1)
    return near[b, ox * 9 + oy * 3 + oz], nx % s, ny % s, nz % s


@nb.njit(cache=True)
def _shell_zero_set(zero, outside, near, reached):
    """Mark (``reached``) the voxels of ``zero`` (those near the zero set, not outside) joined through
    such voxels (26-neighbours) to one beside the outside: the outer shell's zero set and all that
    goes on from it."""
    s = BLOCK_SIZE
    m = zero.shape[0]
    queue = np.empty(np.count_nonzero(zero), dtype=np.int64)
    tail = 0
    for b in range(m):
        for x in range(s):
            for y in range(s):
                for z in range(s):
                    if not zero[b, x, y, z]:
                        continue
                    seed = False
                    for dx in range(-1, 2):
                        for dy in range(-1, 2):
                            for dz in range(-1, 2):
                                c, nx, ny, nz = _neighbour(near, b, x, y, z, dx, dy, dz)
                                if c >= 0 and outside[c, nx, ny, nz]:
                                    seed = True
                    if seed:
                        reached[b, x, y, z] = True
                        queue[tail] = voxel_id(b, x, y, z)
                        tail += 1
    head = 0
    while head < tail:
        b, x, y, z = voxel_of(queue[head])
        head += 1
        for dx in range(-1, 2):
            for dy in range(-1, 2):
                for dz in range(-1, 2):
                    c, nx, ny, nz = _neighbour(near, b, x, y, z, dx, dy, dz)
                    if c >= 0 and zero[c, nx, ny, nz] and not reached[c, nx, ny, nz]:
                        reached[c, nx, ny, nz] = True
                        queue[tail] = voxel_id(c, nx, ny, nz)
                        tail += 1


def whole_deep_voxels(field: SparseField, flooded: Outside, deep: np.ndarray, near_zero: float,
                      band: float) -> np.ndarray:
    """``deep`` less the zero set that the outer shell's own joins (the voxels nearer it than
    ``near_zero`` voxels, 26-connected, traced from beside the outside), and ``band`` voxels around
    it: only what may contour as a whole piece inside is left to contour. Why: where bodies overlap
    (the 112 parts of the cycloidal gears) the zero set inside is mostly such, and contouring it all
    to drop it took 9.6 s of the gears' 28 at N = 512 (1.8 million faces). A cavity behind a wall
    thicker than twice ``near_zero`` is not joined."""
    keys = np.asarray(field.keys, dtype=np.int64)
    values = np.ascontiguousarray(field.values, dtype=np.float32)
    zero = ~flooded.outside & (values < np.float32(near_zero / TRUNCATION_VOXELS))
    if not (zero & deep).any():
        return zero & deep  # no zero set inside: nothing to contour
    near = neighbor_table(keys, field.coords.astype(np.int64), field.grid, NEIGHBOR_OFFSETS)
    reached = np.zeros_like(zero)
    _shell_zero_set(zero, flooded.outside, near, reached)
    cut = reached & deep
    if not cut.any():
        return deep
    return deep & ~voxels_near(field, _voxel_points(field, cut), band)


@nb.njit(cache=True)
def _crossings(vertices, faces, px, py, pz):
    """How many faces a ray from (px, py, pz) along a fixed, slightly skew direction passes through."""
    dx, dy, dz = 1.0, 0.0012345, 0.0006789  # skew: no grid-aligned edge or face lies along it
    count = 0
    for f in range(faces.shape[0]):
        a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
        e1x, e1y, e1z = vertices[b, 0] - vertices[a, 0], vertices[b, 1] - vertices[a, 1], vertices[b, 2] - vertices[a, 2]
        e2x, e2y, e2z = vertices[c, 0] - vertices[a, 0], vertices[c, 1] - vertices[a, 1], vertices[c, 2] - vertices[a, 2]
        hx, hy, hz = dy * e2z - dz * e2y, dz * e2x - dx * e2z, dx * e2y - dy * e2x
        det = e1x * hx + e1y * hy + e1z * hz
        if abs(det) < 1e-14:
            continue
        sx, sy, sz = px - vertices[a, 0], py - vertices[a, 1], pz - vertices[a, 2]
        u = (sx * hx + sy * hy + sz * hz) / det
        if u < 0.0 or u > 1.0:
            continue
        qx, qy, qz = sy * e1z - sz * e1y, sz * e1x - sx * e1z, sx * e1y - sy * e1x
        v = (dx * qx + dy * qy + dz * qz) / det
        if v < 0.0 or u + v > 1.0:
            continue
        if (e2x * qx + e2y * qy + e2z * qz) / det > 0.0:
            count += 1
    return count


def nesting_depth(vertices: np.ndarray, faces: np.ndarray, component: np.ndarray, count: int,
                  closed: np.ndarray) -> np.ndarray:
    """Per component, how many of the other ``closed`` ones (bool per component) enclose it (ray
    parity from one of its vertices)."""
    depth = np.zeros(count, dtype=np.int64)
    if count < 2:
        return depth
    order = np.argsort(component, kind="stable")
    start = np.searchsorted(component[order], np.arange(count + 1))
    own = [faces[order[start[q]:start[q + 1]]] for q in range(count)]
    low = np.array([vertices[f.ravel()].min(axis=0) for f in own])
    high = np.array([vertices[f.ravel()].max(axis=0) for f in own])
    for p in range(count):
        point = vertices[own[p][0, 0]]
        around = np.flatnonzero(closed & np.all((low <= point) & (point <= high), axis=1))  # only a box that holds it can
        for q in around[around != p]:
            depth[p] += _crossings(vertices, own[q], point[0], point[1], point[2]) % 2
    return depth


def _closed(vertices: np.ndarray, faces: np.ndarray, component: np.ndarray, count: int) -> np.ndarray:
    """Per component, whether it has no rim."""
    edges, valence = edge_valence(len(vertices), faces)
    piece_of_vertex = np.zeros(len(vertices), dtype=np.int64)
    piece_of_vertex[faces.ravel()] = np.repeat(component, 3)
    closed = np.ones(count, dtype=bool)
    closed[piece_of_vertex[edges[valence == 1].ravel()]] = False
    return closed


def inner_surfaces(field: SparseField, flooded: Outside, options: InteriorOptions = InteriorOptions()
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The pieces of the field's zero set deep inside the outer shell that are whole there (see the
    module's docstring): vertices (voxel coordinates, float64 [V, 3]) and faces (int64 [F, 3]), each
    closed piece wound away from the material it bounds."""
    options.validate()
    empty = np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    deep = whole_deep_voxels(field, flooded, deep_voxels(field, flooded, options.reach), NEAR_ZERO, BAND)
    if not deep.any():
        return empty
    vertices, faces = field_contour(field_where(field, deep), options.contour)
    if len(faces) == 0:
        return empty
    count, component = face_components(len(vertices), faces)
    edges, valence = edge_valence(len(vertices), faces)
    piece_of_vertex = np.zeros(len(vertices), dtype=np.int64)
    piece_of_vertex[faces.ravel()] = np.repeat(component, 3)
    rim = np.unique(edges[valence == 1].ravel())
    # a rim where the deep voxels end is a cut (the piece goes on towards the shell); one amid them is the sheet's own
    indicator = SparseField(field.resolution, field.keys, deep.astype(np.float32))
    cut = np.zeros(count, dtype=bool)
    cut[piece_of_vertex[rim[local_floor(indicator, vertices[rim]) < 1.0]]] = True
    cut[piece_of_vertex[edges[valence > 2].ravel()]] = True
    area = np.bincount(component, weights=face_normals_and_areas(vertices, faces)[1], minlength=count)
    kept = ~cut & (area >= options.min_area)
    if not options.open_sheets:  # closed pieces only: none of their vertices on a rim
        kept[piece_of_vertex[rim]] = False
    faces, component = faces[kept[component]], component[kept[component]]
    if len(faces) == 0:
        return empty
    vertices, faces = compact(vertices, faces)
    count, component = face_components(len(vertices), faces)
    faces = orient(vertices, faces)  # every closed piece faces out
    closed = _closed(vertices, faces, component, count)
    # a closed piece flatter than a voxel is a sheet read from both sides (where two bodies overlap)
    volume = signed_volumes(vertices, faces, component, count)
    area = np.bincount(component, weights=face_normals_and_areas(vertices, faces)[1], minlength=count)
    flat = closed & (2.0 * np.abs(volume) < options.min_thickness * area)
    if flat.any():
        faces = faces[~flat[component]]
        if len(faces) == 0:
            return empty
        vertices, faces = compact(vertices, faces)
        count, component = face_components(len(vertices), faces)
        closed = _closed(vertices, faces, component, count)
    # inside the shell and an even number of other closed pieces: a hole in the material
    cavity = closed & (nesting_depth(vertices, faces, component, count, closed) % 2 == 0)
    faces[cavity[component]] = faces[cavity[component]][:, ::-1]
    return vertices, faces


__all__ = ["InteriorOptions", "inner_surfaces", "deep_voxels", "nesting_depth", "whole_deep_voxels"]
