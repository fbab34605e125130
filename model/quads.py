"""Quads from dual contouring, kept as quads where they are flat.

Dual contouring makes one quad per crossed grid edge (:mod:`model.contour`); the clean-up works on
its two triangles. A mesh with quads is stored as a triangle mesh whose first ``2·Q`` faces are the
``Q`` quads as consecutive pairs (:mod:`model.quad_layout`). Blender's Voxel Remesh returns quads;
sculptors take them on to Multires and subdivision.

A pair of triangles becomes a quad again only when it is safe to: both come from the same grid
edge's quad (the contour left it unfanned: the input does not bend across it), they share exactly
their diagonal and no other face uses it, they wind alike, the quad is convex (the other diagonal
splits it into two triangles facing the same way), and the two triangles' normals differ by at most
:data:`MAX_QUAD_BEND_DEGREES`. Everything else stays a triangle.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from .edges import half_edge_groups, slot_groups

MAX_QUAD_BEND_DEGREES = 20.0
"""Two triangles of one contour quad whose normals differ by more than this stay two triangles: a
quad bent further shades and subdivides differently from the surface it stands for (Blender's own
Tris to Quads defaults to 40°; the contour's quads bend far less: at N=256 on the bunny, spot and
Suzanne 98–99 % of the quads that pass every other test bend by under 10°, and 20° keeps all but
0.2–0.6 % of the faces a 90° limit would join)."""


@nb.njit(cache=True, inline="always")
def _normal(vertices, p, q, r):
    """Unit normal of triangle (p, q, r) (zero for a degenerate one)."""
    ux, uy, uz = vertices[q, 0] - vertices[p, 0], vertices[q, 1] - vertices[p, 1], vertices[q, 2] - vertices[p, 2]
    vx, vy, vz = vertices[r, 0] - vertices[p, 0], vertices[r, 1] - vertices[p, 1], vertices[r, 2] - vertices[p, 2]
    nx, ny, nz = uy * vz - uz * vy, uz * vx - ux * vz, ux * vy - uy * vx
    length = np.sqrt(nx * nx + ny * ny + nz * nz)
    if length == 0.0:
        return 0.0, 0.0, 0.0
    return nx / length, ny / length, nz / length


@nb.njit(parallel=True, cache=True)
def _join_pairs(vertices, faces, first, slot_size, cos_max, quads):
    """For each pair of consecutive faces ``first[p]``, ``first[p] + 1``: the quad they make (a, d,
    c, b in winding order), or -1s where they must stay triangles (see :func:`pair_quads`)."""
    for p in nb.prange(first.shape[0]):
        quads[p, 0] = -1
        f = first[p]
        # the diagonal: t0's edge from corner k to k + 1, held by t1 the other way round
        k = -1
        j = -1
        for kk in range(3):
            a, c = faces[f, kk], faces[f, (kk + 1) % 3]
            for jj in range(3):
                if faces[f + 1, jj] == c and faces[f + 1, (jj + 1) % 3] == a:
                    k, j = kk, jj
        if k < 0 or slot_size[3 * f + k] != 2:  # no shared diagonal, or a third face on it
            continue
        a, c, b = faces[f, k], faces[f, (k + 1) % 3], faces[f, (k + 2) % 3]
        d = faces[f + 1, (j + 2) % 3]
        if a == c or a == b or c == b or d == a or d == c or d == b:
            continue
        n0 = _normal(vertices, a, c, b)
        n1 = _normal(vertices, c, a, d)
        dot = n0[0] * n1[0] + n0[1] * n1[1] + n0[2] * n1[2]
        if dot < cos_max:  # bent (or a degenerate half: its normal is zero)
            continue
        # convex: split along the other diagonal, both halves face the way the first split does
        mx, my, mz = n0[0] + n1[0], n0[1] + n1[1], n0[2] + n1[2]
        m0 = _normal(vertices, a, d, b)
        m1 = _normal(vertices, d, c, b)
        if m0[0] * mx + m0[1] * my + m0[2] * mz <= 0.0 or m1[0] * mx + m1[1] * my + m1[2] * mz <= 0.0:
            continue
        quads[p, 0], quads[p, 1], quads[p, 2], quads[p, 3] = a, d, c, b


def pair_quads(vertices: np.ndarray, faces: np.ndarray, quad_id: np.ndarray,
               max_bend_degrees: float = MAX_QUAD_BEND_DEGREES) -> tuple[np.ndarray, int]:
    """The faces reordered with the quads first (see the module's docstring), and the number of quads.

    ``quad_id``: per face, the contour quad (grid edge) it comes from, or -1 (a fanned quad's
    triangle, or one made by the clean-up). The contour emits a quad's two triangles one after the
    other and the clean-up keeps the faces' order, so a quad's halves are consecutive faces with one
    id. Faces keep their orientation; no vertex moves."""
    vertices = np.ascontiguousarray(vertices, dtype=np.float64)
    faces = np.ascontiguousarray(faces, dtype=np.int64)
    quad_id = np.asarray(quad_id, dtype=np.int64)
    if len(faces) != len(quad_id):
        raise ValueError(f"quad_id has {len(quad_id)} entries for {len(faces)} faces")
    if len(faces) < 2:
        return faces, 0
    # consecutive faces with one id, and only two of them
    same = (quad_id[:-1] == quad_id[1:]) & (quad_id[:-1] >= 0)
    alone = np.ones(len(same), dtype=bool)
    alone[1:] &= ~same[:-1]
    alone[:-1] &= ~same[1:]
    first = np.flatnonzero(same & alone)
    owner, corner, group_first, size = half_edge_groups(faces)
    slot_size = size[slot_groups(owner, corner, group_first, size, len(faces))]
    quads = np.empty((len(first), 4), dtype=np.int64)
    _join_pairs(vertices, faces, first, slot_size, float(np.cos(np.radians(max_bend_degrees))), quads)
    out, joined = _assemble(faces, first, quads)
    return out, int(joined)


@nb.njit(cache=True)
def _assemble(faces, first, quads):
    """The joined quads as pairs (p, q, r), (p, r, s), then every other face in its order."""
    joined = 0
    paired = np.zeros(faces.shape[0], dtype=np.bool_)
    for p in range(first.shape[0]):
        if quads[p, 0] >= 0:
            paired[first[p]] = True
            paired[first[p] + 1] = True
            joined += 1
    out = np.empty_like(faces)
    i = 0
    for p in range(first.shape[0]):
        if quads[p, 0] >= 0:
            out[i, 0], out[i, 1], out[i, 2] = quads[p, 0], quads[p, 1], quads[p, 2]
            out[i + 1, 0], out[i + 1, 1], out[i + 1, 2] = quads[p, 0], quads[p, 2], quads[p, 3]
            i += 2
    for f in range(faces.shape[0]):
        if not paired[f]:
            out[i, 0], out[i, 1], out[i, 2] = faces[f, 0], faces[f, 1], faces[f, 2]
            i += 1
    return out, joined


__all__ = ["MAX_QUAD_BEND_DEGREES", "pair_quads"]
