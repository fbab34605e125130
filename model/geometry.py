"""Mesh helpers in numba that the extraction, the clean-up, the metrics and the procedural shapes
share: vertex normals, connected components, signed volumes, compaction. One home for each, so a
fix to one reaches every caller. (Face normals and areas are numpy, in :mod:`model.mesh`, which
must load without numba; the edge table is :mod:`model.edges`.)"""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True)
def _vertex_normals(vertices, faces, out):
    for f in range(faces.shape[0]):
        a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
        ux, uy, uz = vertices[b, 0] - vertices[a, 0], vertices[b, 1] - vertices[a, 1], vertices[b, 2] - vertices[a, 2]
        vx, vy, vz = vertices[c, 0] - vertices[a, 0], vertices[c, 1] - vertices[a, 1], vertices[c, 2] - vertices[a, 2]
        nx, ny, nz = uy * vz - uz * vy, uz * vx - ux * vz, ux * vy - uy * vx
        for k in range(3):
            out[faces[f, k], 0] += nx
            out[faces[f, k], 1] += ny
            out[faces[f, k], 2] += nz
    for v in range(out.shape[0]):
        length = np.sqrt(out[v, 0] ** 2 + out[v, 1] ** 2 + out[v, 2] ** 2)
        if length > 0:
            out[v, 0] /= length
            out[v, 1] /= length
            out[v, 2] /= length


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (zero for unused vertices)."""
    out = np.zeros((len(vertices), 3), dtype=np.float64)
    _vertex_normals(np.ascontiguousarray(vertices, dtype=np.float64), np.ascontiguousarray(faces, dtype=np.int64), out)
    return out


@nb.njit(cache=True, inline="always")
def union(parent, a, b):
    """Join the sets of a and b in a union-find forest (path halving); the smaller index becomes the
    root, so every root is its set's smallest member."""
    while parent[a] != a:
        parent[a] = parent[parent[a]]
        a = parent[a]
    while parent[b] != b:
        parent[b] = parent[parent[b]]
        b = parent[b]
    if a != b:
        parent[max(a, b)] = min(a, b)


@nb.njit(cache=True)
def roots(parent):
    """Each member's root in a union-find forest (int64 [N]): the name of its set."""
    out = np.empty(parent.shape[0], dtype=np.int64)
    for x in range(parent.shape[0]):
        r = x
        while parent[r] != r:
            r = parent[r]
        out[x] = r
    return out


@nb.njit(cache=True)
def _union_find_labels(num_vertices, faces):
    parent = np.arange(num_vertices)
    for f in range(faces.shape[0]):
        for k in (1, 2):
            union(parent, faces[f, 0], faces[f, k])
    label = np.empty(num_vertices, dtype=np.int64)
    count = 0
    for v in range(num_vertices):  # roots are their own smallest member: number them in order
        r = v
        while parent[r] != r:
            r = parent[r]
        if r == v:
            label[v] = count
            count += 1
        else:
            label[v] = label[r]
    return count, label


def face_components(num_vertices: int, faces: np.ndarray) -> tuple[int, np.ndarray]:
    """Connected components of a mesh through shared vertices: (count, component id per face)."""
    count, label = _union_find_labels(num_vertices, np.ascontiguousarray(faces, dtype=np.int64))
    return int(count), label[faces[:, 0]]


@nb.njit(cache=True)
def _signed_volumes(vertices, faces, component, count):
    out = np.zeros(count)
    cx, cy, cz = 0.0, 0.0, 0.0
    for v in range(vertices.shape[0]):
        cx += vertices[v, 0]
        cy += vertices[v, 1]
        cz += vertices[v, 2]
    cx, cy, cz = cx / vertices.shape[0], cy / vertices.shape[0], cz / vertices.shape[0]
    for f in range(faces.shape[0]):
        a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
        ax, ay, az = vertices[a, 0] - cx, vertices[a, 1] - cy, vertices[a, 2] - cz
        bx, by, bz = vertices[b, 0] - cx, vertices[b, 1] - cy, vertices[b, 2] - cz
        qx, qy, qz = vertices[c, 0] - cx, vertices[c, 1] - cy, vertices[c, 2] - cz
        out[component[f]] += (ax * (by * qz - bz * qy) + ay * (bz * qx - bx * qz) + az * (bx * qy - by * qx)) / 6.0
    return out


def signed_volumes(vertices: np.ndarray, faces: np.ndarray, component: np.ndarray, count: int) -> np.ndarray:
    """Signed enclosed volume of each component (divergence theorem; positive when normals point
    out). The origin is the vertices' mean: any origin works for closed shells, this one keeps the
    products small."""
    return _signed_volumes(np.ascontiguousarray(vertices, dtype=np.float64), np.ascontiguousarray(faces, dtype=np.int64),
                           np.ascontiguousarray(component, dtype=np.int64), int(count))


@nb.njit(parallel=True, cache=True)
def _compact(vertices, faces):
    """:func:`compact`'s work: the used vertices in order, and the faces renumbered onto them."""
    used = np.zeros(vertices.shape[0], dtype=np.bool_)
    for f in range(faces.shape[0]):  # serial: parallel writes to one flag would race
        used[faces[f, 0]] = True
        used[faces[f, 1]] = True
        used[faces[f, 2]] = True
    remap = np.cumsum(used) - 1
    kept = np.empty((remap[-1] + 1 if vertices.shape[0] else 0, 3))
    for v in nb.prange(vertices.shape[0]):
        if used[v]:
            kept[remap[v], 0], kept[remap[v], 1], kept[remap[v], 2] = vertices[v, 0], vertices[v, 1], vertices[v, 2]
    out = np.empty_like(faces)
    for f in nb.prange(faces.shape[0]):
        out[f, 0], out[f, 1], out[f, 2] = remap[faces[f, 0]], remap[faces[f, 1]], remap[faces[f, 2]]
    return kept, out


def compact(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop vertices no face uses."""
    faces = np.asarray(faces)
    if len(faces) == 0:
        return np.empty((0, 3)), np.empty((0, 3), dtype=np.int64)
    return _compact(np.ascontiguousarray(vertices, dtype=np.float64), np.ascontiguousarray(faces, dtype=np.int64))


@nb.njit(cache=True)
def vertex_faces(faces, num_vertices):
    """Per vertex the faces that use it (CSR: start offsets [V + 1], face ids), by a counting sort."""
    start = np.zeros(num_vertices + 1, dtype=np.int64)
    for f in range(faces.shape[0]):
        for k in range(3):
            start[faces[f, k] + 1] += 1
    for v in range(num_vertices):
        start[v + 1] += start[v]
    fill = start[:-1].copy()
    ring = np.empty(3 * faces.shape[0], dtype=np.int64)
    for f in range(faces.shape[0]):
        for k in range(3):
            v = faces[f, k]
            ring[fill[v]] = f
            fill[v] += 1
    return start, ring


__all__ = ["compact", "face_components", "signed_volumes", "union", "vertex_faces", "vertex_normals"]
