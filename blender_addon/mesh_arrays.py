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


def mesh_edges(corner_verts: np.ndarray, next_corner_verts: np.ndarray, num_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """The undirected edges of polygons given as each corner's vertex and the next corner's vertex
    of the same polygon (int32 [E, 2], lower index first) and, per corner, the edge from that corner
    to the next (int32 [C]: Blender's corner edge)."""
    if len(corner_verts) == 0:
        return np.zeros((0, 2), dtype=np.int32), np.zeros(0, dtype=np.int32)
    start = np.asarray(corner_verts, dtype=np.int64)
    end = np.asarray(next_corner_verts, dtype=np.int64)
    keys, corner_edges = np.unique(np.minimum(start, end) * num_vertices + np.maximum(start, end), return_inverse=True)
    edges = np.stack([keys // num_vertices, keys % num_vertices], axis=1).astype(np.int32)
    return edges, corner_edges.astype(np.int32).reshape(-1)


def triangle_edges(faces: np.ndarray, num_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`mesh_edges` of triangles [F, 3]."""
    faces = np.asarray(faces)
    return mesh_edges(faces.reshape(-1), np.roll(faces, -1, axis=1).reshape(-1), num_vertices)


@dataclass(frozen=True)
class ColorLayer:
    """A colour attribute of the original, recreated on the result under the same name: ``domain``
    POINT or CORNER, ``data_type`` FLOAT_COLOR or BYTE_COLOR; its four channels are columns
    ``4·index … 4·index + 3`` of the colours sent and received."""

    name: str
    domain: str
    data_type: str


@dataclass(frozen=True)
class MeshArrays:
    """A checked result (finite, indices in range) as Blender stores it: float32 vertices [V, 3];
    polygons as corner vertices [C] with each polygon's first corner and corner count [P] (the
    backend's quads first, then its triangles); edges [E, 2] and corner edges [C]; optionally each
    polygon's material index [P] and each vertex's colours [V, 4·K] for ``color_layers``."""

    vertices: np.ndarray
    corner_verts: np.ndarray
    loop_start: np.ndarray
    loop_total: np.ndarray
    edges: np.ndarray
    corner_edges: np.ndarray
    material: np.ndarray | None = None
    colors: np.ndarray | None = None
    color_layers: tuple[ColorLayer, ...] = ()

    @property
    def num_polygons(self) -> int:
        return int(len(self.loop_start))

    @classmethod
    def of(cls, vertices: np.ndarray, faces: np.ndarray, num_quads: int = 0, material: np.ndarray | None = None,
           colors: np.ndarray | None = None, color_layers: tuple[ColorLayer, ...] = ()) -> "MeshArrays":
        """From the wire's triangles [F, 3], the first ``2·num_quads`` of them quads (two triangles
        each, split along the quad's first diagonal: ``model/quad_layout.py``), per triangle ``material``
        [F] and per vertex ``colors`` [V, 4·len(color_layers)]."""
        vertices = np.ascontiguousarray(vertices, dtype=np.float32).reshape(-1, 3)
        faces = np.ascontiguousarray(faces, dtype=np.int32).reshape(-1, 3)
        check_result(vertices, faces)
        if num_quads:
            from .wire import check_quad_pairs, quad_corners

            check_quad_pairs(faces, num_quads)  # ValueError names the first bad pair
            quads = quad_corners(faces, num_quads).astype(np.int32)
        else:
            quads = np.zeros((0, 4), dtype=np.int32)
        triangles = faces[2 * num_quads:]
        corner_verts = np.concatenate([quads.reshape(-1), triangles.reshape(-1)])
        next_verts = np.concatenate([np.roll(quads, -1, axis=1).reshape(-1), np.roll(triangles, -1, axis=1).reshape(-1)])
        loop_total = np.concatenate([np.full(len(quads), 4, np.int32), np.full(len(triangles), 3, np.int32)])
        loop_start = (np.cumsum(loop_total) - loop_total).astype(np.int32)
        edges, corner_edges = mesh_edges(corner_verts, next_verts, len(vertices))
        if material is not None:
            material = np.asarray(material, dtype=np.int32).reshape(-1)
            if len(material) != len(faces):
                raise ValueError(f"the backend sent {len(material)} material indices for {len(faces)} faces")
            material = np.concatenate([material[: 2 * num_quads: 2], material[2 * num_quads:]])
        if colors is not None:
            colors = np.ascontiguousarray(colors, dtype=np.float32)
            if colors.shape != (len(vertices), 4 * len(color_layers)):
                raise ValueError(f"the backend sent colours of shape {list(colors.shape)} for {len(vertices)} vertices "
                                 f"and {len(color_layers)} colour attributes")
            if not np.isfinite(colors).all():
                raise ValueError("the backend sent NaN or Inf colours")
        return cls(vertices, corner_verts.astype(np.int32), loop_start, loop_total, edges, corner_edges, material,
                   colors, tuple(color_layers))
