"""One surface at the exact zero set of a direct-mode field: dual contouring of the input's triangles
on the N³ grid, for open sheets.

Why not the ε-surface: around an open sheet the ε-level set of the UDF is a closed slab, and cutting
a deflated slab back to one layer (the double-cover cut of DCUDF) tears wherever the two sides do not
pair up cleanly — at the rim, at junctions, on folds. In direct mode the zero set is known exactly
(it is the input), so we contour it instead, on the very grid the field lives on:

* **Crossings.** Every grid edge (between two neighbouring voxel centres) is tested against the
  input's triangles, exactly: per axis, each triangle is rasterised onto the grid lines along that
  axis, with a tie rule that gives a line through a shared triangle edge to exactly one of the two
  triangles (canonical edge direction by position, left side wins), so no crossing is counted twice
  or lost at a seam. An edge is *crossed* when the surface meets it an odd number of times.
* **Whole by construction.** The crossed edges form a mod-2 chain: each grid face (square) has an
  even number of crossed edges around it unless the input's *boundary* passes through it. The dual
  quads (one per crossed edge, joining the 4 cells around it) therefore have an odd number of quads
  on a dual edge exactly where the input has a boundary: a closed input gives a closed output, an
  open sheet one layer whose boundary loops follow the input's, junctions stay joined (a T-junction
  of the input is a three-quad edge of the output, not a tear), and no hole appears anywhere else.
* **Vertices.** One per sheet of a cell (manifold dual contouring: Schaefer, Ju & Warren, "Manifold
  Dual Contouring", 2007): on each face of a cell the crossed edges pair up — two are one sheet, four
  are two sheets, paired the same from both cells that share the face — so where both sides of a
  part thinner than a voxel, or two pieces, pass through one cell, each keeps its own vertex and the
  output stays a 2-manifold. Each vertex sits at the minimiser of the quadric of the tangent planes
  at its crossings (Ju et al., "Dual Contouring of Hermite Data", SIGGRAPH 2002), around their mass point, with small
  eigenvalues truncated and the result kept inside the cell; sharp creases are kept. Then onto the
  nearest of the triangles that cross the cell's edges, so every vertex lies on the input. Vertices
  on the output's boundary are later put onto the input's boundary curve (its nearest point), so
  open boundaries follow the input's, not the grid's staircase.

Everything is sparse: crossings are listed per triangle, grouped by a sorted 64-bit edge key; no
N³ array is made.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numba as nb
import numpy as np

from .bvh import PrimitiveIndex, _closest_on_triangle
from .geometry import compact, roots, signed_volumes, union
from .edges import border_half_edges, half_edge_groups, slot_groups, split_groups
from .mesh import face_normals_and_areas

GRID_JITTER = np.array([0.7071067811865476, 0.5773502691896258, 0.4472135954999579]) * 1e-7
"""A fixed shift (in voxels) of the input against the grid, so that no input vertex lies exactly on a
grid line (CAD meshes and primitives put vertices at round coordinates); far below any precision
that matters for the output."""

EIGEN_CUTOFF = 0.1
"""Eigenvalues of a cell's quadric below this fraction of the largest are treated as zero: along
those directions the vertex stays at the crossings' mass point (flat and cylindrical regions)."""

BEND_TOLERANCE = 0.02
"""A quad whose two triangles pass farther than this (voxels) from the input's crossing on its grid
edge is fanned around that crossing (an input finer than the grid bends inside one cell)."""


# --- crossings -------------------------------------------------------------------------------------


@nb.njit(cache=True, inline="always")
def _edge_fn(pu, pv, qu, qv, xu, xv):
    return (qu - pu) * (xv - pv) - (qv - pv) * (xu - pu)


@nb.njit(cache=True, inline="always")
def _canonical(au, av, bu, bv):
    """The edge's endpoints in a fixed order by position (so both triangles on an edge compute the
    very same floating-point edge function)."""
    if au < bu or (au == bu and av < bv):
        return au, av, bu, bv
    return bu, bv, au, av


@nb.njit(cache=True, inline="always")
def _inside_edge(au, av, bu, bv, ru, rv, xu, xv):
    """Whether x lies on the triangle's side of edge ab (r: the third corner). On the edge itself the
    triangle to the left of the canonical direction takes the point, so exactly one of two triangles
    on opposite sides does, and both or neither when they lie on the same side (a fold in this
    projection, where the line meets the surface twice or not at all: the same parity)."""
    pu, pv, qu, qv = _canonical(au, av, bu, bv)
    side = _edge_fn(pu, pv, qu, qv, ru, rv)
    e = _edge_fn(pu, pv, qu, qv, xu, xv)
    if side > 0.0:
        return e >= 0.0
    return e < 0.0


@nb.njit(parallel=True, cache=True)
def _rasterise(tri, axis, count_only, start, keys, where, owner, m):
    """Crossings of the grid lines along ``axis`` with each triangle of ``tri`` [F, 3, 3] (voxel
    coordinates). First call counts per triangle (``start`` receives the counts); the second writes
    edge keys, crossing coordinates along the axis and the triangle index from ``start``."""
    u_axis = (axis + 1) % 3
    v_axis = (axis + 2) % 3
    for t in nb.prange(tri.shape[0]):
        au, av, aw = tri[t, 0, u_axis], tri[t, 0, v_axis], tri[t, 0, axis]
        bu, bv, bw = tri[t, 1, u_axis], tri[t, 1, v_axis], tri[t, 1, axis]
        cu, cv, cw = tri[t, 2, u_axis], tri[t, 2, v_axis], tri[t, 2, axis]
        area = _edge_fn(au, av, bu, bv, cu, cv)
        n = 0
        if area != 0.0:
            u0 = int(np.ceil(min(au, bu, cu)))
            u1 = int(np.floor(max(au, bu, cu)))
            v0 = int(np.ceil(min(av, bv, cv)))
            v1 = int(np.floor(max(av, bv, cv)))
            out = start[t]
            for iu in range(u0, u1 + 1):
                for iv in range(v0, v1 + 1):
                    xu, xv = float(iu), float(iv)
                    if not (_inside_edge(au, av, bu, bv, cu, cv, xu, xv)
                            and _inside_edge(bu, bv, cu, cv, au, av, xu, xv)
                            and _inside_edge(cu, cv, au, av, bu, bv, xu, xv)):
                        continue
                    if not count_only:
                        # barycentric weights from the sub-areas, then the crossing along the axis
                        wa = _edge_fn(bu, bv, cu, cv, xu, xv) / area
                        wb = _edge_fn(cu, cv, au, av, xu, xv) / area
                        w = wa * aw + wb * bw + (1.0 - wa - wb) * cw
                        iw = int(np.floor(w))
                        if axis == 0:
                            nx, ny, nz = iw, iu, iv
                        elif axis == 1:
                            nx, ny, nz = iv, iw, iu
                        else:
                            nx, ny, nz = iu, iv, iw
                        keys[out + n] = ((axis * m + nx) * m + ny) * m + nz
                        where[out + n] = w
                        owner[out + n] = t
                    n += 1
        if count_only:
            start[t] = n


