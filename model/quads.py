"""Quads from dual contouring, kept as quads where they are flat.

Dual contouring makes one quad per crossed grid edge (:mod:`model.contour`); the clean-up works on
its two triangles. A mesh with quads is stored as a triangle mesh whose first ``2·Q`` faces are
``Q`` quads, each as the consecutive pair ``(a, b, c), (a, c, d)`` (the quad ``a b c d`` split along
``a–c``): every consumer that wants triangles reads ``faces`` as it always did, and a writer or the
wire that can carry polygons reads quad ``q`` as ``faces[2q]`` plus the last corner of
``faces[2q + 1]`` (:func:`quad_corners`). Blender's Voxel Remesh returns quads; sculptors take them on
to Multires and subdivision.

A pair of triangles becomes a quad again only when it is safe to: both come from the same grid
edge's quad (the contour left it unfanned: the input does not bend across it), they share exactly
their diagonal and no other face uses it, they wind alike, the quad is convex (the other diagonal
splits it into two triangles facing the same way), and the two triangles' normals differ by at most
:data:`MAX_QUAD_BEND_DEGREES`. Everything else stays a triangle.
"""

from __future__ import annotations

import numpy as np

MAX_QUAD_BEND_DEGREES = 20.0
"""Two triangles of one contour quad whose normals differ by more than this stay two triangles: a
quad bent further shades and subdivides differently from the surface it stands for (Blender's own
Tris to Quads defaults to 40°; the contour's quads bend far less: at N=512 on the shared meshes
over 99 % of them bend by under 10°)."""


def _unit_normals(vertices: np.ndarray, tris: np.ndarray) -> np.ndarray:
    cross = np.cross(vertices[tris[:, 1]] - vertices[tris[:, 0]], vertices[tris[:, 2]] - vertices[tris[:, 0]])
    length = np.linalg.norm(cross, axis=1, keepdims=True)
    return np.divide(cross, length, out=np.zeros_like(cross), where=length > 0)


