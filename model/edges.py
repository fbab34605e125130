"""Edges of a triangle mesh, found once: every directed face edge (half-edge) grouped with the others
on the same undirected edge, by a counting sort (no argsort over millions of keys). The contour's
tidy-up, the clean-up's boundary tests and the benchmarks' edge counts all read these groups.

A grouping is four arrays: per grouped half-edge its face (``owner``) and the corner its edge starts
at (``corner``: edge k runs from corner k to corner k+1); per group the offset of its first
half-edge (``first``) and its number of half-edges (``size``: 1 on a boundary, 2 inside a manifold,
3+ at a junction).
"""

from __future__ import annotations

import numba as nb
import numpy as np


GROUPING_CHUNKS = 4
"""The grouping's counting sort runs over at most this many slices of the faces at once (each keeps
a count per vertex, so more slices cost memory without adding cores on most machines)."""


@nb.njit(parallel=True, cache=True)
def _group_half_edges(faces, num_vertices, chunks):
    """Lists the half-edges of each undirected edge of ``faces`` together, without a sort: a
    counting sort by the edge's lower vertex, then, within that vertex's few edges, by the upper
    (kept beside the sorted half-edges, so the matching reads memory in order). The counting sort
    runs over ``chunks`` slices of the faces in parallel, each writing after the slices before it,
    so the order is the serial one; the matching is per vertex, each into its own range. Returns
    (owner face and start corner per grouped half-edge, group start offsets, group sizes)."""
    num_faces = faces.shape[0]
    n = num_faces * 3
    step = (num_faces + chunks - 1) // chunks
    slot = np.zeros((chunks, num_vertices), dtype=np.int64)  # per slice and lower vertex: a count, then a write position
    for c in nb.prange(chunks):
        for f in range(c * step, min((c + 1) * step, num_faces)):
            for k in range(3):
                slot[c, min(faces[f, k], faces[f, (k + 1) % 3])] += 1
    count = np.zeros(num_vertices + 1, dtype=np.int64)
    for v in range(num_vertices):
        position = count[v]
        for c in range(chunks):
            here = slot[c, v]
            slot[c, v] = position
            position += here
        count[v + 1] = position
    by_lower = np.empty(n, dtype=np.int64)
    upper = np.empty(n, dtype=np.int64)
    for c in nb.prange(chunks):
        for f in range(c * step, min((c + 1) * step, num_faces)):
            for k in range(3):
                a, b = faces[f, k], faces[f, (k + 1) % 3]
                lo = min(a, b)
                i = slot[c, lo]
                by_lower[i] = 3 * f + k
                upper[i] = max(a, b)
                slot[c, lo] = i + 1
    # groups per lower vertex (its distinct upper ends), then each vertex fills its own ranges
    groups_before = np.zeros(num_vertices + 1, dtype=np.int64)
    for v in nb.prange(num_vertices):
        distinct = 0
        for i in range(count[v], count[v + 1]):
            seen = False
            for j in range(count[v], i):
                if upper[j] == upper[i]:
                    seen = True
                    break
            if not seen:
                distinct += 1
        groups_before[v + 1] = distinct
    groups_before = np.cumsum(groups_before)
    owner = np.empty(n, dtype=np.int64)
    corner = np.empty(n, dtype=np.int64)
    first = np.empty(groups_before[num_vertices], dtype=np.int64)
    size = np.empty(groups_before[num_vertices], dtype=np.int64)
    done = np.zeros(n, dtype=np.bool_)
    for v in nb.prange(num_vertices):
        start, stop = count[v], count[v + 1]
        out, group = start, groups_before[v]
        for i in range(start, stop):
            if done[i]:
                continue
            first[group] = out
            for j in range(i, stop):
                if not done[j] and upper[j] == upper[i]:
                    done[j] = True
                    owner[out] = by_lower[j] // 3
                    corner[out] = by_lower[j] % 3
                    out += 1
            size[group] = out - first[group]
            group += 1
    return owner, corner, first, size