def grid_crossings(vertices: np.ndarray, faces: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every crossing of a grid edge by a triangle: (edge key int64, coordinate along the edge's axis,
    triangle index), sorted by key. ``vertices`` in voxel coordinates, inside [0, N)."""
    tri = np.ascontiguousarray(np.asarray(vertices, dtype=np.float64)[faces] + GRID_JITTER)
    m = resolution + 1
    parts = []
    for axis in range(3):
        counts = np.zeros(len(faces), dtype=np.int64)
        _rasterise(tri, axis, True, counts, np.empty(0, np.int64), np.empty(0), np.empty(0, np.int64), m)
        start = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        total = int(counts.sum())
        keys, where, owner = np.empty(total, np.int64), np.empty(total), np.empty(total, np.int64)
        _rasterise(tri, axis, False, start, keys, where, owner, m)
        parts.append((keys, where, owner))
    # keys are axis-major, so each axis's crossings sort on their own (numpy's sort releases the GIL:
    # the three run side by side) and their concatenation is the stable sort of all of them
    with ThreadPoolExecutor(max_workers=3) as pool:
        orders = list(pool.map(lambda part: np.argsort(part[0], kind="stable"), parts))
    return tuple(np.concatenate([part[i][order] for part, order in zip(parts, orders)]) for i in range(3))


COINCIDENT = 1e-6
"""Crossings of one grid edge by two pieces closer than this (voxels) are the same point of two
coincident surfaces (overlapping coplanar faces, a sheet lying on a face), not two surfaces."""


@nb.njit(cache=True)
def _odd_runs(k, c, p, w, order, tolerance):
    """:func:`odd_edges`'s count over crossings sorted by (key ``k``, piece ``c``, patch ``p``): per
    key, one vote per piece that crosses it an odd number of times in some patch (the middle crossing
    of its first such patch); votes at one point (positions ``w`` within ``tolerance``) count once,
    and the edge is crossed when the points are odd."""
    n = k.shape[0]
    out_key = np.empty(n, dtype=k.dtype)
    out_pick = np.empty(n, dtype=np.int64)
    vote_at = np.empty(n)
    vote_pick = np.empty(n, dtype=np.int64)
    m = 0
    i = 0
    while i < n:
        j = i
        while j < n and k[j] == k[i]:
            j += 1
        votes = 0
        a = i
        while a < j:  # one piece
            b = a
            while b < j and c[b] == c[a]:
                b += 1
            x = a
            while x < b:  # one patch of it
                y = x
                while y < b and p[y] == p[x]:
                    y += 1
                if (y - x) % 2 == 1:
                    pick = x + (y - x) // 2
                    # insertion by position along the edge (a handful of votes at most)
                    v = votes
                    while v > 0 and vote_at[v - 1] > w[pick]:
                        vote_at[v] = vote_at[v - 1]
                        vote_pick[v] = vote_pick[v - 1]
                        v -= 1
                    vote_at[v] = w[pick]
                    vote_pick[v] = pick
                    votes += 1
                    break
                x = y
            a = b
        points = 0
        g = 0
        while g < votes:  # one point: votes within tolerance of each other
            h = g + 1
            while h < votes and vote_at[h] - vote_at[h - 1] <= tolerance:
                h += 1
            points += 1
            g = h
        if points % 2 == 1:
            out_key[m] = k[i]
            out_pick[m] = order[vote_pick[0]]
            m += 1
        i = j
    return out_key[:m], out_pick[:m]


@nb.njit(cache=True)
def _union_sweep(line, w, piece, weight, tolerance, out_keep, out_free):
    """:func:`union_crossings`'s sweep over the crossings of closed pieces sorted by (grid line,
    position): per line, each piece's parity (inside it or not) and the running sum ``W`` of the
    weights of the pieces one is inside. Crossings at one point (``tolerance``) are one step: it is
    kept (its first crossing) when ``W > 0`` changes across it. ``out_free[q]`` is set when a
    crossing of piece q lies outside every other piece (for the first pass, which finds cavities:
    the pieces that never are)."""
    n = line.shape[0]
    inside = np.zeros(weight.shape[0], dtype=np.bool_)
    touched = np.empty(n, dtype=np.int64)
    i = 0
    while i < n:
        j = i
        while j < n and line[j] == line[i]:
            j += 1
        total, count = 0, 0
        g = i
        while g < j:
            h = g + 1
            while h < j and w[h] - w[h - 1] <= tolerance:
                h += 1
            before = total
            for x in range(g, h):
                q = piece[x]
                own = weight[q] if inside[q] else 0
                if before - own <= 0:
                    out_free[q] = True
            for x in range(g, h):
                q = piece[x]
                if inside[q]:
                    total -= weight[q]
                else:
                    total += weight[q]
                    touched[count] = q
                    count += 1
                inside[q] = not inside[q]
            if (before > 0) != (total > 0):
                out_keep[g] = True
            g = h
        for t in range(count):
            inside[touched[t]] = False
        i = j


@nb.njit(parallel=True, cache=True)
def _line_order(keys, m):
    """Per edge key: its grid line's id and a key that sorts by line, then along it (the axis's
    coordinate moved to the least significant place)."""
    n = keys.shape[0]
    line = np.empty(n, dtype=np.int64)
    along = np.empty(n, dtype=np.int64)
    mmm = m * m * m
    for e in nb.prange(n):
        a = keys[e] // mmm
        node = keys[e] - a * mmm
        x, y, z = node // (m * m), (node // m) % m, node % m
        if a == 0:
            line[e] = a * mmm + (y * m + z) * m
            along[e] = line[e] + x
        elif a == 1:
            line[e] = a * mmm + (x * m + z) * m
            along[e] = line[e] + y
        else:
            line[e] = a * mmm + (x * m + y) * m
            along[e] = line[e] + z
    return line, along


@nb.njit(cache=True)
def _sort_runs_by(sorted_keys, value, order):
    """Within each run of equal ``sorted_keys``, reorder ``order`` (in place) by ``value[order]``:
    the few crossings of one grid edge, by position."""
    n = sorted_keys.shape[0]
    i = 0
    while i < n:
        j = i + 1
        while j < n and sorted_keys[j] == sorted_keys[i]:
            j += 1
        for x in range(i + 1, j):
            item = order[x]
            y = x
            while y > i and value[order[y - 1]] > value[item]:
                order[y] = order[y - 1]
                y -= 1
            order[y] = item
        i = j


def union_crossings(keys: np.ndarray, where: np.ndarray, piece: np.ndarray, closed_piece: np.ndarray,
                    volume: np.ndarray, m: int, tolerance: float = COINCIDENT) -> np.ndarray:
    """Which crossings to keep so that closed pieces contour as the boundary of their union: a
    closed body through another (a character's eyes in its head, parts of an assembly that
    interpenetrate) loses the walls inside the other, a body inside another body is absorbed, and
    two bodies sharing a face's plane from one side keep it once — as Blender's voxel remesh and
    every slicer read solids. A closed piece inside another whose normals point inwards (negative
    ``volume``) is a cavity and stays one. Inside-ness is each piece's own parity along the grid
    line, so a body with flipped or inconsistent winding is still a body. Open pieces (sheets) are
    kept as they are: they have no inside. ``keys``, ``where``, ``piece`` per crossing (grid order);
    ``closed_piece`` and ``volume`` per piece."""
    keep = np.ones(len(keys), dtype=bool)
    closed = closed_piece[piece]
    present = np.zeros(len(closed_piece), dtype=bool)
    present[piece[closed]] = True
    if int(np.count_nonzero(present)) < 2:
        return keep  # one body (or none): nothing to unite
    mmm = m * m * m
    bounds = np.searchsorted(keys, np.arange(4, dtype=np.int64) * mmm)  # keys are axis-major

    def lines_of(axis: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One axis's crossings of closed pieces in sweep order (an axis at a time bounds the
        scratch memory: a line never leaves its axis)."""
        index = bounds[axis] + np.flatnonzero(closed[bounds[axis]:bounds[axis + 1]])
        line, position = _line_order(keys[index], m)
        order = np.argsort(position, kind="stable")  # by line, then edge along it (radix sort: int64)
        _sort_runs_by(position[order], where[index], order)  # then by position inside one edge
        return index[order], line[order], where[index[order]], piece[index[order]]

    weight = np.ones(len(closed_piece), dtype=np.int64)
    if bool((volume[present] < 0).any()):  # a cavity is possible: find the pieces wholly inside others
        free = np.zeros(len(closed_piece), dtype=np.bool_)
        for axis in range(3):
            _, line, w, q = lines_of(axis)
            _union_sweep(line, w, q, weight, float(tolerance), np.zeros(len(q), dtype=np.bool_), free)
        # a piece wholly inside others with its normals inwards is a cavity: it takes away what holds it
        weight = np.where(~free & (volume < 0), -1, 1).astype(np.int64)
    for axis in range(3):
        index, line, w, q = lines_of(axis)
        kept = np.zeros(len(q), dtype=np.bool_)
        _union_sweep(line, w, q, weight, float(tolerance), kept, np.zeros(len(closed_piece), dtype=np.bool_))
        keep[index[~kept]] = False
    return keep


def odd_edges(keys: np.ndarray, patch: np.ndarray, piece: np.ndarray, where: np.ndarray,
              tolerance: float = COINCIDENT) -> tuple[np.ndarray, np.ndarray]:
    """(unique keys of the crossed edges, index of one crossing of each).

    Parity is counted per manifold patch of the input; the patches of one piece (joined at
    non-manifold edges: a fin on a body) cross an edge when any of them does, so a junction merges
    in its cell instead of cancelling; separate pieces combine by parity again, so two pieces that
    cross or touch (a lid on a pot, two bodies through each other) fold into each other without a
    tear. Except where two pieces cross an edge at one point (``where``, the position along the
    edge, within ``tolerance``): there the surfaces coincide and count once — overlapping coplanar
    sheets, a decal on a face. Coincident faces of closed bodies are settled before this, by
    :func:`union_crossings` (kept once where the bodies share a plane from one side, dropped where
    they face each other), so what coincides here always has a sheet among it. ``keys`` sorted;
    ``patch``, ``piece`` and ``where`` per crossing."""
    if len(keys) == 0:
        return keys, np.empty(0, dtype=np.int64)
    order = np.lexsort((patch, piece, keys))
    return _odd_runs(keys[order], piece[order], patch[order], where[order], order, float(tolerance))


# --- dual contouring -------------------------------------------------------------------------------


# A cell's 12 edges, numbered axis · 4 + du · 2 + dv (du, dv: the edge's offset along the axis's u =
# axis + 1 and v = axis + 2). The k-th of the 4 cells around a crossed edge (see dual_contour) holds
# it as its local edge axis · 4 + CORNER_LOCAL[k].
CORNER_LOCAL = np.array([3, 1, 0, 2], dtype=np.int64)

PARALLEL_SLICES = 256
"""Slices a per-cell loop is cut into for the cores, each with its own scratch arrays."""


@nb.njit(cache=True, inline="always")
def _find(parent, i):
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@nb.njit(cache=True, inline="always")
def _join(parent, a, b):
    ra, rb = _find(parent, a), _find(parent, b)
    if ra != rb:
        parent[max(ra, rb)] = min(ra, rb)


@nb.njit(cache=True, inline="always")
def _gap(points, a, b):
    return np.sqrt((points[a, 0] - points[b, 0]) ** 2 + (points[a, 1] - points[b, 1]) ** 2
                   + (points[a, 2] - points[b, 2]) ** 2)


@nb.njit(cache=True, inline="always")
def _pair_cell(c, local, points, piece, patch, parent, ids):
    """:func:`_cell_patches` for cell ``c``, with the scratch ``parent`` [12] and ``ids`` [4]."""
    for i in range(12):
        parent[i] = i
    for f in range(3):
        pa, qa = (f + 1) % 3, (f + 2) % 3
        for s in range(2):
            # the face's edges in cyclic order: along p at q = 0, along q at p = 1, along p at
            # q = 1, along q at p = 0
            e0, e1, e2, e3 = pa * 4 + s, qa * 4 + s * 2 + 1, pa * 4 + 2 + s, qa * 4 + s * 2
            ids[0], ids[1], ids[2], ids[3] = local[c, e0], local[c, e1], local[c, e2], local[c, e3]
            crossed = (ids[0] >= 0) + (ids[1] >= 0) + (ids[2] >= 0) + (ids[3] >= 0)
            if crossed == 4:
                same1 = piece[ids[0]] == piece[ids[1]] and piece[ids[2]] == piece[ids[3]]
                same2 = piece[ids[1]] == piece[ids[2]] and piece[ids[3]] == piece[ids[0]]
                if same1 != same2:
                    first = same1
                else:
                    cost1 = _gap(points, ids[0], ids[1]) + _gap(points, ids[2], ids[3])
                    cost2 = _gap(points, ids[1], ids[2]) + _gap(points, ids[3], ids[0])
                    first = cost1 <= cost2
                if first:
                    _join(parent, e0, e1)
                    _join(parent, e2, e3)
                else:
                    _join(parent, e1, e2)
                    _join(parent, e3, e0)
            elif crossed >= 2:
                last = -1
                for e in (e0, e1, e2, e3):
                    if local[c, e] >= 0:
                        if last >= 0:
                            _join(parent, last, e)
                        last = e
    for i in range(12):
        patch[c, i] = _find(parent, i) if local[c, i] >= 0 else -1