def _edge_uses(faces: np.ndarray, num_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """Every undirected edge of ``faces`` as one int64 key (sorted), and how many faces use it."""
    ends = np.sort(np.stack([faces, np.roll(faces, -1, axis=1)], axis=2).reshape(-1, 2), axis=1)
    keys, counts = np.unique(ends[:, 0] * np.int64(num_vertices) + ends[:, 1], return_counts=True)
    return keys, counts


def pair_quads(vertices: np.ndarray, faces: np.ndarray, quad_id: np.ndarray,
               max_bend_degrees: float = MAX_QUAD_BEND_DEGREES) -> tuple[np.ndarray, int]:
    """The faces reordered with the quads first (see the module's docstring), and the number of quads.

    ``quad_id``: per face, the contour quad (grid edge) it comes from, or -1 (a fanned quad's
    triangle, or one made by the clean-up). Faces keep their orientation; no vertex moves."""
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    quad_id = np.asarray(quad_id, dtype=np.int64)
    if len(faces) != len(quad_id):
        raise ValueError(f"quad_id has {len(quad_id)} entries for {len(faces)} faces")
    candidates = np.flatnonzero(quad_id >= 0)
    order = candidates[np.argsort(quad_id[candidates], kind="stable")]
    ids = quad_id[order]
    # an id held by exactly two faces: the two triangles of one quad, both still there
    starts = np.flatnonzero(np.concatenate([[True], ids[1:] != ids[:-1]]))
    sizes = np.diff(np.concatenate([starts, [len(ids)]]))
    two = starts[sizes == 2]
    f0, f1 = order[two], order[two + 1]
    t0, t1 = faces[f0], faces[f1]
    # the diagonal: t0's edge (k, k+1) that t1 holds reversed
    same = t0[:, :, None] == t1[:, None, :]  # [P, 3, 3]: t0 corner i is t1 corner j
    shared = same.any(axis=2)
    good = shared.sum(axis=1) == 2
    good &= same.any(axis=1).sum(axis=1) == 2  # t1 shares exactly two corners too (no repeated corner)
    # the diagonal is t0's edge from corner k to k + 1 (both shared): t0 = (a, c, b) in winding order
    k = np.argmax(shared & np.roll(shared, -1, axis=1), axis=1)
    rows = np.arange(len(t0))
    a = t0[rows, k]
    c = t0[rows, (k + 1) % 3]
    b = t0[rows, (k + 2) % 3]
    d = t1.sum(axis=1) - a - c  # t1's corner off the diagonal (meaningful where good)
    # winding alike: t1 runs the diagonal the other way, t1 = (c, a, d)
    j = np.argmax(t1 == c[:, None], axis=1)
    good &= t1[rows, (j + 1) % 3] == a
    good &= (a != b) & (c != b) & (d != a) & (d != c) & (b != d)
    # without the diagonal, t0's edges c -> b -> a and t1's a -> d -> c make the loop a, d, c, b
    quad = np.stack([a, d, c, b], axis=1)
    n0 = _unit_normals(vertices, np.stack([a, c, b], axis=1))
    n1 = _unit_normals(vertices, np.stack([c, a, d], axis=1))
    good &= np.einsum("ij,ij->i", n0, n1) >= np.cos(np.radians(max_bend_degrees))
    # convex: split along the other diagonal (d - b), both halves face the same way as the first split
    mean = n0 + n1
    m0 = _unit_normals(vertices, np.stack([a, d, b], axis=1))
    m1 = _unit_normals(vertices, np.stack([d, c, b], axis=1))
    good &= (np.einsum("ij,ij->i", m0, mean) > 0) & (np.einsum("ij,ij->i", m1, mean) > 0)
    # no third face on the diagonal (a non-manifold edge is not inside one polygon)
    if good.any():
        keys, counts = _edge_uses(faces, len(vertices))
        lo, hi = np.minimum(a, c), np.maximum(a, c)
        at = np.searchsorted(keys, lo * np.int64(len(vertices)) + hi)
        good &= counts[np.minimum(at, len(keys) - 1)] == 2
    quad, f0, f1 = quad[good], f0[good], f1[good]
    paired = np.zeros(len(faces), dtype=bool)
    paired[f0] = paired[f1] = True
    # quad (p, q, r, s) stored as (p, q, r), (p, r, s)
    as_pairs = np.stack([quad[:, [0, 1, 2]], quad[:, [0, 2, 3]]], axis=1).reshape(-1, 3)
    return np.concatenate([as_pairs, faces[~paired]]).astype(np.int64), int(len(quad))


def quad_corners(faces: np.ndarray, num_quads: int) -> np.ndarray:
    """The quads [Q, 4] of a mesh stored as :func:`pair_quads` leaves it."""
    pairs = np.asarray(faces)[: 2 * num_quads].reshape(num_quads, 2, 3)
    return np.concatenate([pairs[:, 0, :], pairs[:, 1, 2:]], axis=1)


def check_quad_pairs(faces: np.ndarray, num_quads: int) -> None:
    """Raise ValueError unless the first ``2·num_quads`` faces are quads as :func:`pair_quads` stores
    them (what a reader of the wire or of a file must be able to rely on)."""
    faces = np.asarray(faces)
    if num_quads < 0 or 2 * num_quads > len(faces):
        raise ValueError(f"{num_quads} quads need {2 * num_quads} faces, the mesh has {len(faces)}")
    pairs = faces[: 2 * num_quads].reshape(num_quads, 2, 3)
    bad = (pairs[:, 0, 0] != pairs[:, 1, 0]) | (pairs[:, 0, 2] != pairs[:, 1, 1])
    if bad.any():
        q = int(np.flatnonzero(bad)[0])
        raise ValueError(f"quad {q}: faces {2 * q} and {2 * q + 1} are not one quad split along its first diagonal")


def polygon_counts(num_faces: int, num_quads: int) -> tuple[int, int]:
    """(quads, triangles) of a mesh of ``num_faces`` triangles whose first ``2·num_quads`` are quads."""
    return num_quads, num_faces - 2 * num_quads


__all__ = ["MAX_QUAD_BEND_DEGREES", "check_quad_pairs", "pair_quads", "polygon_counts", "quad_corners"]
