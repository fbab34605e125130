"""Exact closest points on a set of triangles or segments, through a bounding-volume hierarchy.

Used by the metrics (distances between meshes) and by the clean-up (in direct mode the input mesh
is known exactly, so the deflated surface can be put on it rather than on an interpolated field).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from model.mesh import MeshError, face_normals_and_areas



@numba.njit(cache=True)
def _closest_on_triangle(p0, p1, p2, a0, a1, a2, b0, b1, b2, c0, c1, c2):
    """Closest point to p on triangle abc (Ericson, Real-Time Collision Detection, 5.1.5)."""
    ab0, ab1, ab2 = b0 - a0, b1 - a1, b2 - a2
    ac0, ac1, ac2 = c0 - a0, c1 - a1, c2 - a2
    ap0, ap1, ap2 = p0 - a0, p1 - a1, p2 - a2
    d1 = ab0 * ap0 + ab1 * ap1 + ab2 * ap2
    d2 = ac0 * ap0 + ac1 * ap1 + ac2 * ap2
    if d1 <= 0.0 and d2 <= 0.0:
        return a0, a1, a2
    bp0, bp1, bp2 = p0 - b0, p1 - b1, p2 - b2
    d3 = ab0 * bp0 + ab1 * bp1 + ab2 * bp2
    d4 = ac0 * bp0 + ac1 * bp1 + ac2 * bp2
    if d3 >= 0.0 and d4 <= d3:
        return b0, b1, b2
    vc = d1 * d4 - d3 * d2
    # d1 − d3 = |ab|², d2 − d6 = |ac|², (d4 − d3) + (d5 − d6) = |bc|²: an edge of zero length (a
    # degenerate triangle) is skipped, and the point's region is found on the triangle's other edges
    if vc <= 0.0 and d1 >= 0.0 and d3 <= 0.0 and d1 > d3:
        v = d1 / (d1 - d3)
        return a0 + v * ab0, a1 + v * ab1, a2 + v * ab2
    cp0, cp1, cp2 = p0 - c0, p1 - c1, p2 - c2
    d5 = ab0 * cp0 + ab1 * cp1 + ab2 * cp2
    d6 = ac0 * cp0 + ac1 * cp1 + ac2 * cp2
    if d6 >= 0.0 and d5 <= d6:
        return c0, c1, c2
    vb = d5 * d2 - d1 * d6
    if vb <= 0.0 and d2 >= 0.0 and d6 <= 0.0 and d2 > d6:
        w = d2 / (d2 - d6)
        return a0 + w * ac0, a1 + w * ac1, a2 + w * ac2
    va = d3 * d6 - d5 * d4
    if va <= 0.0 and (d4 - d3) >= 0.0 and (d5 - d6) >= 0.0 and (d4 - d3) + (d5 - d6) > 0.0:
        w = (d4 - d3) / ((d4 - d3) + (d5 - d6))
        return b0 + w * (c0 - b0), b1 + w * (c1 - b1), b2 + w * (c2 - b2)
    denom = va + vb + vc
    if denom == 0.0:  # degenerate triangle: fall back to its first vertex
        return a0, a1, a2
    v = vb / denom
    w = vc / denom
    return a0 + ab0 * v + ac0 * w, a1 + ab1 * v + ac1 * w, a2 + ab2 * v + ac2 * w


@numba.njit(cache=True)
def _closest_on_segment(p0, p1, p2, a0, a1, a2, b0, b1, b2):
    ab0, ab1, ab2 = b0 - a0, b1 - a1, b2 - a2
    ll = ab0 * ab0 + ab1 * ab1 + ab2 * ab2
    t = 0.0 if ll == 0.0 else ((p0 - a0) * ab0 + (p1 - a1) * ab1 + (p2 - a2) * ab2) / ll
    t = min(max(t, 0.0), 1.0)
    return a0 + t * ab0, a1 + t * ab1, a2 + t * ab2


@numba.njit(cache=True)
def _closest_on_primitive(p0, p1, p2, prim, vertices, elements):
    """Closest point on a triangle (3 indices) or a segment (2 indices) of ``elements``."""
    ia, ib = elements[prim, 0], elements[prim, 1]
    if elements.shape[1] == 2:
        return _closest_on_segment(
            p0, p1, p2,
            vertices[ia, 0], vertices[ia, 1], vertices[ia, 2],
            vertices[ib, 0], vertices[ib, 1], vertices[ib, 2],
        )
    ic = elements[prim, 2]
    return _closest_on_triangle(
        p0, p1, p2,
        vertices[ia, 0], vertices[ia, 1], vertices[ia, 2],
        vertices[ib, 0], vertices[ib, 1], vertices[ib, 2],
        vertices[ic, 0], vertices[ic, 1], vertices[ic, 2],
    )


@numba.njit(cache=True)
def _box_distance2(p0, p1, p2, lo, hi, node):
    d = 0.0
    if p0 < lo[node, 0]:
        d += (lo[node, 0] - p0) ** 2
    elif p0 > hi[node, 0]:
        d += (p0 - hi[node, 0]) ** 2
    if p1 < lo[node, 1]:
        d += (lo[node, 1] - p1) ** 2
    elif p1 > hi[node, 1]:
        d += (p1 - hi[node, 1]) ** 2
    if p2 < lo[node, 2]:
        d += (lo[node, 2] - p2) ** 2
    elif p2 > hi[node, 2]:
        d += (p2 - hi[node, 2]) ** 2
    return d


@numba.njit(cache=True, parallel=True)
def _bvh_nearest(points, vertices, elements, order, first, last, lo, hi, leaf_base, limit2):
    """Exact nearest primitive per point: branch and bound over an implicit (heap-ordered) BVH,
    nearer child first, pruning every box farther than the best hit so far, or than ``limit2``
    (squared) before any hit: a point with nothing that near gets primitive -1."""
    n = points.shape[0]
    dist = np.empty(n)
    prim = np.empty(n, dtype=np.int64)
    for q in numba.prange(n):
        p0, p1, p2 = points[q, 0], points[q, 1], points[q, 2]
        best = limit2
        best_p = -1
        stack = np.empty(256, dtype=np.int64)
        bound = np.empty(256)
        stack[0] = 1
        bound[0] = 0.0
        top = 1
        while top > 0:
            top -= 1
            node = stack[top]
            if bound[top] >= best:
                continue
            if node >= leaf_base:
                for t in range(first[node], last[node]):
                    e = order[t]
                    x, y, z = _closest_on_primitive(p0, p1, p2, e, vertices, elements)
                    d = (x - p0) ** 2 + (y - p1) ** 2 + (z - p2) ** 2
                    if d < best:
                        best = d
                        best_p = e
                continue
            left, right = 2 * node, 2 * node + 1
            dl = _box_distance2(p0, p1, p2, lo, hi, left)
            dr = _box_distance2(p0, p1, p2, lo, hi, right)
            if dl <= dr:
                if dr < best:
                    stack[top] = right
                    bound[top] = dr
                    top += 1
                if dl < best:
                    stack[top] = left
                    bound[top] = dl
                    top += 1
            else:
                if dl < best:
                    stack[top] = left
                    bound[top] = dl
                    top += 1
                if dr < best:
                    stack[top] = right
                    bound[top] = dr
                    top += 1
        dist[q] = math.sqrt(best)
        prim[q] = best_p
    return dist, prim


@numba.njit(cache=True, parallel=True)
def _project(points, prim, vertices, elements):
    out = np.empty_like(points)
    for q in numba.prange(points.shape[0]):
        x, y, z = _closest_on_primitive(points[q, 0], points[q, 1], points[q, 2], prim[q], vertices, elements)
        out[q, 0], out[q, 1], out[q, 2] = x, y, z
    return out


@numba.njit(cache=True)
def _build_bvh(prim_lo, prim_hi, leaf_base):
    """Top-down median split along the longest axis of the centroids, into a complete binary tree
    stored heap-style (node 1 is the root, children 2i and 2i+1, leaves from ``leaf_base``)."""
    n = prim_lo.shape[0]
    order = np.arange(n)
    first = np.zeros(2 * leaf_base, dtype=np.int64)
    last = np.zeros(2 * leaf_base, dtype=np.int64)
    last[1] = n
    for node in range(1, leaf_base):
        s, e = first[node], last[node]
        m = (s + e) // 2
        if e - s > 2:
            span = np.empty(3)
            for axis in range(3):
                lo = np.inf
                hi = -np.inf
                for t in range(s, e):
                    c = prim_lo[order[t], axis] + prim_hi[order[t], axis]
                    lo = min(lo, c)
                    hi = max(hi, c)
                span[axis] = hi - lo
            axis = np.argmax(span)
            key = np.empty(e - s)
            for t in range(s, e):
                key[t - s] = prim_lo[order[t], axis] + prim_hi[order[t], axis]
            order[s:e] = order[s:e][np.argsort(key, kind="mergesort")]
        first[2 * node], last[2 * node] = s, m
        first[2 * node + 1], last[2 * node + 1] = m, e
    lo = np.full((2 * leaf_base, 3), np.inf)
    hi = np.full((2 * leaf_base, 3), -np.inf)
    for node in range(leaf_base, 2 * leaf_base):
        for t in range(first[node], last[node]):
            for axis in range(3):
                lo[node, axis] = min(lo[node, axis], prim_lo[order[t], axis])
                hi[node, axis] = max(hi[node, axis], prim_hi[order[t], axis])
    for node in range(leaf_base - 1, 0, -1):
        for axis in range(3):
            lo[node, axis] = min(lo[2 * node, axis], lo[2 * node + 1, axis])
            hi[node, axis] = max(hi[2 * node, axis], hi[2 * node + 1, axis])
    return order, first, last, lo, hi


class PrimitiveIndex:
    """Exact closest-point queries against triangles (``elements`` [M, 3]) or segments ([M, 2]).

    A bounding-volume hierarchy built by median splits (at most ``leaf_size`` primitives per
    leaf, a complete binary tree stored heap-style) and a branch-and-bound descent per query. Exact for near and far points alike (a KD-tree over
    surface samples is fast near the surface but very slow far from it, which a bad prediction is).
    """

    def __init__(self, vertices: np.ndarray, elements: np.ndarray, leaf_size: int = 4):
        self.vertices = np.ascontiguousarray(vertices, dtype=np.float64)
        self.elements = np.ascontiguousarray(elements, dtype=np.int64)
        if self.elements.shape[0] == 0:
            raise MeshError("nothing to measure distances to (no primitives)")
        corners = self.vertices[self.elements]
        leaves = -(-self.elements.shape[0] // int(leaf_size))
        self.leaf_base = 1 << max(0, int(math.ceil(math.log2(max(leaves, 1)))))
        self.order, self.first, self.last, self.lo, self.hi = _build_bvh(
            corners.min(axis=1), corners.max(axis=1), self.leaf_base
        )

    def query(self, points: np.ndarray, near: float = np.inf) -> tuple[np.ndarray, np.ndarray]:
        """Distance to the nearest primitive and that primitive's index, per point. ``near``: the
        distance most points are expected within (a hint: the search prunes by it first, and
        searches again without it for the points it leaves unanswered)."""
        pts = np.ascontiguousarray(points, dtype=np.float64).reshape(-1, 3)
        if pts.shape[0] == 0:
            return np.zeros(0), np.zeros(0, dtype=np.int64)
        args = (self.vertices, self.elements, self.order, self.first, self.last, self.lo, self.hi, self.leaf_base)
        dist, prim = _bvh_nearest(pts, *args, float(near) ** 2)
        missed = np.flatnonzero(prim < 0)
        if len(missed):
            dist[missed], prim[missed] = _bvh_nearest(pts[missed], *args, np.inf)
        return dist, prim

    def distance(self, points: np.ndarray, near: float = np.inf) -> np.ndarray:
        return self.query(points, near)[0]

    def closest_points(self, points: np.ndarray, near: float = np.inf) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Distance, primitive index and the closest point itself, per point (``near``: see
        :meth:`query`)."""
        dist, prim = self.query(points, near)
        pts = np.ascontiguousarray(points, dtype=np.float64).reshape(-1, 3)
        return dist, prim, _project(pts, prim, self.vertices, self.elements)


class SurfaceIndex(PrimitiveIndex):
    """:class:`PrimitiveIndex` over a mesh's triangles, with the triangles' unit normals.

    Zero-area triangles are left out: they add no surface, only an undefined normal.
    """

    def __init__(self, vertices: np.ndarray, faces: np.ndarray, leaf_size: int = 4):
        normals, areas = face_normals_and_areas(np.asarray(vertices, dtype=np.float64), np.asarray(faces))
        good = np.flatnonzero(areas > 0)
        if good.size == 0:
            raise MeshError("every triangle of the mesh has zero area")
        super().__init__(vertices, np.asarray(faces)[good], leaf_size)
        self.face_ids = good
        self.normals = normals[good]


__all__ = ["PrimitiveIndex", "SurfaceIndex"]
