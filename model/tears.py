"""Mending the tears where sheets pass through each other.

Where two sheets of an unsigned field cross, the field's zero set is an X, and the sides that the
zero-set contour (:mod:`model.udf_contour`) gives the voxels cannot always follow it: near the
crossing line of a shallow crossing both sheets pass between the same voxels and cancel, so the
contour keeps one sheet through the crossing (one half of each sheet joined) and the two other
halves end beside it, torn (two squares crossing at 20°: a third loop; Suzanne's eyes through its
head at N=512: four more loops than the input).

Such a boundary is told from a real rim by what lies beside it: a torn half ends within a voxel or
two of the sheet it crossed, a rim ends in the open (no face beside it but its own neighbourhood
along the surface). Each tear run is paired with the nearest other run that the field joins it to
(the segments between them stay near the zero set), and a pair chosen both ways is joined by a strip
of triangles (a zipper along the two runs): the two torn halves then make the second sheet through
the crossing, as the input has it (surfaces passing through each other, no shared edge). Every strip edge is new or a boundary
edge that had one face, so no edge gets a third face.

Orientation: a strip continues the faces beside it, so the two runs must go opposite ways; where
they go the same way, the piece of the second is turned over first (an open sheet has no inside),
unless it has already been joined in its present orientation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from .cleanup import sample_field
from .edges import boundary_half_edges, simple_cycles
from .geometry import face_components, vertex_faces
from .grid import TRUNCATION_VOXELS, SparseField


@dataclass(frozen=True)
class TearOptions:
    """``beside`` (voxels): a boundary edge is a tear candidate when a face that is not its own
    neighbourhood along the surface (the faces within ``own`` voxels reached through shared
    vertices) lies this near its middle — a torn half ends beside the sheet it crossed; a real rim
    ends in the open. ``reach`` (voxels): the widest gap a strip bridges (two sheets at 20° pass
    between the same voxels up to 1 / sin 20° ≈ 3 voxels from their line, and the contour's sides
    miss a few more each side). ``on_surface`` (voxels): the field along the segments between the
    two runs must stay this near the zero set (a surface joins them). ``min_run``: tear runs
    shorter than this many edges are left as they are."""

    beside: float = 1.5
    own: float = 3.0
    reach: float = 16.0
    on_surface: float = 0.75
    min_run: int = 3


def _cycle_orders(border: np.ndarray, cycle: np.ndarray, count: int) -> list[np.ndarray]:
    """Each boundary cycle's half-edges (indices into ``border``) in the order the cycle runs."""
    orders: list[np.ndarray] = []
    for c in range(count):
        members = np.flatnonzero(cycle == c)
        by_start = {int(border[e, 0]): int(e) for e in members}
        order = [int(members[0])]
        while len(order) < len(members):
            nxt = by_start.get(int(border[order[-1], 1]))
            if nxt is None or nxt == order[0]:
                break
            order.append(nxt)
        orders.append(np.asarray(order))
    return orders


def _beside_another(vertices: np.ndarray, faces: np.ndarray, middle: np.ndarray, face_of: np.ndarray,
                    beside: float, own: float) -> np.ndarray:
    """Per boundary edge: whether a face other than its own neighbourhood along the surface lies
    within ``beside`` of its middle."""
    centroid = vertices[faces].mean(axis=1)
    tree = cKDTree(centroid)
    start, face_at = vertex_faces(faces, len(vertices))  # faces around v: face_at[start[v]:start[v + 1]]
    limit = own * own
    result = np.zeros(len(middle), dtype=bool)
    for e, near in enumerate(tree.query_ball_point(middle, beside)):
        if not near:
            continue
        seen = {int(face_of[e])}
        frontier = [int(face_of[e])]
        while frontier:
            nxt = []
            for g in frontier:
                for v in faces[g]:
                    for h in face_at[start[v]:start[v + 1]]:
                        h = int(h)
                        if h not in seen and ((centroid[h] - middle[e]) ** 2).sum() <= limit:
                            seen.add(h)
                            nxt.append(h)
            frontier = nxt
        result[e] = any(int(h) not in seen for h in near)
    return result


def _runs(orders: list[np.ndarray], tear: np.ndarray, min_run: int) -> list[np.ndarray]:
    """Maximal sequences of consecutive tear half-edges along each cycle, in order."""
    runs: list[np.ndarray] = []
    for order in orders:
        flags = tear[order]
        if flags.all():
            if len(order) >= min_run:
                runs.append(order)
            continue
        if not flags.any():
            continue
        shift = int(np.flatnonzero(~flags)[0])  # start at a non-tear edge so that no run wraps round
        order, flags = np.roll(order, -shift), np.roll(flags, -shift)
        start = None
        for i, f in enumerate(list(flags) + [False]):
            if f and start is None:
                start = i
            elif not f and start is not None:
                if i - start >= min_run:
                    runs.append(order[start:i])
                start = None
    return runs


