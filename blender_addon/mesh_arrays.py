"""A result mesh laid out the way Blender stores it, prepared off the main thread.

Blender derives a mesh's edges itself (``Mesh.update(calc_edges=True)``), but on a 1024³ result
(millions of triangles) that one call blocks the main thread for seconds and cannot be split. The
edges are therefore computed here, with numpy, in the network thread (numpy's sort releases the
GIL, so the UI keeps running); the main thread then only copies arrays into the mesh, in steps short
enough for one UI timer tick each (:func:`mesh_io.mesh_build_steps`). No bpy here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def check_result(vertices: np.ndarray, faces: np.ndarray) -> None:
    """Refuse a result Blender must not be handed: non-finite coordinates or indices out of range
    (a bad mesh datablock can crash Blender later, far from the cause)."""
    if vertices.size and not np.isfinite(vertices).all():
        raise ValueError("the backend sent a result with NaN or Inf vertex coordinates")
    if faces.size and (int(faces.min()) < 0 or int(faces.max()) >= len(vertices)):
        raise ValueError(f"the backend sent face indices outside 0..{len(vertices) - 1}")


def mesh_edges(faces: np.ndarray, num_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """The undirected edges of triangles [F, 3] (int32 [E, 2], lower index first) and, per corner,
    the edge from that corner to the next (int32 [3F]: Blender's corner edge)."""
    if len(faces) == 0:
        return np.zeros((0, 2), dtype=np.int32), np.zeros(0, dtype=np.int32)
    start = faces.reshape(-1).astype(np.int64)
    end = np.roll(faces, -1, axis=1).reshape(-1).astype(np.int64)
    keys, corner_edges = np.unique(np.minimum(start, end) * num_vertices + np.maximum(start, end), return_inverse=True)
    edges = np.stack([keys // num_vertices, keys % num_vertices], axis=1).astype(np.int32)
    return edges, corner_edges.astype(np.int32).reshape(-1)


@dataclass(frozen=True)
class MeshArrays:
    """float32 vertices [V, 3], int32 triangles [F, 3], their edges [E, 2] and corner edges [3F],
    checked (finite, indices in range)."""

    vertices: np.ndarray
    faces: np.ndarray
    edges: np.ndarray
    corner_edges: np.ndarray

    @classmethod
    def of(cls, vertices: np.ndarray, faces: np.ndarray) -> "MeshArrays":
        vertices = np.ascontiguousarray(vertices, dtype=np.float32).reshape(-1, 3)
        faces = np.ascontiguousarray(faces, dtype=np.int32).reshape(-1, 3)
        check_result(vertices, faces)
        edges, corner_edges = mesh_edges(faces, len(vertices))
        return cls(vertices, faces, edges, corner_edges)