@nb.njit(parallel=True, cache=True)
def _cell_patches(local, points, piece, patch):
    """Per cell, which of its crossed edges belong to one sheet of the surface (manifold dual
    contouring, Schaefer, Ju & Warren 2007). On each face of the cell the crossed edges pair up: two
    are one sheet passing through the face; four are two sheets, and the pairing — the same seen
    from both cells that share the face, since it depends on the face's crossings alone — keeps
    crossings of one input piece together, else cuts off the two corners whose crossings lie
    closest; three (an open boundary passing through the face) stay one sheet, as before. ``local``
    [C, 12]: crossing id per local edge or −1; out: ``patch`` [C, 12], the local edge that
    represents each crossed edge's sheet."""
    count = local.shape[0]
    step = (count + PARALLEL_SLICES - 1) // PARALLEL_SLICES
    for part in nb.prange(PARALLEL_SLICES):  # cells are independent: slices with their own scratch
        parent = np.empty(12, dtype=np.int64)
        ids = np.empty(4, dtype=np.int64)
        for c in range(part * step, min(count, (part + 1) * step)):
            _pair_cell(c, local, points, piece, patch, parent, ids)


@nb.njit(cache=True)
def _jacobi3(a, vectors):
    """Eigen-decomposition of a symmetric 3×3 matrix in place (cyclic Jacobi): the diagonal of ``a``
    holds the eigenvalues, the columns of ``vectors`` the eigenvectors."""
    for i in range(3):
        for j in range(3):
            vectors[i, j] = 1.0 if i == j else 0.0
    for _ in range(12):
        off = a[0, 1] * a[0, 1] + a[0, 2] * a[0, 2] + a[1, 2] * a[1, 2]
        if off < 1e-22:
            break
        for p in range(2):
            for q in range(p + 1, 3):
                if abs(a[p, q]) < 1e-30:
                    continue
                theta = (a[q, q] - a[p, p]) / (2.0 * a[p, q])
                t = (1.0 if theta >= 0 else -1.0) / (abs(theta) + np.sqrt(theta * theta + 1.0))
                c = 1.0 / np.sqrt(t * t + 1.0)
                s = t * c
                for k in range(3):  # A ← Jᵀ A J
                    akp, akq = a[k, p], a[k, q]
                    a[k, p] = c * akp - s * akq
                    a[k, q] = s * akp + c * akq
                for k in range(3):
                    apk, aqk = a[p, k], a[q, k]
                    a[p, k] = c * apk - s * aqk
                    a[q, k] = s * apk + c * aqk
                for k in range(3):
                    vkp, vkq = vectors[k, p], vectors[k, q]
                    vectors[k, p] = c * vkp - s * vkq
                    vectors[k, q] = s * vkp + c * vkq