def _zip(p: np.ndarray, q: np.ndarray, vertices: np.ndarray) -> list[tuple[int, int, int]]:
    """Triangles joining polyline ``p`` (its faces run p[i] → p[i+1]) and ``q`` (its faces run
    q[j+1] → q[j]), both starting at the same end, the shorter diagonal first."""
    tris: list[tuple[int, int, int]] = []
    i = j = 0
    while i < len(p) - 1 or j < len(q) - 1:
        advance_p = j == len(q) - 1 or (i < len(p) - 1 and np.linalg.norm(vertices[p[i + 1]] - vertices[q[j]])
                                         <= np.linalg.norm(vertices[q[j + 1]] - vertices[p[i]]))
        if advance_p:
            tris.append((int(p[i + 1]), int(p[i]), int(q[j])))
            i += 1
        else:
            tris.append((int(q[j]), int(q[j + 1]), int(p[i])))
            j += 1
    return tris


def _joined_by_field(a: np.ndarray, b: np.ndarray, field: SparseField, on_surface: float) -> bool:
    """Whether the field keeps every segment a[i]–b[i] within ``on_surface`` voxels of its zero set."""
    t = np.linspace(0.0, 1.0, 9)[:, None, None]
    points = ((1.0 - t) * a[None] + t * b[None]).reshape(-1, 3)
    return bool((sample_field(field, points) * TRUNCATION_VOXELS <= on_surface).all())


def mend_tears(vertices: np.ndarray, faces: np.ndarray, field: SparseField,
               options: TearOptions = TearOptions()) -> tuple[np.ndarray, np.ndarray, int]:
    """The mesh with each pair of tear runs that the field joins bridged by a strip (see the
    module's docstring), and the number of strips. Vertices in voxel coordinates; faces oriented
    consistently per piece."""
    if len(faces) == 0:
        return vertices, faces, 0
    half, on_border = boundary_half_edges(len(vertices), faces)
    border_index = np.flatnonzero(on_border)
    if len(border_index) < 2 * options.min_run:
        return vertices, faces, 0
    border = half[border_index]
    face_of = border_index % len(faces)
    middle = 0.5 * (vertices[border[:, 0]] + vertices[border[:, 1]])
    tear = _beside_another(vertices, faces, middle, face_of, options.beside, options.own)
    cycle, count = simple_cycles(border, len(vertices))
    runs = _runs(_cycle_orders(border, cycle, count), tear & (cycle >= 0), options.min_run)
    if len(runs) < 2:
        return vertices, faces, 0
    trees = [cKDTree(middle[r]) for r in runs]
    centre = np.array([middle[r].mean(axis=0) for r in runs])
    partner = np.full(len(runs), -1)
    for r, members in enumerate(runs):
        probe = middle[members[np.linspace(0, len(members) - 1, min(len(members), 5)).astype(int)]]
        best, best_d = -1, np.inf
        for o in range(len(runs)):
            if o == r or np.linalg.norm(centre[o] - centre[r]) > options.reach + 0.5 * len(members):
                continue
            d, k = trees[o].query(probe)
            if d.max() > options.reach or d.mean() >= best_d:
                continue
            if _joined_by_field(probe, middle[runs[o][k]], field, options.on_surface):
                best, best_d = o, float(d.mean())
        partner[r] = best
    num_pieces, piece = face_components(len(vertices), faces)
    faces = faces.copy()
    locked = np.zeros(num_pieces, dtype=bool)
    turned = np.zeros(num_pieces, dtype=bool)  # pieces turned over here: their runs go the other way
    new: list[tuple[int, int, int]] = []
    strips = 0
    for r in range(len(runs)):
        o = int(partner[r])
        if o <= r or partner[o] != r:
            continue
        p_edges, q_edges = runs[r], runs[o]
        piece_p, piece_q = piece[face_of[p_edges[0]]], piece[face_of[q_edges[0]]]
        p = np.concatenate([border[p_edges, 0], border[p_edges[-1:], 1]])
        q = np.concatenate([border[q_edges, 0], border[q_edges[-1:], 1]])
        p = p[::-1] if turned[piece_p] else p  # each in the direction its faces now run
        q = q[::-1] if turned[piece_q] else q
        if (vertices[p[-1]] - vertices[p[0]]) @ (vertices[q[-1]] - vertices[q[0]]) > 0:
            if piece_p == piece_q or locked[piece_q]:
                continue  # the second piece would have to turn over and cannot
            turn = piece == piece_q
            faces[turn] = faces[turn][:, ::-1]
            turned[piece_q] = True
            q = q[::-1]
        new.extend(_zip(p, q[::-1], vertices))
        locked[piece_p] = locked[piece_q] = True
        strips += 1
    if not new:
        return vertices, faces, 0
    return vertices, np.concatenate([faces, np.asarray(new, dtype=np.int64)]), strips


__all__ = ["TearOptions", "mend_tears"]