def half_edge_groups(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Directed face edges grouped by undirected edge: (owner face and corner k of the edge's start,
    per grouped half-edge; group start offsets; group sizes)."""
    if len(faces) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, empty
    chunks = max(1, min(nb.get_num_threads(), GROUPING_CHUNKS, len(faces) // 65536))
    return _group_half_edges(np.ascontiguousarray(faces, dtype=np.int64), int(faces.max()) + 1, chunks)


@nb.njit(cache=True)
def border_half_edges(owner, first, size, alive):
    """The half-edges whose undirected edge has exactly one alive face (a boundary edge of the
    alive faces), as ids into the grouped half-edge arrays."""
    out = np.empty(owner.shape[0], dtype=np.int64)
    count = 0
    for g in range(first.shape[0]):
        alive_count, last = 0, -1
        for h in range(first[g], first[g] + size[g]):
            if alive[owner[h]]:
                alive_count += 1
                last = h
        if alive_count == 1:
            out[count] = last
            count += 1
    return out[:count]


@nb.njit(cache=True)
def slot_groups(owner, corner, first, size, num_faces):
    """The group of each face corner's half-edge (face f, corner k → entry 3f + k)."""
    out = np.empty(3 * num_faces, dtype=np.int64)
    for g in range(first.shape[0]):
        for h in range(first[g], first[g] + size[g]):
            out[3 * owner[h] + corner[h]] = g
    return out


@nb.njit(cache=True)
def split_groups(owner, corner, first, size, faces, num_vertices, touched):
    """Regroups, in place, the ``touched`` groups after some of their ends were renumbered in
    ``faces`` (a vertex split in two splits its edges' groups): within a group's run the half-edges
    are ordered by their new edge, the first edge keeps the group, each other one becomes a group
    appended at the end. Returns the new (first, size)."""
    extra_first = np.empty(owner.shape[0], dtype=np.int64)
    extra_size = np.empty(owner.shape[0], dtype=np.int64)
    extra = 0
    for g in touched:
        start, stop = first[g], first[g] + size[g]
        key = np.empty(stop - start, dtype=np.int64)
        for i in range(start, stop):
            a, b = faces[owner[i], corner[i]], faces[owner[i], (corner[i] + 1) % 3]
            key[i - start] = min(a, b) * num_vertices + max(a, b)
        order = np.argsort(key, kind="mergesort")
        run_owner = owner[start:stop][order]
        run_corner = corner[start:stop][order]
        owner[start:stop] = run_owner
        corner[start:stop] = run_corner
        key = key[order]
        size[g] = stop - start
        split = False
        for i in range(1, stop - start):
            if key[i] == key[i - 1]:
                continue
            if not split:
                size[g] = i
                split = True
            else:
                extra_size[extra - 1] = start + i - extra_first[extra - 1]
            extra_first[extra] = start + i
            extra_size[extra] = stop - start - i
            extra += 1
    return np.concatenate((first, extra_first[:extra])), np.concatenate((size, extra_size[:extra]))


def edge_valence(num_vertices: int, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Undirected edges [E, 2] (smaller index first, sorted) and how many faces use each."""
    if len(faces) == 0:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.int64)
    owner, corner, first, size = half_edge_groups(faces)
    lead = first
    a = faces[owner[lead], corner[lead]].astype(np.int64)
    b = faces[owner[lead], (corner[lead] + 1) % 3].astype(np.int64)
    edges = np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1)
    order = np.lexsort((edges[:, 1], edges[:, 0]))
    return edges[order], size[order]


def boundary_half_edges(num_vertices: int, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The faces' directed edges [3F, 2] (all first edges, then all second, then all third) and which
    of them lie on the boundary (their edge belongs to one face only)."""
    half = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    on_border = np.zeros(len(half), dtype=bool)
    if len(faces):
        owner, corner, first, size = half_edge_groups(faces)
        lone = first[size == 1]
        on_border[corner[lone] * len(faces) + owner[lone]] = True
    return half, on_border


@nb.njit(cache=True)
def _simple_cycles(border, num_vertices):
    count = np.zeros(num_vertices + 1, dtype=np.int64)
    for e in range(border.shape[0]):
        count[border[e, 0] + 1] += 1
    start = np.cumsum(count)
    leaving = np.empty(border.shape[0], dtype=np.int64)  # the half-edges leaving each vertex, grouped
    fill = start[:-1].copy()
    for e in range(border.shape[0]):
        leaving[fill[border[e, 0]]] = e
        fill[border[e, 0]] += 1
    taken = start[:-1].copy()  # per vertex: its next untaken leaving half-edge
    label = np.full(border.shape[0], -1, dtype=np.int64)
    on_path = np.full(num_vertices, -1, dtype=np.int64)  # vertex → its position on the walk
    path = np.empty(border.shape[0], dtype=np.int64)
    cycles = 0
    for first in range(border.shape[0]):
        if label[first] >= 0 or taken[border[first, 0]] >= start[border[first, 0] + 1]:
            continue
        depth = 0
        vertex = border[first, 0]
        while True:
            if taken[vertex] >= start[vertex + 1]:  # a dead end (an unbalanced boundary): give up on the walk
                for k in range(depth):
                    on_path[border[path[k], 0]] = -1
                break
            e = leaving[taken[vertex]]
            taken[vertex] += 1
            on_path[vertex] = depth
            path[depth] = e
            depth += 1
            vertex = border[e, 1]
            if on_path[vertex] >= 0:  # back at a vertex of the walk: the part since then is a simple cycle
                top = on_path[vertex]
                for k in range(top, depth):
                    label[path[k]] = cycles
                    on_path[border[path[k], 0]] = -1
                cycles += 1
                depth = top
                if depth == 0:
                    break
    return label, cycles


def simple_cycles(border: np.ndarray, num_vertices: int) -> tuple[np.ndarray, int]:
    """The boundary half-edges ``border`` [B, 2] (each from a face, so a loop runs one way round)
    split into simple cycles — no vertex twice — where loops touch at a vertex: a cycle label per
    half-edge (-1 for what closes no cycle) and the number of cycles. Where a loop passes a vertex
    twice, which way it goes on is arbitrary; each part is still one simple cycle."""
    border = np.ascontiguousarray(border, dtype=np.int64)
    if len(border) == 0:
        return np.zeros(0, dtype=np.int64), 0
    label, cycles = _simple_cycles(border, int(num_vertices))
    return label, int(cycles)


__all__ = ["border_half_edges", "boundary_half_edges", "edge_valence", "half_edge_groups", "simple_cycles", "slot_groups",
           "split_groups"]