@nb.njit(parallel=True, cache=True)
def _edge_points(edges, where, m):
    """Per crossed edge: its axis and its crossing point (voxel coordinates)."""
    count = edges.shape[0]
    axis = np.empty(count, dtype=np.int64)
    points = np.empty((count, 3))
    mmm = m * m * m
    for e in nb.prange(count):
        a = edges[e] // mmm
        node = edges[e] - a * mmm
        axis[e] = a
        points[e, 0] = node // (m * m)
        points[e, 1] = (node // m) % m
        points[e, 2] = node % m
        points[e, a] = where[e]
    return axis, points


@nb.njit(cache=True)
def _cells_around(edges, m):
    """The grid cells around the crossed edges: their sorted keys, and per edge the index of each of
    its 4 cells, counter-clockwise about +axis (node − e_u − e_v, node − e_v, node, node − e_u).
    ``edges`` is sorted by (axis, node), so for one axis and one of the 4 corners the cell keys are
    sorted too: a merge of 12 sorted runs, not a sort of 4E keys."""
    count = edges.shape[0]
    mmm = m * m * m
    unit = np.array([m * m, m, 1], dtype=np.int64)  # a step along x, y, z in a key
    run_pos = np.empty(12, dtype=np.int64)
    run_end = np.empty(12, dtype=np.int64)
    run_offset = np.empty(12, dtype=np.int64)
    for a in range(3):
        first = np.searchsorted(edges, a * mmm)
        last = np.searchsorted(edges, (a + 1) * mmm)
        e_u, e_v = unit[(a + 1) % 3], unit[(a + 2) % 3]
        for k in range(4):
            r = a * 4 + k
            run_pos[r], run_end[r] = first, last
            run_offset[r] = a * mmm + (e_u + e_v if k == 0 else e_v if k == 1 else 0 if k == 2 else e_u)
    cells = np.empty(4 * count, dtype=np.int64)
    cell_of = np.empty((count, 4), dtype=np.int64)
    n = 0
    while True:
        best, best_run = np.int64(-1), -1
        for r in range(12):
            if run_pos[r] < run_end[r]:
                key = edges[run_pos[r]] - run_offset[r]
                if best_run < 0 or key < best:
                    best, best_run = key, r
        if best_run < 0:
            break
        if n == 0 or cells[n - 1] != best:
            cells[n] = best
            n += 1
        cell_of[run_pos[best_run], best_run % 4] = n - 1
        run_pos[best_run] += 1
    return cells[:n], cell_of


@nb.njit(parallel=True, cache=True)
def _sheet_vertices(cell_of, axis, points, piece, num_cells, corner_local):
    """One vertex per sheet of a cell: (per edge, its quad's 4 vertex ids [E, 4]; per vertex, its
    cell). Vertices are numbered by cell, then by the sheet's lowest local edge."""
    local = np.full((num_cells, 12), -1, dtype=np.int64)
    for e in nb.prange(cell_of.shape[0]):  # each (cell, local edge) is one grid edge: no two writes meet
        for k in range(4):
            local[cell_of[e, k], axis[e] * 4 + corner_local[k]] = e
    patch = np.empty_like(local)
    _cell_patches(local, points, piece, patch)
    sheets = np.zeros(num_cells + 1, dtype=np.int64)
    for c in nb.prange(num_cells):
        for i in range(12):
            if patch[c, i] == i:
                sheets[c + 1] += 1
    base = np.cumsum(sheets)
    vertex_cell = np.empty(base[num_cells], dtype=np.int64)
    vertex_of = np.empty_like(local)  # per cell and local edge: the vertex of its sheet
    for c in nb.prange(num_cells):
        rank = base[c]
        for i in range(12):
            if patch[c, i] == i:
                vertex_of[c, i] = rank
                vertex_cell[rank] = c
                rank += 1
        for i in range(12):
            if patch[c, i] >= 0:
                vertex_of[c, i] = vertex_of[c, patch[c, i]]
    quads = np.empty_like(cell_of)
    for e in nb.prange(cell_of.shape[0]):
        for k in range(4):
            quads[e, k] = vertex_of[cell_of[e, k], axis[e] * 4 + corner_local[k]]
    return quads, vertex_cell


@nb.njit(cache=True, inline="always")
def _quadric_vertex(acc, cx, cy, cz, cutoff):
    """The minimiser of a cell's quadric (``acc``: Σ n nᵀ (6), Σ n (n·p) (3), Σ p (3), count) nearest
    the crossings' mass point, kept inside the cell (corner ``cx, cy, cz``)."""
    k = acc[12]
    mx, my, mz = acc[9] / k, acc[10] / k, acc[11] / k
    a = np.empty((3, 3))
    a[0, 0], a[0, 1], a[0, 2] = acc[0], acc[1], acc[2]
    a[1, 0], a[1, 1], a[1, 2] = acc[1], acc[3], acc[4]
    a[2, 0], a[2, 1], a[2, 2] = acc[2], acc[4], acc[5]
    # right-hand side around the mass point: Σ n (n·p) − A m
    rx = acc[6] - (a[0, 0] * mx + a[0, 1] * my + a[0, 2] * mz)
    ry = acc[7] - (a[1, 0] * mx + a[1, 1] * my + a[1, 2] * mz)
    rz = acc[8] - (a[2, 0] * mx + a[2, 1] * my + a[2, 2] * mz)
    vectors = np.empty((3, 3))
    _jacobi3(a, vectors)
    largest = max(a[0, 0], a[1, 1], a[2, 2])
    x, y, z = mx, my, mz
    for e in range(3):
        lam = a[e, e]
        if lam <= cutoff * largest or lam <= 0.0:
            continue
        vx, vy, vz = vectors[0, e], vectors[1, e], vectors[2, e]
        coef = (vx * rx + vy * ry + vz * rz) / lam
        x += coef * vx
        y += coef * vy
        z += coef * vz
    return min(max(x, cx), cx + 1.0), min(max(y, cy), cy + 1.0), min(max(z, cz), cz + 1.0)


@nb.njit(parallel=True, cache=True)
def _place_vertices(quads, num_vertices, vertex_cell_key, points, normals, source, tri, m, cutoff):
    """Each sheet's vertex: the minimiser of the quadric of the tangent planes at its crossings
    (:func:`_quadric_vertex`), then onto the nearest of the input triangles that cross them (the
    minimiser is off a curved surface by its curvature times a cell², and the cell's crossings name
    the triangles to look at: no search)."""
    # the edges of each vertex, in edge order (so the sums run in a fixed order)
    start = np.zeros(num_vertices + 1, dtype=np.int64)
    for e in range(quads.shape[0]):
        for k in range(4):
            start[quads[e, k] + 1] += 1
    start = np.cumsum(start)
    fill = start[:-1].copy()
    edge_list = np.empty(start[num_vertices], dtype=np.int64)
    for e in range(quads.shape[0]):
        for k in range(4):
            v = quads[e, k]
            edge_list[fill[v]] = e
            fill[v] += 1
    out = np.empty((num_vertices, 3))
    for v in nb.prange(num_vertices):
        acc = np.zeros(13)
        for j in range(start[v], start[v + 1]):
            e = edge_list[j]
            px, py, pz = points[e, 0], points[e, 1], points[e, 2]
            nx, ny, nz = normals[e, 0], normals[e, 1], normals[e, 2]
            d = nx * px + ny * py + nz * pz
            acc[0] += nx * nx
            acc[1] += nx * ny
            acc[2] += nx * nz
            acc[3] += ny * ny
            acc[4] += ny * nz
            acc[5] += nz * nz
            acc[6] += nx * d
            acc[7] += ny * d
            acc[8] += nz * d
            acc[9] += px
            acc[10] += py
            acc[11] += pz
            acc[12] += 1.0
        key = vertex_cell_key[v]
        p0, p1, p2 = _quadric_vertex(acc, float(key // (m * m)), float((key // m) % m), float(key % m), cutoff)
        best = np.inf
        b0, b1, b2 = p0, p1, p2
        for j in range(start[v], start[v + 1]):
            t = source[edge_list[j]]
            x, y, z = _closest_on_triangle(p0, p1, p2, tri[t, 0, 0], tri[t, 0, 1], tri[t, 0, 2], tri[t, 1, 0], tri[t, 1, 1],
                                           tri[t, 1, 2], tri[t, 2, 0], tri[t, 2, 1], tri[t, 2, 2])
            d = (x - p0) ** 2 + (y - p1) ** 2 + (z - p2) ** 2
            if d < best:
                best, b0, b1, b2 = d, x, y, z
        out[v, 0], out[v, 1], out[v, 2] = b0, b1, b2
    return out


@nb.njit(cache=True, inline="always")
def _chord_error(vertices, points, e, i, j, k):
    """Distance from the crossing of edge ``e`` to triangle (i, j, k) of the output."""
    p0, p1, p2 = points[e, 0], points[e, 1], points[e, 2]
    x, y, z = _closest_on_triangle(p0, p1, p2, vertices[i, 0], vertices[i, 1], vertices[i, 2], vertices[j, 0],
                                   vertices[j, 1], vertices[j, 2], vertices[k, 0], vertices[k, 1], vertices[k, 2])
    return (x - p0) ** 2 + (y - p1) ** 2 + (z - p2) ** 2


@nb.njit(parallel=True, cache=True)
def _triangulate(quads, axis, normals, points, vertices, tolerance):
    """The quads as triangles, oriented like the input's normal at their crossing and split along the
    shorter diagonal; where the two triangles pass farther than ``tolerance`` from the crossing (the
    input bends within a cell), the crossing becomes a fifth vertex and the quad a fan of four — a
    subdivision inside the quad, so the quads' shared edges, and with them the output's wholeness,
    are untouched. Returns (faces, index of the edge each face comes from, edges fanned)."""
    count = quads.shape[0]
    ordered = np.empty_like(quads)
    bent = np.zeros(count, dtype=np.bool_)
    split02 = np.empty(count, dtype=np.bool_)
    for e in nb.prange(count):
        for k in range(4):
            ordered[e, k] = quads[e, 3 - k] if normals[e, axis[e]] < 0 else quads[e, k]
        q0, q1, q2, q3 = ordered[e, 0], ordered[e, 1], ordered[e, 2], ordered[e, 3]
        d02 = ((vertices[q0, 0] - vertices[q2, 0]) ** 2 + (vertices[q0, 1] - vertices[q2, 1]) ** 2
               + (vertices[q0, 2] - vertices[q2, 2]) ** 2)
        d13 = ((vertices[q1, 0] - vertices[q3, 0]) ** 2 + (vertices[q1, 1] - vertices[q3, 1]) ** 2
               + (vertices[q1, 2] - vertices[q3, 2]) ** 2)
        split02[e] = np.sqrt(d02) <= np.sqrt(d13)  # as lengths: ties (common on CAD input) split alike
        if split02[e]:
            err = min(_chord_error(vertices, points, e, q0, q1, q2), _chord_error(vertices, points, e, q0, q2, q3))
        else:
            err = min(_chord_error(vertices, points, e, q1, q2, q3), _chord_error(vertices, points, e, q1, q3, q0))
        bent[e] = np.sqrt(err) > tolerance
    first = np.zeros(count + 1, dtype=np.int64)  # first face of each edge
    centre = np.zeros(count + 1, dtype=np.int64)  # fifth vertices before each edge
    for e in range(count):
        first[e + 1] = first[e] + (4 if bent[e] else 2)
        centre[e + 1] = centre[e] + (1 if bent[e] else 0)
    faces = np.empty((first[count], 3), dtype=np.int64)
    from_edge = np.empty(first[count], dtype=np.int64)
    fanned = np.empty(centre[count], dtype=np.int64)
    base = vertices.shape[0]
    for e in nb.prange(count):
        f = first[e]
        q = ordered[e]
        if bent[e]:
            fanned[centre[e]] = e
            for k in range(4):
                faces[f + k, 0], faces[f + k, 1], faces[f + k, 2] = q[k], q[(k + 1) % 4], base + centre[e]
                from_edge[f + k] = e
        else:
            if split02[e]:
                faces[f, 0], faces[f, 1], faces[f, 2] = q[0], q[1], q[2]
                faces[f + 1, 0], faces[f + 1, 1], faces[f + 1, 2] = q[0], q[2], q[3]
            else:
                faces[f, 0], faces[f, 1], faces[f, 2] = q[1], q[2], q[3]
                faces[f + 1, 0], faces[f + 1, 1], faces[f + 1, 2] = q[1], q[3], q[0]
            from_edge[f], from_edge[f + 1] = e, e
    return faces, from_edge, fanned


def dual_contour(vertices: np.ndarray, faces: np.ndarray, resolution: int,
                 topology: "InputTopology | None" = None,
                 bend_tolerance: float = BEND_TOLERANCE) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The zero set of ``faces`` as a dual-contoured triangle mesh on the N³ grid (voxel coordinates
    in and out), per output triangle the input face it came from, and per output triangle the quad
    (crossed grid edge) it halves, or -1 where that quad was fanned (:mod:`model.quads` joins the
    halves again). Whole by construction (see the module's docstring); not yet tidied — see
    :func:`tidy_contour`. ``topology``: the input's :class:`InputTopology`, when the caller has it;
    ``bend_tolerance``: the chordal error (voxels) above which a quad gets its crossing as a fifth
    vertex."""
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    empty = np.empty((0, 3)), np.empty((0, 3), dtype=np.int64), np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    if len(faces) == 0:
        return empty
    keys, where, owner = grid_crossings(vertices, faces, resolution)
    topology = topology or InputTopology.of(vertices, faces)
    m = resolution + 1
    keep = union_crossings(keys, where, topology.piece[owner], ~topology.open_piece, topology.volume(vertices, faces), m)
    if not keep.all():
        keys, where, owner = keys[keep], where[keep], owner[keep]
    edges, pick = odd_edges(keys, topology.patch[owner], topology.piece[owner], where)
    if len(edges) == 0:
        return empty
    source = owner[pick]  # the input triangle crossing each edge
    axis, points = _edge_points(edges, where[pick], m)
    normals = face_normals_and_areas(vertices, faces)[0][source]  # of the input triangle at each crossing
    cells, cell_of = _cells_around(edges, m)
    # one vertex per sheet of a cell, not per cell: where two sheets pass through one cell (a part
    # thinner than a voxel, two pieces touching) each keeps its own vertex, and the output's edges
    # stay manifold
    quads, vertex_cell = _sheet_vertices(cell_of, axis, points, topology.piece[source], len(cells), CORNER_LOCAL)
    del cell_of
    out_vertices = _place_vertices(quads, len(vertex_cell), cells[vertex_cell], points, normals, source,
                                   np.ascontiguousarray(vertices[faces]), m, EIGEN_CUTOFF)
    out_faces, from_edge, fanned = _triangulate(quads, axis, normals, points, out_vertices, bend_tolerance)
    out_vertices = np.concatenate([out_vertices, points[fanned]])
    is_fanned = np.zeros(len(edges), dtype=bool)
    is_fanned[fanned] = True
    per_face = np.stack([source[from_edge], np.where(is_fanned[from_edge], -1, from_edge)], axis=1)
    out_faces, per_face = collapse_zero_edges(out_vertices, out_faces, per_face)
    return out_vertices, out_faces, per_face[:, 0], per_face[:, 1]


@nb.njit(parallel=True, cache=True)
def _zero_edges(vertices, faces):
    """Per face and edge k (corner k to k + 1): whether it joins two distinct vertices at one point."""
    out = np.zeros(faces.shape, dtype=np.bool_)
    for f in nb.prange(faces.shape[0]):
        for k in range(3):
            a, b = faces[f, k], faces[f, (k + 1) % 3]
            out[f, k] = a != b and vertices[a, 0] == vertices[b, 0] and vertices[a, 1] == vertices[b, 1] \
                and vertices[a, 2] == vertices[b, 2]
    return out


@nb.njit(parallel=True, cache=True)
def _faces_at(faces, marked):
    """Faces with a corner at a marked vertex."""
    out = np.zeros(faces.shape[0], dtype=np.bool_)
    for f in nb.prange(faces.shape[0]):
        out[f] = marked[faces[f, 0]] or marked[faces[f, 1]] or marked[faces[f, 2]]
    return out


def collapse_zero_edges(vertices: np.ndarray, faces: np.ndarray, source: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Faces (and ``source``: any per-face rows, e.g. their source faces) with each edge of zero length collapsed: where two cells'
    vertices land on the same input point (a sharp corner of the input nearest to both), the two
    triangles on that edge have no area. An edge is collapsed only when its ends share no neighbour
    but the two triangles' third corners, themselves not joined (the link condition), so the surface
    stays a manifold; the few others keep their zero-area triangles. Vertices left unused are
    dropped by the clean-up's compaction."""
    faces = np.ascontiguousarray(faces, dtype=np.int64)
    zero = _zero_edges(np.ascontiguousarray(vertices, dtype=np.float64), faces)
    face = np.flatnonzero(zero.any(axis=1))  # a handful of faces: no [F, 3] nonzero
    if len(face) == 0:
        return faces, source
    row, k = np.nonzero(zero[face])
    face = face[row]
    ends = np.stack([faces[face, k], faces[face, (k + 1) % 3]], axis=1)
    pairs = np.unique(np.sort(ends, axis=1), axis=0)
    marked = np.zeros(len(vertices), dtype=bool)
    marked[pairs.ravel()] = True
    around = np.flatnonzero(_faces_at(faces, marked))  # the faces at the vertices concerned
    rows = {t: faces[t].copy() for t in around.tolist()}  # the only faces that can change
    faces_of: dict[int, set[int]] = {}
    for t, row in rows.items():
        for v in row.tolist():
            faces_of.setdefault(v, set()).add(t)

    def neighbours(v: int) -> set[int]:
        return {int(w) for t in faces_of.get(v, ()) for w in rows[t]} - {v}

    dead: list[int] = []
    for a, b in pairs.tolist():
        on_edge = faces_of.get(a, set()) & faces_of.get(b, set())
        corners = {int(w) for t in on_edge for w in rows[t]} - {a, b}
        if len(on_edge) != 2 or len(corners) != 2 or neighbours(a) & neighbours(b) != corners:
            continue
        x, y = corners
        if y in neighbours(x):  # the collapse would lay two triangles on x-y (a tetrahedron's case)
            continue
        for t in on_edge:
            dead.append(t)
            for w in rows[t].tolist():
                faces_of[w].discard(t)
        for t in faces_of.pop(b, set()):
            rows[t][rows[t] == b] = a
            faces_of[a].add(t)
    if not dead:
        return faces, source
    alive = np.ones(len(faces), dtype=bool)
    alive[dead] = False
    kept = np.flatnonzero(alive)
    out = faces[kept]  # the one copy of the faces
    changed = np.array([t for t in rows if alive[t]], dtype=np.int64)
    out[np.searchsorted(kept, changed)] = np.array([rows[t] for t in changed.tolist()], dtype=np.int64).reshape(-1, 3)
    return out, source[kept]


# --- boundaries and pieces -------------------------------------------------------------------------


def weld(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge vertices with identical coordinates (files split vertices at UV and normal seams, which
    would otherwise read as boundaries)."""
    rows = np.ascontiguousarray(vertices, dtype=np.float64) + 0.0  # -0.0 becomes 0.0
    # one 24-byte key per row: a single sort instead of numpy's three-column lexsort
    unique, first, inverse = np.unique(rows.view(np.dtype((np.void, 24))).ravel(), return_index=True, return_inverse=True)
    return rows[first], inverse.reshape(-1)[faces]




def distinct_faces(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """The faces without repeats: a face whose corners (welded: files split vertices at seams) are
    those of an earlier face, in either winding, is dropped. Double-sided game and CAD exports carry
    every face twice, and two copies of a face cross the same grid edges, so by parity they cancel
    and the surface would vanish; one copy is the sheet of material."""
    faces = np.asarray(faces, dtype=np.int64)
    if len(faces) == 0:
        return faces
    _, welded = weld(vertices, faces)
    corners = np.sort(welded, axis=1)
    keys = np.ascontiguousarray(corners).view(np.dtype((np.void, 24))).ravel()
    _, first = np.unique(keys, return_index=True)
    if len(first) == len(faces):
        return faces
    return faces[np.sort(first)]


@dataclass
class InputTopology:
    """What the contouring needs to know about the input's connectivity, computed once (after
    welding vertices with identical coordinates: files split them at UV and normal seams, which
    would otherwise read as boundaries).

    ``patch``/``piece`` per face: patches are joined across edges that an even number of faces share
    (two: a manifold edge; four: two surfaces touching along it, a mod-2 cycle all the same),
    pieces across any shared edge (see :func:`odd_edges` for why both). ``welded_vertices`` and the
    input's ``boundary`` (edges of one face) and ``junctions`` (edges of three or more) as segments
    [S, 2] into them."""

    patch: np.ndarray
    piece: np.ndarray
    welded_vertices: np.ndarray
    boundary: np.ndarray
    junctions: np.ndarray
    open_piece: np.ndarray
    """Per piece: whether it has a boundary edge (a sheet, not the boundary of a solid)."""

    @classmethod
    def of(cls, vertices: np.ndarray, faces: np.ndarray) -> "InputTopology":
        welded_vertices, welded = weld(vertices, faces)
        owner, corner, first, size = half_edge_groups(welded)
        even = size % 2 == 0
        patch = _edge_pieces(len(faces), owner, first[even], size[even], np.ones(len(faces), dtype=bool))
        piece = _edge_pieces(len(faces), owner, first, size, np.ones(len(faces), dtype=bool))
        ends = np.stack([welded[owner[first], corner[first]], welded[owner[first], (corner[first] + 1) % 3]], axis=1)
        open_piece = np.zeros(int(piece.max()) + 1 if len(piece) else 0, dtype=bool)
        open_piece[piece[owner[first[size == 1]]]] = True
        return cls(patch=patch, piece=piece, welded_vertices=welded_vertices, boundary=ends[size == 1],
                   junctions=ends[size >= 3], open_piece=open_piece)

    def volume(self, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
        """Signed volume of each piece (positive: normals out; meaningful for closed pieces)."""
        return signed_volumes(vertices, faces, self.piece, len(self.open_piece))

    @property
    def closed(self) -> bool:
        return len(self.boundary) == 0

    def boundary_index(self) -> PrimitiveIndex | None:
        return PrimitiveIndex(self.welded_vertices, self.boundary) if len(self.boundary) else None

    def junction_index(self) -> PrimitiveIndex | None:
        return PrimitiveIndex(self.welded_vertices, self.junctions) if len(self.junctions) else None

    def boundary_corners(self) -> np.ndarray:
        """The points [K, 3] where the input's boundary turns by more than :data:`CORNER_TURN`, or
        meets itself (three or more boundary edges at a vertex), and no other such point lies within
        :data:`CORNER_SPACING`: the corners that an output boundary on the N³ grid can follow."""
        if len(self.boundary) == 0:
            return np.empty((0, 3))
        ends = np.concatenate([self.boundary, self.boundary[:, ::-1]])
        ends = ends[np.argsort(ends[:, 0], kind="stable")]
        vertex, start, count = np.unique(ends[:, 0], return_index=True, return_counts=True)
        corner = count != 2
        two = np.flatnonzero(count == 2)
        p = self.welded_vertices[vertex[two]]
        d_in = p - self.welded_vertices[ends[start[two], 1]]
        d_out = self.welded_vertices[ends[start[two] + 1, 1]] - p
        norms = np.linalg.norm(d_in, axis=1) * np.linalg.norm(d_out, axis=1)
        cos = np.einsum("ij,ij->i", d_in, d_out) / np.where(norms > 0, norms, 1.0)
        corner[two] = (norms > 0) & (cos < np.cos(CORNER_TURN))
        points = self.welded_vertices[vertex[corner]]
        if len(points) < 2:
            return points
        from scipy.spatial import cKDTree

        crowded = np.array([len(near) > 1 for near in cKDTree(points).query_ball_point(points, CORNER_SPACING)])
        return points[~crowded]


DETACH_DISTANCE = 1.5
"""An output edge shared by three faces within this many voxels of the input's boundary is a sheet
whose boundary runs through a cell of another sheet (one vertex per cell joins them there): the odd
face is detached, so the boundary stays one loop instead of breaking into pieces at every contact."""

FRAGMENT_EDGES = 4
"""See :func:`trim_fragments`."""

CRUMB_RATIO = 0.01
"""See :func:`drop_crumbs`."""

SNAP_DISTANCE = 2.0
"""Output boundary vertices are put onto the input's boundary when it is at most this far (voxels)."""

CORNER_DISTANCE = 1.0
"""Voxels: a corner of the input's boundary takes the nearest output boundary vertex this close (see
:func:`snap_boundary`)."""

CORNER_TURN = np.deg2rad(30.0)
"""The input's boundary turns by more than this at a corner (see :meth:`InputTopology.boundary_corners`)."""

FLAT_EAR_ROUNDS = 8
"""Rounds of :func:`flat_ears` at most (a flat strip along a straight rim is peeled one face a round)."""

EAR_REACH = 6.0
"""Voxels: output boundary vertices farther than this from the input's rim are not in a gap that
:func:`fill_rim_gaps` closes."""

FLAT_TURN = 1e-3
"""Voxels²: a corner of a gap that turns the wrong way by less than this is flat (see :func:`_ear_clip`)."""

GAP_EDGES = 6
"""Output boundary edges at most in a gap that :func:`fill_rim_gaps` closes."""

CORNER_SPACING = 2.0
"""Voxels: a corner with another within this distance is not one the grid can show (a jagged scan
rim, a fine curve): it is left to the nearest-point snap."""


def _fins(vertices: np.ndarray, faces: np.ndarray, near: np.ndarray, groups=None):
    """Edges shared by three faces with an end near the input's boundary: (half-edge ids [T, 3] of
    their faces, which two of the three continue each other [T, 2]), plus the half-edge tables."""
    owner, corner, first, size = groups if groups is not None else half_edge_groups(faces)
    three = np.flatnonzero(size == 3)
    start_vertex = faces[owner[first[three]], corner[first[three]]]
    end_vertex = faces[owner[first[three]], (corner[first[three]] + 1) % 3]
    three = three[near[start_vertex] | near[end_vertex]]
    h = first[three][:, None] + np.arange(3)[None, :]
    f = owner[h]
    normals = face_normals_and_areas(vertices, faces[f.ravel()])[0].reshape(len(three), 3, 3)
    forward = faces[f, corner[h]] == faces[f[:, :1], corner[h[:, :1]]]  # same start as the first face
    best = np.full(len(three), -np.inf)
    pair = np.zeros((len(three), 2), dtype=np.int64)
    for i, j in ((0, 1), (0, 2), (1, 2)):  # continuing faces run opposite ways along the edge
        score = np.where(forward[:, i] != forward[:, j], 0.0, -10.0) + np.einsum("ij,ij->i", normals[:, i], normals[:, j])
        better = score > best
        best[better] = score[better]
        pair[better] = (i, j)
    return h, pair, (owner, corner, first, size)


def detach_at_boundary(vertices: np.ndarray, faces: np.ndarray, near: np.ndarray,
                       groups=None) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple]:
    """Split the output where a sheet's boundary runs through a cell of another sheet.

    ``near``: per vertex, whether it lies near the input's boundary. At each edge shared by three
    faces with an end near, the two faces that continue each other (opposite directions along the
    edge, normals most alike) stay joined and the third is cut loose; every other edge keeps all its
    faces joined, and the vertices at such edges are duplicated per group of faces still joined
    around them. A third face that stays attached through its other edges (a fin folded round the
    vertex) is removed: it lies on the boundary, so the notch joins the boundary loop. Returns the
    vertices, the faces (same order: face ids stay valid), which faces are alive (removed fins are
    not) and the new faces' half-edge groups, regrouped only around the cut vertices. ``groups``:
    the faces' :func:`model.edges.half_edge_groups`, when the caller has them."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    alive = np.ones(len(faces), dtype=bool)
    groups = groups if groups is not None else half_edge_groups(faces)
    if len(faces) == 0:
        return vertices, faces, alive, groups
    h, pair, (owner, corner, first, size) = _fins(vertices, faces, near, groups)
    if len(h) == 0:
        return vertices, faces, alive, groups
    rows = np.arange(len(h))
    third = h[rows, 3 - pair[:, 0] - pair[:, 1]]
    cut_vertices = np.unique(np.concatenate([faces[owner[third], corner[third]], faces[owner[third], (corner[third] + 1) % 3]]))
    affected = np.zeros(len(vertices), dtype=bool)
    affected[cut_vertices] = True
    # everything below happens among the faces at cut vertices: their corners are the only ones
    # that can part, and every edge at a cut vertex has all its faces among them
    local_faces = np.flatnonzero(_faces_at(faces, affected))
    local = faces[local_faces]
    slot_group = slot_groups(owner, corner, first, size, len(faces))
    at_cut_edge = affected[local] | affected[np.roll(local, -1, axis=1)]  # edge k of a local face
    touched = np.unique(slot_group[(3 * local_faces[:, None] + np.arange(3))[at_cut_edge]])
    touched = touched[size[touched] >= 2]

    def local_slot(half: np.ndarray, k: np.ndarray) -> np.ndarray:  # grouped half-edge, its corner k
        return 3 * np.searchsorted(local_faces, owner[half]) + k

    # at each touched edge the first face joins the others, except at the three-face edges, where
    # only the pair that continues each other joins (whichever face comes first there: the cut
    # must not depend on the order of the faces)
    member = np.repeat(touched, size[touched])
    half = first[member] + (np.arange(len(member)) - np.repeat(np.cumsum(size[touched]) - size[touched], size[touched]))
    lead = first[member]
    at_fin = np.zeros(len(owner), dtype=bool)
    at_fin[h.ravel()] = True
    joined = (half != lead) & ~at_fin[half]
    ha = np.concatenate([lead[joined], h[rows, pair[:, 0]]])
    hb = np.concatenate([half[joined], h[rows, pair[:, 1]]])
    ka, kb = corner[ha], corner[hb]
    va = faces[owner[ha], ka]
    same_start = faces[owner[hb], kb] == va
    src = np.concatenate([local_slot(ha, ka), local_slot(ha, (ka + 1) % 3)])
    dst = np.concatenate([local_slot(hb, np.where(same_start, kb, (kb + 1) % 3)),
                          local_slot(hb, np.where(same_start, (kb + 1) % 3, kb))])
    slot_vertex = local.reshape(-1)
    link = affected[slot_vertex[src]]  # only corners at cut vertices can part
    graph = coo_matrix((np.ones(int(link.sum()), np.int8), (src[link], dst[link])), shape=(len(slot_vertex),) * 2)
    _, component = connected_components(graph, directed=False)
    slots = np.flatnonzero(affected[slot_vertex])
    pairs, copy = np.unique(np.stack([slot_vertex[slots], component[slots]], axis=1), axis=0, return_inverse=True)
    # the first group of each vertex keeps its index, the others become new vertices
    first_of_vertex = np.concatenate([[True], pairs[1:, 0] != pairs[:-1, 0]])
    new_index = np.where(first_of_vertex, pairs[:, 0], len(vertices) + np.cumsum(~first_of_vertex) - 1)
    new_local = slot_vertex.copy()
    new_local[slots] = new_index[copy.reshape(-1)]
    new_local = new_local.reshape(-1, 3)
    out_faces = faces.copy()
    out_faces[local_faces] = new_local
    out_vertices = np.concatenate([vertices, vertices[pairs[~first_of_vertex, 0]]])
    # fins still attached through their other edges go (only edges at a cut vertex matter: all
    # their faces are local)
    at_cut = np.concatenate([affected, np.ones(len(out_vertices) - len(vertices), dtype=bool)])
    h2, pair2, (owner2, _, _, _) = _fins(out_vertices, new_local, at_cut & np.concatenate([near, near[pairs[~first_of_vertex, 0]]]))
    if len(h2):
        alive[local_faces[owner2[h2[np.arange(len(h2)), 3 - pair2[:, 0] - pair2[:, 1]]]]] = False
    owner, corner = owner.copy(), corner.copy()
    first, size = split_groups(owner, corner, first, size.copy(), out_faces, len(out_vertices), touched)
    return out_vertices, out_faces, alive, (owner, corner, first, size)


def snap_boundary(vertices: np.ndarray, on_border: np.ndarray, boundary: PrimitiveIndex | None,
                  border_edges: np.ndarray | None = None, corners: np.ndarray | None = None) -> np.ndarray:
    """Put the output's boundary vertices (``on_border``) onto the input's boundary curve when it is
    at most :data:`SNAP_DISTANCE` away, in three passes.

    1. Each vertex onto its nearest point of the curve. At a corner of the input's boundary several
       vertices find the same nearest point: the nearest of them takes it, the others wait
       (coincident vertices would be a crack of zero width).
    2. ``corners`` (points where the input's boundary turns, :meth:`InputTopology.boundary_corners`):
       each takes the nearest boundary vertex within :data:`CORNER_DISTANCE`. The vertices of the
       cells around a corner sit half a voxel inside the material (the crossings are all on one
       side), and their nearest points lie on the two sides of the corner, never at it: the corner
       was cut off, which on a sheet a few voxels wide is several percent of its area.
    3. A vertex that waited goes to the point of the curve nearest the midpoint of its two
       neighbours along the output's boundary (``border_edges`` [E, 2]), so that it lies between
       them on the curve rather than folding back onto a taken point.
    """
    border = np.flatnonzero(on_border)
    if boundary is None or len(border) == 0:
        return vertices
    out = vertices.copy()
    dist, _, closest = boundary.closest_points(vertices[border], SNAP_DISTANCE)
    close = np.flatnonzero(dist <= SNAP_DISTANCE)
    order = close[np.lexsort((dist[close], *closest[close].T[::-1]))]
    first = np.concatenate([[True], np.any(closest[order][1:] != closest[order][:-1], axis=1)])
    taken = order[first]
    out[border[taken]] = closest[taken]
    waiting = np.zeros(len(vertices), dtype=bool)
    waiting[border[order[~first]]] = True
    if corners is not None and len(corners):
        from scipy.spatial import cKDTree

        tree = cKDTree(out[border])
        dist_c, nearest = tree.query(corners, distance_upper_bound=CORNER_DISTANCE)
        found = np.flatnonzero(np.isfinite(dist_c))
        used: set[int] = set()
        for c in found[np.argsort(dist_c[found], kind="stable")].tolist():
            v = int(border[nearest[c]])
            if v not in used:
                used.add(v)
                out[v] = corners[c]
                waiting[v] = False
    if border_edges is not None and waiting.any():
        ends = np.concatenate([border_edges, border_edges[:, ::-1]])
        ends = ends[waiting[ends[:, 0]]]
        ends = ends[np.argsort(ends[:, 0], kind="stable")]
        vertex, start, count = np.unique(ends[:, 0], return_index=True, return_counts=True)
        two = count == 2  # a vertex where the boundary pinches has more: it stays
        vertex, start = vertex[two], start[two]
        if len(vertex):
            midpoint = 0.5 * (out[ends[start, 1]] + out[ends[start + 1, 1]])
            _, _, target = boundary.closest_points(midpoint, SNAP_DISTANCE)
            ok = np.linalg.norm(target - vertices[vertex], axis=1) <= SNAP_DISTANCE
            out[vertex[ok]] = target[ok]
    return out


def trim_fragments(vertices: np.ndarray, faces: np.ndarray, rounds: int = 4, groups=None,
                   alive: np.ndarray | None = None) -> np.ndarray:
    """Which faces to keep after removing, a few rounds over, the faces along short open boundary
    chains (at most :data:`FRAGMENT_EDGES` edges, ending at non-manifold vertices rather than closing
    into a loop). Such a chain is a quad missing where three sheets of the input meet in one cell
    and two crossings fall on one grid edge; removing the face beside it lets the notch join the
    junction or the neighbouring boundary instead of counting as a loop of its own. ``alive``: the
    faces still there (default all)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    owner, corner, first, size = groups if groups is not None else half_edge_groups(faces)
    keep = np.ones(len(faces), dtype=bool) if alive is None else alive.copy()
    for _ in range(rounds):
        border = border_half_edges(owner, first, size, keep)  # removed faces just drop out
        if len(border) == 0:
            break
        a, b = faces[owner[border], corner[border]], faces[owner[border], (corner[border] + 1) % 3]
        ends, local = np.unique(np.concatenate([a, b]), return_inverse=True)
        la, lb = local[: len(a)], local[len(a):]
        graph = coo_matrix((np.ones(len(a), np.int8), (la, lb)), shape=(len(ends), len(ends)))
        _, label = connected_components(graph, directed=False)
        chain = label[la]
        edges_per_chain = np.bincount(chain, minlength=len(ends))
        degree = np.bincount(np.concatenate([la, lb]), minlength=len(ends))
        open_chain = np.zeros(len(ends), dtype=bool)
        open_chain[label[degree == 1]] = True
        short = open_chain[chain] & (edges_per_chain[chain] <= FRAGMENT_EDGES)
        if not short.any():
            break
        keep[owner[border[short]]] = False
    return keep


@nb.njit(cache=True)
def _edge_pieces(num_faces, owner, first, size, alive):
    """Edge-connected pieces of the alive faces: union-find over faces sharing an edge."""
    parent = np.arange(num_faces)
    for g in range(first.shape[0]):
        a = -1
        for h in range(first[g], first[g] + size[g]):
            f = owner[h]
            if not alive[f]:
                continue
            if a < 0:
                a = f
                continue
            union(parent, a, f)
    return roots(parent)


def edge_pieces(faces: np.ndarray) -> np.ndarray:
    """The piece of each face, counted through shared edges (a part joined to the rest by a vertex
    alone is a piece of its own, as a modeller and the benchmarks count it); named by a face of it."""
    owner, _, first, size = half_edge_groups(faces)
    return _edge_pieces(len(faces), owner, first, size, np.ones(len(faces), dtype=bool))


def drop_crumbs(vertices: np.ndarray, faces: np.ndarray, source_piece: np.ndarray, alive: np.ndarray | None = None,
                groups=None) -> np.ndarray:
    """Which faces to keep: an output piece smaller than :data:`CRUMB_RATIO` of the largest output
    piece made (in part) from the same input piece is a crumb (a sliver of the input thinner than a
    voxel, cut off where the grid cannot follow it), not a part; ``source_piece`` per face;
    ``alive``: the faces still there (default all)."""
    alive = np.ones(len(faces), dtype=bool) if alive is None else alive
    owner, _, first, size = groups if groups is not None else half_edge_groups(faces)
    label = _edge_pieces(len(faces), owner, first, size, alive)  # a piece is named by its smallest face
    return _large_pieces(label, np.ascontiguousarray(source_piece, dtype=np.int64), alive, CRUMB_RATIO)


@nb.njit(cache=True)
def _large_pieces(label, source_piece, alive, ratio):
    """Alive faces whose piece (``label``) has at least ``ratio`` of the faces of the largest piece
    sharing an input piece with it (size by face count: dual-contoured faces are all about half a
    square voxel). Maxima need no list of (piece, input piece) pairs: each face visits its pair."""
    count = np.zeros(label.shape[0], dtype=np.int64)
    num_sources = 0
    for f in range(label.shape[0]):
        if alive[f]:
            count[label[f]] += 1
            num_sources = max(num_sources, source_piece[f] + 1)
    largest = np.zeros(num_sources, dtype=np.int64)  # per input piece: its largest output piece
    for f in range(label.shape[0]):
        if alive[f]:
            largest[source_piece[f]] = max(largest[source_piece[f]], count[label[f]])
    reference = np.zeros(label.shape[0], dtype=np.int64)  # per piece: the largest sharing an input piece
    for f in range(label.shape[0]):
        if alive[f]:
            reference[label[f]] = max(reference[label[f]], largest[source_piece[f]])
    keep = np.zeros(label.shape[0], dtype=np.bool_)
    for f in range(label.shape[0]):
        keep[f] = alive[f] and count[label[f]] >= ratio * reference[label[f]]
    return keep


def tidy_contour(out_vertices: np.ndarray, out_faces: np.ndarray, source: np.ndarray, topology: InputTopology,
                 progress: Callable[[float], None] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The clean-up of a dual-contoured surface (``source``: input face per output face; voxel
    coordinates): detached where a sheet's boundary touches another sheet, without junction
    fragments and crumbs, boundary vertices on the input's boundary, its corners kept. Returns the
    vertices, the faces and, per face, its index among ``out_faces`` (faces keep their order;
    per-face data follows by indexing with it), or −1 for a face that closes a gap at the rim
    (:func:`fill_rim_gaps`, appended last). ``progress`` is called between steps (the pipeline's
    reporter also checks for cancellation there)."""
    report = progress or (lambda fraction: None)
    if len(out_faces) == 0:
        return out_vertices, out_faces, np.empty(0, dtype=np.int64)
    index = topology.boundary_index()
    groups = half_edge_groups(out_faces)
    if index is not None:
        owner, corner, first, size = groups
        three = first[size == 3]
        candidates = np.unique(np.concatenate([out_faces[owner[three], corner[three]],
                                               out_faces[owner[three], (corner[three] + 1) % 3]]))
        near = np.zeros(len(out_vertices), dtype=bool)
        near[candidates] = index.distance(out_vertices[candidates], DETACH_DISTANCE) <= DETACH_DISTANCE
        junctions = topology.junction_index()
        if junctions is not None:  # a real junction of the input stays joined
            near[candidates] &= junctions.distance(out_vertices[candidates], DETACH_DISTANCE) > DETACH_DISTANCE
        alive = None
        if near.any():
            out_vertices, out_faces, alive, groups = detach_at_boundary(out_vertices, out_faces, near, groups)
        keep = trim_fragments(out_vertices, out_faces, groups=groups, alive=alive)
    else:  # a closed input has no boundary, so no fragments of one
        keep = np.ones(len(out_faces), dtype=bool)
    report(0.2)
    keep &= drop_crumbs(out_vertices, out_faces, topology.piece[source], keep, groups)
    kept = np.flatnonzero(keep)
    if index is None:  # a closed input: no boundary to snap to
        report(0.5)
        return (*compact(out_vertices, out_faces[kept]), kept)
    # boundary vertices of what is kept go onto the input's boundary, before compaction renumbers them
    owner, corner, first, size = groups
    border_half = border_half_edges(owner, first, size, keep)
    on_border = np.zeros(len(out_vertices), dtype=bool)
    on_border[out_faces[owner[border_half], corner[border_half]]] = True
    on_border[out_faces[owner[border_half], (corner[border_half] + 1) % 3]] = True
    report(0.5)
    border_edges = np.stack([out_faces[owner[border_half], corner[border_half]],
                             out_faces[owner[border_half], (corner[border_half] + 1) % 3]], axis=1)
    corners = topology.boundary_corners()
    kept_faces = out_faces[kept]  # gathered once: millions of faces at N=1024
    snapped = unfold(out_vertices, snap_boundary(out_vertices, on_border, index, border_edges, corners), kept_faces)
    candidates = np.flatnonzero(on_border[kept_faces].any(axis=1))  # only faces with a snapped corner can be ears
    uses = np.bincount(kept_faces.ravel(), minlength=len(snapped))
    dropped = []
    for _ in range(FLAT_EAR_ROUNDS):  # dropping one can make the next of a flat strip an ear
        ears = flat_ears(snapped, kept_faces, candidates, uses)
        if len(ears) == 0:
            break
        np.subtract.at(uses, kept_faces[ears].ravel(), 1)
        candidates = np.setdiff1d(candidates, ears, assume_unique=True)
        dropped.append(ears)
    if dropped:
        alive = np.ones(len(kept_faces), dtype=bool)
        alive[np.concatenate(dropped)] = False
        kept, kept_faces = kept[alive], kept_faces[alive]
    vertices, faces = compact(snapped, kept_faces)
    vertices, faces, fills = fill_rim_gaps(vertices, faces, index, corners)
    return vertices, faces, np.concatenate([kept, np.full(fills, -1, dtype=kept.dtype)])


def fill_rim_gaps(vertices: np.ndarray, faces: np.ndarray, boundary: PrimitiveIndex,
                  corners: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Triangles that close the gaps between the output's boundary and the input's rim. Every
    boundary vertex is meant to lie on the rim, but near a corner of a coarse sheet some cannot:
    the tip narrower than a voxel crosses no grid edge, so no cell there has a vertex (a 25° tip of
    a coarse triangle lost 2–5 % of its area), and a vertex that lost its snap point (two vertices
    wanting one point, a move undone by :func:`unfold`) leaves a run of boundary edges off the
    rim. A gap is a run of at most :data:`GAP_EDGES` output boundary edges from one vertex on the
    rim to the next, closed along the rim — through the corner between them where the two lie on
    the two sides of one of ``corners`` that no vertex has reached. It is triangulated by ear
    clipping in the plane of the faces beside it, the triangles turning as those faces do; a gap
    that is not a simple polygon there is left open. Returns the vertices (reached corners
    appended), the faces (the fills appended) and the number of faces added."""
    if len(faces) == 0:
        return vertices, faces, 0
    owner, corner, first, size = half_edge_groups(faces)
    border = first[size == 1]
    a = faces[owner[border], corner[border]]
    b = faces[owner[border], (corner[border] + 1) % 3]
    ends = np.unique(np.concatenate([a, b]))
    if len(ends) == 0:
        return vertices, faces, 0
    distance = np.full(len(vertices), np.inf)
    segment = np.full(len(vertices), -1, dtype=np.int64)
    distance[ends], segment[ends] = boundary.query(vertices[ends], EAR_REACH)
    on_rim = distance <= 1e-7
    free_corner: dict[int, int] = {}  # welded input vertex → its row in corners, for corners no output vertex reached
    if len(corners):
        from scipy.spatial import cKDTree

        unreached = np.flatnonzero(cKDTree(vertices[ends]).query(corners)[0] > 1e-9)  # a corner is reached on the rim
        if len(unreached):
            rows = cKDTree(boundary.vertices).query(corners[unreached])[1]
            free_corner = {int(r): int(c) for r, c in zip(rows.tolist(), unreached.tolist())}
    seg_ends = boundary.elements

    def shared_corner(s1: int, s2: int) -> int:
        """The unreached corner where boundary segments s1 and s2 meet, or -1."""
        if s1 < 0 or s2 < 0 or s1 == s2:
            return -1
        common = set(seg_ends[s1].tolist()) & set(seg_ends[s2].tolist())
        return next((free_corner[v] for v in common if v in free_corner), -1)

    leaving = on_rim[a] & ~on_rim[b]
    if free_corner:
        both = np.flatnonzero(on_rim[a] & on_rim[b] & (segment[a] != segment[b]))
        leaving[both[[shared_corner(int(segment[a[e]]), int(segment[b[e]])) >= 0 for e in both.tolist()]]] = True
    starts = np.flatnonzero(leaving)
    if len(starts) == 0:
        return vertices, faces, 0
    successors = np.bincount(a, minlength=len(vertices))
    following = np.full(len(vertices), -1, dtype=np.int64)
    single = successors[a] == 1  # where the boundary pinches, a vertex has two ways on: left alone
    following[a[single]] = np.flatnonzero(single)
    # the edges between two boundary vertices, to look a diagonal up: only faces at the boundary
    # can hold one, so the rest of the mesh (millions of faces at N=1024) is not sorted
    is_end = np.zeros(len(vertices), dtype=bool)
    is_end[ends] = True
    rim_faces = faces[is_end[faces].sum(axis=1) >= 2]
    keys = np.sort(np.concatenate([rim_faces[:, [0, 1]], rim_faces[:, [1, 2]], rim_faces[:, [2, 0]]]), axis=1)
    keys = np.unique(keys[:, 0] * len(vertices) + keys[:, 1])

    def new_edge(i: int, j: int) -> bool:
        if i < 0 or j < 0:  # a corner, not yet a vertex
            return True
        key = min(i, j) * len(vertices) + max(i, j)
        at = np.searchsorted(keys, key)
        return not (at < len(keys) and keys[at] == key)

    unit, areas = face_normals_and_areas(vertices, faces[owner[border]])  # the faces at the boundary only
    normals = unit * areas[:, None]  # by area: a sliver beside a gap may face any way
    new_vertices: list[np.ndarray] = []
    new_faces: list[tuple[int, int, int]] = []
    used_corners: set[int] = set()
    for e in starts.tolist():
        run = [e]
        while not on_rim[b[run[-1]]] and following[b[run[-1]]] >= 0 and len(run) <= GAP_EDGES:
            run.append(int(following[b[run[-1]]]))
        if not on_rim[b[run[-1]]] or len(run) > GAP_EDGES:
            continue
        chain = [int(a[run[0]])] + [int(b[k]) for k in run]  # rim, off the rim..., rim
        ids = chain[::-1]  # the gap turns against the run: the faces beside it hold its edges reversed
        c = shared_corner(int(segment[chain[0]]), int(segment[chain[-1]]))
        points = [vertices[i] for i in ids]
        if c >= 0 and c not in used_corners:
            ids.append(-1 - c)  # a corner, made a vertex only if the gap is filled
            points.append(corners[c])
        if len(ids) < 3:
            continue
        normal = normals[run].sum(axis=0)
        triangles = _ear_clip(np.array(points), normal)
        if triangles is None:
            continue
        inner = {(min(ids[p], ids[q]), max(ids[p], ids[q])) for t in triangles for p, q in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0]))
                 if (q - p) % len(ids) not in (1, len(ids) - 1)}  # the diagonals the triangulation draws
        inner.add((min(ids[0], ids[-1]), max(ids[0], ids[-1])))  # and the side along the rim
        if not all(new_edge(i, j) for i, j in inner):  # one already an edge of the mesh: a third face on it
            continue
        apex = {}
        for i in ids:
            if i < 0:
                apex[i] = len(vertices) + len(new_vertices)
                new_vertices.append(corners[-1 - i])
                used_corners.add(-1 - i)
        index_of = [apex.get(i, i) for i in ids]
        new_faces.extend((index_of[p], index_of[q], index_of[r]) for p, q, r in triangles)
    if not new_faces:
        return vertices, faces, 0
    out_vertices = np.concatenate([vertices, np.array(new_vertices).reshape(-1, 3)])
    return out_vertices, np.concatenate([faces, np.array(new_faces, dtype=faces.dtype)]), len(new_faces)


def _ear_clip(points: np.ndarray, normal: np.ndarray) -> list[tuple[int, int, int]] | None:
    """Triangles (indices into ``points``) of the polygon ``points`` seen along ``normal``, turning
    counter-clockwise about it; None if it does not turn that way or is not simple in that view."""
    length = np.linalg.norm(normal)
    if length <= 1e-12:
        return None
    n = normal / length
    u = np.cross(n, [1.0, 0.0, 0.0] if abs(n[0]) < 0.9 else [0.0, 1.0, 0.0])
    u /= np.linalg.norm(u)
    w = np.cross(n, u)
    xy = np.stack([points @ u, points @ w], axis=1)
    signed = 0.5 * np.sum(xy[:, 0] * np.roll(xy[:, 1], -1) - np.roll(xy[:, 0], -1) * xy[:, 1])
    if signed <= 1e-12:
        return None

    def turn(p: int, q: int, r: int) -> float:
        return (xy[q, 0] - xy[p, 0]) * (xy[r, 1] - xy[p, 1]) - (xy[q, 1] - xy[p, 1]) * (xy[r, 0] - xy[p, 0])

    def ear(k: int, least: float) -> bool:
        p, q, r = left[k - 1], left[k], left[(k + 1) % len(left)]
        if turn(p, q, r) <= least:
            return False
        return not any(turn(p, q, t) > 0 and turn(q, r, t) > 0 and turn(r, p, t) > 0 for t in left if t not in (p, q, r))

    left = list(range(len(points)))
    out = []
    while len(left) > 3:
        # a proper ear first; else one of no area (a run that went back on itself by a hair, where
        # unfold moved a vertex part of the way)
        k = next((k for k in range(len(left)) if ear(k, 1e-12)), None)
        if k is None:
            k = next((k for k in range(len(left)) if ear(k, -FLAT_TURN)), None)
        if k is None:
            return None
        out.append((left[k - 1], left[k], left[(k + 1) % len(left)]))
        left.pop(k)
    if turn(*left) <= -FLAT_TURN:
        return None
    out.append(tuple(left))
    return out


@nb.njit(cache=True, inline="always")
def _turn(before, out, f0, f1, f2):
    """Whether triangle (f0, f1, f2) faces the other way in ``out`` than in ``before``."""
    ax, ay, az = before[f1, 0] - before[f0, 0], before[f1, 1] - before[f0, 1], before[f1, 2] - before[f0, 2]
    bx, by, bz = before[f2, 0] - before[f0, 0], before[f2, 1] - before[f0, 1], before[f2, 2] - before[f0, 2]
    cx, cy, cz = out[f1, 0] - out[f0, 0], out[f1, 1] - out[f0, 1], out[f1, 2] - out[f0, 2]
    dx, dy, dz = out[f2, 0] - out[f0, 0], out[f2, 1] - out[f0, 1], out[f2, 2] - out[f0, 2]
    rx, ry, rz = ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx
    sx, sy, sz = cy * dz - cz * dy, cz * dx - cx * dz, cx * dy - cy * dx
    return rx * sx + ry * sy + rz * sz < 0.0


@nb.njit(cache=True)
def _unfold(before, out, touched, rounds):
    num = out.shape[0]
    far = np.zeros(num, dtype=np.bool_)
    for round_ in range(rounds):
        any_turned = False
        for t in range(touched.shape[0]):
            f0, f1, f2 = touched[t, 0], touched[t, 1], touched[t, 2]
            if not _turn(before, out, f0, f1, f2):
                continue
            any_turned = True
            best, pick = -1.0, f0
            for v in (f0, f1, f2):  # the corner that moved farthest (the first of equals)
                move = np.sqrt((out[v, 0] - before[v, 0]) ** 2 + (out[v, 1] - before[v, 1]) ** 2
                               + (out[v, 2] - before[v, 2]) ** 2)
                if move > best:
                    best, pick = move, v
            far[pick] = True
        if not any_turned:
            break
        back = 0.5 if round_ < rounds - 1 else 1.0
        for v in range(num):
            if far[v]:
                for k in range(3):
                    out[v, k] = out[v, k] + back * (before[v, k] - out[v, k])
                far[v] = False
    return out


def unfold(before: np.ndarray, after: np.ndarray, faces: np.ndarray, rounds: int = 8) -> np.ndarray:
    """``after`` (moved vertices) with the moves undone that turned a face over: near the tip of a
    coarse sheet, two boundary vertices snapped onto the two sides of the tip can cross, and their
    triangles fold back over their neighbours (a 41-voxel² triangle came back with 4 faces folded
    and 4 % more area). Of a face whose normal reverses, the corner that moved farthest goes half
    way back, round after round (in the last, all the way); undoing a move can turn a neighbour.
    The check after the last round is left to the caller's tests: a face can stay turned only if
    it was turned before the moves. Compiled: a settled 512 surface has millions of faces."""
    before = np.ascontiguousarray(before, dtype=np.float64)
    after = np.ascontiguousarray(after, dtype=np.float64)
    is_moved = np.any(before != after, axis=1)
    if not is_moved.any():
        return after
    touched = np.ascontiguousarray(faces[is_moved[faces].any(axis=1)], dtype=np.int64)
    if len(touched) == 0:
        return after
    return _unfold(before, after.copy(), touched, rounds)


def flat_ears(vertices: np.ndarray, faces: np.ndarray, candidates: np.ndarray | None = None,
              uses: np.ndarray | None = None) -> np.ndarray:
    """The faces (ids, ascending) that are flat ears: no area, with a corner that no other face uses.
    Snapping puts boundary vertices on the input's boundary curve; where that curve runs along a grid
    line, the two ends of a boundary triangle's edge can land on one point, and such a triangle is a
    fold of zero width in the boundary (two coincident vertices, welded into an edge of three faces).
    Dropping it leaves the boundary along its third edge: the same curve, one corner fewer.
    ``candidates``: the only faces that can be ears (those with a snapped corner), when known —
    the areas of millions of faces far from any boundary need not be computed each round; ``uses``:
    the faces per vertex, when the caller keeps it up to date between rounds (a count over every face
    otherwise)."""
    if len(faces) == 0:
        return np.zeros(0, dtype=np.int64)
    candidates = np.arange(len(faces)) if candidates is None else np.asarray(candidates, dtype=np.int64)
    area = face_normals_and_areas(vertices, faces[candidates])[1]
    flat = candidates[area <= 1e-12]
    if len(flat) == 0:
        return flat
    if uses is None:
        uses = np.bincount(faces.ravel(), minlength=len(vertices))
    return flat[(uses[faces[flat]] == 1).any(axis=1)]


def contour(vertices: np.ndarray, faces: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """The input's surface, dual-contoured on the N³ grid and tidied (voxel coordinates in and out)."""
    topology = InputTopology.of(vertices, faces)
    out_vertices, out_faces, source, _ = dual_contour(vertices, faces, resolution, topology)
    return tidy_contour(out_vertices, out_faces, source, topology)[:2]


__all__ = ["InputTopology", "collapse_zero_edges", "contour", "detach_at_boundary", "distinct_faces", "drop_crumbs", "dual_contour", "fill_rim_gaps", "flat_ears", "unfold",
           "grid_crossings", "odd_edges", "snap_boundary", "tidy_contour", "trim_fragments", "weld"]
