"""Parting two sheets that share an edge.

Where two sheets of a surface pass within a voxel of each other — the two sides of a thin gap, a
leg against a body — the dual contour can put both through the same pair of cells, and the edge
between those cells' vertices then belongs to four faces (two per sheet); where a sheet's rim runs
into another sheet, to three. Such an edge is no surface a modeller can edit. Here each such edge
is given back to its sheets: around the edge the faces are ordered by angle, neighbours that run
the edge in opposite directions (one consistently wound sheet) and open widest pair up — the two
faces of one sheet lie on either side of the edge, those of two sheets facing each other close
together — and the vertices at the edge are duplicated per group of faces still joined around them
(the same regrouping as :func:`model.contour.detach_at_boundary`), each copy moved to the middle of
its own neighbours so that the sheets part. A face left without a partner (a rim running into a
sheet) keeps the edge as its boundary.

Where a vertex's fan passes such an edge twice (two sheets crossing or kissing along one edge, each
turning back to the same vertex), no regrouping of the faces around the vertex parts them: there
:func:`split_edges_by_pairs` gives each pair but the first its own vertex in the middle of the edge
instead, so that every edge has two faces and the sheets meet at the edge's two ends only.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .edges import half_edge_groups
from .contour import _edge_pieces
from .mesh import face_normals_and_areas


def _pairs_around(vertices: np.ndarray, faces: np.ndarray, u: int, v: int, members: np.ndarray,
                  forward: np.ndarray) -> list[tuple[int, int]]:
    """Which of the faces ``members`` around edge (u, v) continue each other (indices into members)."""
    axis = vertices[v] - vertices[u]
    axis /= max(np.linalg.norm(axis), 1e-12)
    third = np.array([[w for w in faces[f] if w != u and w != v][0] for f in members])
    out = vertices[third] - vertices[u]
    out -= np.outer(out @ axis, axis)
    ref = out[0] / max(np.linalg.norm(out[0]), 1e-12)
    angle = np.arctan2(out @ np.cross(axis, ref), out @ ref) % (2 * np.pi)
    order = list(np.argsort(angle))
    pairs: list[tuple[int, int]] = []
    while len(order) >= 2:
        best, best_score = -1, -np.inf
        for i in range(len(order) if len(order) > 2 else 1):
            a, b = order[i], order[(i + 1) % len(order)]
            gap = (angle[b] - angle[a]) % (2 * np.pi)
            score = (0.0 if forward[a] != forward[b] else -10.0) + min(gap, 2 * np.pi - gap)
            if score > best_score:
                best, best_score = i, score
        a, b = order[best], order[(best + 1) % len(order)]
        if forward[a] == forward[b]:  # no two left that run the edge in opposite directions
            break
        pairs.append((int(a), int(b)))
        order = [x for x in order if x not in (a, b)]
    return pairs


def split_shared_edges(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The surface with every edge of three or more faces parted among its sheets (see the module's
    docstring): vertices at such edges duplicated, faces renumbered, no face removed. Faces must be
    wound consistently within each sheet. A part that would come loose — held to the rest by such
    edges only (pieces counted through shared edges) — stays joined (the mountain's decoded sheet at 256 would lose a 113-voxel² patch as
    a piece of its own): its vertices are not duplicated. Edges still of 3+ faces after that go to
    :func:`split_edges_by_pairs`."""
    if len(faces) == 0:
        return vertices, faces
    groups = half_edge_groups(faces)
    owner, corner, first, size = groups
    shared = np.flatnonzero(size >= 3)
    if len(shared) == 0:
        return vertices, faces
    every = np.ones(len(faces), dtype=bool)
    component = _edge_pieces(len(faces), owner, first, size, every)
    for _ in range(3):
        out_vertices, out_faces, origin = _split(vertices, faces, groups, shared)
        out_owner, _, out_first, out_size = half_edge_groups(out_faces)
        after = _edge_pieces(len(out_faces), out_owner, out_first, out_size, every)
        if len(np.unique(after)) == len(np.unique(component)):
            break
        # per old piece, its largest new piece stays; faces of the others mark their edges' ends
        size_of = np.bincount(after, minlength=len(faces))
        largest = np.zeros(len(faces), dtype=np.int64)
        order = np.argsort(size_of[after], kind="stable")
        largest[component[order]] = after[order]  # the last write per old piece is its largest new one
        loose = after != largest[component]
        held = np.zeros(len(vertices), dtype=bool)
        held[origin[out_faces[loose].ravel()]] = True
        start = faces[owner[first[shared]], corner[first[shared]]]
        end = faces[owner[first[shared]], (corner[first[shared]] + 1) % 3]
        shared = shared[~(held[start] | held[end])]
        if len(shared) == 0:
            return split_edges_by_pairs(vertices, faces)
    return split_edges_by_pairs(out_vertices, out_faces)


