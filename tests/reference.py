"""Brute-force float64 references the tests compare the fast code against.

Written independently of model.udf (projection + barycentric test + segment distances instead of
the Voronoi-region walk), so a shared mistake is unlikely.
"""

from __future__ import annotations

import numpy as np


def _segment_dist2(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    denom = np.maximum((ab * ab).sum(-1), 1e-300)
    t = np.clip(((p - a) * ab).sum(-1) / denom, 0.0, 1.0)
    q = a + t[..., None] * ab
    return ((p - q) ** 2).sum(-1)


def point_triangle_distance(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Distance from every point [P, 3] to the nearest of the triangles [T, 3, 3] (float64)."""
    best = np.full(points.shape[0], np.inf)
    for tri in triangles:
        a, b, c = tri
        p = points
        d2 = np.minimum(np.minimum(_segment_dist2(p, a, b), _segment_dist2(p, b, c)), _segment_dist2(p, c, a))
        n = np.cross(b - a, c - a)
        nn = float(n @ n)
        if nn > 1e-24:
            h = (p - a) @ n / nn  # signed height / |n|²
            q = p - h[:, None] * n  # projection onto the plane
            # barycentric sign test: q inside iff it is on the same side of all three edges
            s1 = np.cross(b - a, q - a) @ n
            s2 = np.cross(c - b, q - b) @ n
            s3 = np.cross(a - c, q - c) @ n
            inside = (s1 >= 0) & (s2 >= 0) & (s3 >= 0)
            d2 = np.where(inside, h * h * nn, d2)
        best = np.minimum(best, d2)
    return np.sqrt(best)


def dense_udf(unit_vertices: np.ndarray, faces: np.ndarray, resolution: int) -> np.ndarray:
    """The dense normalised truncated UDF [N, N, N] (only for small N in tests).

    Each triangle updates the voxels of its bounding box grown by τ = 4 voxels (no voxel outside
    it can be closer than τ)."""
    n = resolution
    dist = np.full((n, n, n), 4.0)
    for tri in ((unit_vertices + 0.5) * n - 0.5)[faces]:
        lo = np.clip(np.ceil(tri.min(axis=0) - 4.0), 0, n - 1).astype(int)
        hi = np.clip(np.floor(tri.max(axis=0) + 4.0), 0, n - 1).astype(int)
        if np.any(hi < lo):
            continue
        axes = [np.arange(lo[i], hi[i] + 1, dtype=np.float64) for i in range(3)]
        pts = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
        box = dist[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1]
        np.minimum(box, point_triangle_distance(pts.reshape(-1, 3), tri[None]).reshape(box.shape), out=box)
    return np.minimum(dist, 4.0) / 4.0