PAIR_VERTEX_SHIFT = 0.05
"""How far, in the mesh's units (voxels in the clean-up), a pair's own vertex at a shared edge's
middle moves into the pair's wedge: the sheets then lie apart in space too, so a weld by position
(every file writer and reader, the benchmarks) cannot join them again."""


def _pieces(vertices: np.ndarray, faces: np.ndarray, groups: tuple, min_area: float) -> int:
    """How many pieces, counted through shared edges (``groups``: the faces' half-edge groups),
    have at least ``min_area``."""
    owner, _, first, size = groups
    label = _edge_pieces(len(faces), owner, first, size, np.ones(len(faces), dtype=bool))
    area = np.bincount(label, weights=face_normals_and_areas(vertices, faces)[1], minlength=len(faces))
    return int(np.count_nonzero(area[np.unique(label)] >= min_area))


def split_edges_by_pairs(vertices: np.ndarray, faces: np.ndarray, loose_area: float = 0.0
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Every edge of three or more faces given to its pairs of faces (:func:`_pairs_around`): the
    first pair keeps the edge, each other pair — and each face without a partner — gets its own
    vertex at the edge's middle, moved :data:`PAIR_VERTEX_SHIFT` into its wedge, and each of its
    faces is cut in two there. Pieces counted through shared edges stay as many as before, but for
    those under ``loose_area`` (a bubble touching the shell along two edges, which the clean-up's
    speck filter then drops): a pairing that would free a larger part leaves the surface unchanged.
    Faces must be wound consistently within each sheet (an edge whose faces all run it one way is
    left as it is). A face at two such edges waits for the next of three rounds."""
    groups = half_edge_groups(faces)
    pieces = None  # counted once there is a cut to compare with, then carried from round to round
    for _ in range(3):
        owner, corner, first, size = groups
        shared = np.flatnonzero(size >= 3)
        if len(shared) == 0:
            break
        new_points: list[np.ndarray] = []
        cut: dict[int, tuple[int, int]] = {}  # face → (start corner of the cut edge, its new vertex)
        for g in shared:
            run = np.arange(first[g], first[g] + size[g])
            members = owner[run]
            if any(int(f) in cut for f in members):
                continue
            u, v = faces[members[0], corner[run[0]]], faces[members[0], (corner[run[0]] + 1) % 3]
            forward = faces[members, corner[run]] == u
            pairs = _pairs_around(vertices, faces, u, v, members, forward)
            paired = {i for pair in pairs for i in pair}
            if not pairs:  # no two faces wound as one sheet: nothing to give the edge to
                continue
            takers = [list(pair) for pair in pairs[1:]] + [[i] for i in range(len(members)) if i not in paired]
            middle = 0.5 * (vertices[u] + vertices[v])
            axis = vertices[v] - vertices[u]
            axis /= max(np.linalg.norm(axis), 1e-12)
            for taker in takers:  # a pair, or a face without a partner, that gets its own vertex
                wedge = np.zeros(3)
                for i in taker:
                    f = members[i]
                    third = vertices[[w for w in faces[f] if w != u and w != v][0]] - middle
                    third -= (third @ axis) * axis
                    wedge += third / max(np.linalg.norm(third), 1e-12)
                if np.linalg.norm(wedge) < 0.1:  # a flat pair: off along its normal
                    f = members[taker[0]]
                    wedge = np.cross(vertices[faces[f, 1]] - vertices[faces[f, 0]], vertices[faces[f, 2]] - vertices[faces[f, 0]])
                wedge /= max(np.linalg.norm(wedge), 1e-12)
                index = len(vertices) + len(new_points)
                new_points.append(middle + PAIR_VERTEX_SHIFT * wedge)
                for i in taker:
                    cut[int(members[i])] = (int(corner[run[i]]), index)
        if not cut:
            break
        rows = np.fromiter(cut.keys(), dtype=np.int64)
        k = np.array([cut[f][0] for f in rows])
        m = np.array([cut[f][1] for f in rows])
        p, q, r = faces[rows, k], faces[rows, (k + 1) % 3], faces[rows, (k + 2) % 3]
        out_faces = faces.copy()
        out_faces[rows] = np.stack([p, m, r], axis=1)
        out_faces = np.concatenate([out_faces, np.stack([m, q, r], axis=1)])
        out_vertices = np.concatenate([vertices, np.asarray(new_points).reshape(-1, 3)])
        out_groups = half_edge_groups(out_faces)
        if pieces is None:
            pieces = _pieces(vertices, faces, groups, loose_area)
        out_pieces = _pieces(out_vertices, out_faces, out_groups, loose_area)
        if out_pieces > pieces:
            break
        vertices, faces, groups, pieces = out_vertices, out_faces, out_groups, out_pieces
    return vertices, faces


def _split(vertices: np.ndarray, faces: np.ndarray, groups: tuple, shared: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`split_shared_edges` at the edge groups ``shared``: (vertices, faces, the original
    vertex of each output vertex)."""
    owner, corner, first, size = groups
    start = faces[owner, corner]
    end = faces[owner, (corner + 1) % 3]
    affected = np.zeros(len(vertices), dtype=bool)
    affected[start[first[shared]]] = True
    affected[end[first[shared]]] = True
    # every edge with an end at an affected vertex: which of its faces stay joined across it
    touching = np.flatnonzero(affected[start[first]] | affected[end[first]])
    splitting = np.zeros(len(size), dtype=bool)
    splitting[shared] = True
    join_a: list[int] = []
    join_b: list[int] = []
    for g in touching:
        run = np.arange(first[g], first[g] + size[g])
        if not splitting[g]:  # every face joined to the first (a manifold edge: its two faces)
            join_a.extend([run[0]] * (len(run) - 1))
            join_b.extend(run[1:])
        else:
            u, v = start[run[0]], end[run[0]]
            forward = start[run] == u
            for a, b in _pairs_around(vertices, faces, u, v, owner[run], forward):
                join_a.append(run[a])
                join_b.append(run[b])
    ha, hb = np.asarray(join_a, dtype=np.int64), np.asarray(join_b, dtype=np.int64)
    # face corners (3 f + k) at affected vertices, linked where their faces stay joined
    def corner_of(half: np.ndarray, vertex: np.ndarray) -> np.ndarray:
        f = owner[half]
        k = np.argmax(faces[f] == vertex[:, None], axis=1)
        return 3 * f + k

    links_a, links_b = [], []
    for ends in (start, end):
        vertex = ends[ha]
        keep = affected[vertex]
        links_a.append(corner_of(ha[keep], vertex[keep]))
        links_b.append(corner_of(hb[keep], vertex[keep]))
    la, lb = np.concatenate(links_a), np.concatenate(links_b)
    slots = np.flatnonzero(affected[faces.ravel()])
    index = np.full(3 * len(faces), -1, dtype=np.int64)
    index[slots] = np.arange(len(slots))
    graph = coo_matrix((np.ones(len(la), np.int8), (index[la], index[lb])), shape=(len(slots),) * 2)
    _, group = connected_components(graph, directed=False)
    vertex_of_slot = faces.ravel()[slots]
    pairs, which = np.unique(np.stack([vertex_of_slot, group], axis=1), axis=0, return_inverse=True)
    keeps = np.concatenate([[True], pairs[1:, 0] != pairs[:-1, 0]])  # each vertex's first group keeps its index
    new_index = np.where(keeps, pairs[:, 0], len(vertices) + np.cumsum(~keeps) - 1)
    out_faces = faces.copy().ravel()
    out_faces[slots] = new_index[which.reshape(-1)]
    out_faces = out_faces.reshape(-1, 3)
    out_vertices = np.concatenate([vertices, vertices[pairs[~keeps, 0]]])
    # each copy to the middle of its own neighbours: the sheets part by the gap between them
    moved = np.unique(new_index)
    rows = slots // 3
    total = np.zeros((len(out_vertices), 3))
    count = np.zeros(len(out_vertices))
    for k in (1, 2):
        here = out_faces[rows, slots % 3]
        other = out_faces[rows, (slots % 3 + k) % 3]
        np.add.at(total, here, out_vertices[other])
        np.add.at(count, here, 1.0)
    out_vertices[moved] = total[moved] / np.maximum(count[moved], 1.0)[:, None]
    origin = np.concatenate([np.arange(len(vertices)), pairs[~keeps, 0]])
    return out_vertices, out_faces, origin


__all__ = ["split_edges_by_pairs", "split_shared_edges"]
