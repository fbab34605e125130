"""Blender meshes <-> numpy arrays, in bulk.

Every transfer is one ``foreach_get``/``foreach_set`` over a whole attribute (a C loop over a numpy
buffer), never a Python loop over vertices: a 1024³ result has millions of triangles and must reach
the viewport in about a second (bench/bench_blender_import.py).

What is sent is the *evaluated* mesh (modifiers applied), triangulated through ``loop_triangles``,
in world space, so the backend's grid has the same voxel size along every world axis whatever the
object's scale. Results come back in world space and are moved into the original's local frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import bpy
import numpy as np

from .mesh_arrays import ColorLayer, MeshArrays


def matrix_array(matrix: object) -> np.ndarray:
    """A ``mathutils.Matrix`` (4x4) as a float64 numpy array."""
    return np.array(matrix, dtype=np.float64).reshape(4, 4)


@dataclass
class EvaluatedMesh:
    """An object's evaluated mesh as the wire wants it: world-space float32 vertices [V, 3], int32
    triangles [F, 3], and, when asked, each triangle's material index [F] and colours per triangle
    corner [F, 3, 4·K] of the object's K colour attributes (``color_layers``)."""

    vertices: np.ndarray
    faces: np.ndarray
    material: np.ndarray | None = None
    colors: np.ndarray | None = None
    color_layers: tuple[ColorLayer, ...] = ()


def _corner_colors(mesh: bpy.types.Mesh, tri_verts: np.ndarray, tri_loops: np.ndarray) -> tuple[np.ndarray | None, tuple[ColorLayer, ...]]:
    """Every colour attribute on points or corners, read at the triangles' corners [F, 3, 4·K]."""
    layers, columns = [], []
    for attribute in mesh.color_attributes:
        if attribute.domain not in ("POINT", "CORNER") or attribute.data_type not in ("FLOAT_COLOR", "BYTE_COLOR"):
            continue
        values = np.empty(len(attribute.data) * 4, dtype=np.float32)
        attribute.data.foreach_get("color", values)
        values = values.reshape(-1, 4)
        columns.append(values[tri_verts if attribute.domain == "POINT" else tri_loops])  # [F, 3, 4]
        layers.append(ColorLayer(attribute.name, attribute.domain, attribute.data_type))
    if not layers:
        return None, ()
    return np.ascontiguousarray(np.concatenate(columns, axis=2)), tuple(layers)


def evaluated_mesh(obj: bpy.types.Object, depsgraph: bpy.types.Depsgraph, attributes: bool = False) -> EvaluatedMesh:
    """The object's evaluated mesh (modifiers, shape keys), triangulated, in world space; with
    ``attributes``, its triangles' materials (when it has more than one slot) and its colour
    attributes too. The original object and its mesh are only read."""
    evaluated = obj.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    try:
        mesh.calc_loop_triangles()
        vertices = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
        mesh.vertices.foreach_get("co", vertices)
        triangles = np.empty(len(mesh.loop_triangles) * 3, dtype=np.int32)
        mesh.loop_triangles.foreach_get("vertices", triangles)
        triangles = triangles.reshape(-1, 3)
        world = matrix_array(evaluated.matrix_world)
        material = colors = None
        layers: tuple[ColorLayer, ...] = ()
        if attributes and len(triangles):
            if len(obj.material_slots) > 1:
                material = np.empty(len(triangles), dtype=np.int32)
                mesh.loop_triangles.foreach_get("material_index", material)
            loops = np.empty(triangles.size, dtype=np.int32)
            mesh.loop_triangles.foreach_get("loops", loops)
            colors, layers = _corner_colors(mesh, triangles, loops.reshape(-1, 3))
    finally:
        evaluated.to_mesh_clear()
    return EvaluatedMesh(to_world(vertices.reshape(-1, 3), world), triangles, material, colors, layers)


def to_world(local: np.ndarray, matrix_world: np.ndarray) -> np.ndarray:
    """Object-space points to world space (float32 out, float64 arithmetic)."""
    m = np.asarray(matrix_world, dtype=np.float64)
    return (local.astype(np.float64) @ m[:3, :3].T + m[:3, 3]).astype(np.float32)


def to_local(world: np.ndarray, matrix_world: np.ndarray) -> np.ndarray:
    """World-space points into the frame of an object with ``matrix_world``. A singular matrix (a
    scale of zero) has no inverse; the points are then returned unchanged."""
    m = np.asarray(matrix_world, dtype=np.float64)
    try:
        inverse = np.linalg.inv(m)
    except np.linalg.LinAlgError:
        return np.ascontiguousarray(world, dtype=np.float32)
    return (np.asarray(world, dtype=np.float64) @ inverse[:3, :3].T + inverse[:3, 3]).astype(np.float32)


def vertex_hash(mesh: bpy.types.Mesh) -> str:
    """A digest of a mesh's positions and corner indices, to check that an original was not touched."""
    import hashlib

    co = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
    mesh.vertices.foreach_get("co", co)
    corners = np.empty(len(mesh.loops), dtype=np.int32)
    mesh.loops.foreach_get("vertex_index", corners)
    return hashlib.sha256(co.tobytes() + corners.tobytes()).hexdigest()


def new_mesh(name: str, vertices: np.ndarray, faces: np.ndarray) -> bpy.types.Mesh:
    """A new mesh datablock from float32 [V, 3] vertices and int32 [F, 3] triangles, in one go
    (background mode, scripts); the UI builds results in steps (:func:`mesh_build_steps`)."""
    mesh = None
    for mesh in mesh_build_steps(name, MeshArrays.of(vertices, faces)):
        pass
    return mesh


def mesh_build_steps(name: str, arrays: MeshArrays, vertices: np.ndarray | None = None) -> Iterator[bpy.types.Mesh | None]:
    """Build a mesh datablock from ``arrays`` (edges already derived) in a few steps, yielding None
    after each and the finished mesh last; ``vertices`` replaces ``arrays.vertices`` (the result in
    its original's frame). Each step is one allocation or one bulk copy, short enough for one UI
    timer tick on a 5.4M-face result (the 1024³ window test). Quads and triangles, the polygons'
    material indices and the colour attributes come from ``arrays``.

    One path per API generation, chosen by what the mesh has rather than by version number: Blender
    4.0+ stores corners and edges as attributes (``.corner_vert``, ``.corner_edge``, ``.edge_verts``)
    written straight from int32 buffers; earlier Blenders take them through ``MeshLoop`` /
    ``MeshEdge`` / ``MeshPolygon`` properties, which copy a buffer in bulk only when its type is
    exactly theirs (unsigned: ``np.uint32``; an int32 buffer falls back to a per-item loop 25× slower)
    and need ``loop_total`` set (left at 0, the next redraw crashes Blender). A new mesh is
    smooth-shaded, which suits a remeshed surface."""
    vertices = arrays.vertices if vertices is None else np.ascontiguousarray(vertices, dtype=np.float32)
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(len(vertices))
    if not _set_attribute(mesh, "position", "POINT", "FLOAT_VECTOR", vertices.reshape(-1)):
        mesh.vertices.foreach_set("co", vertices.reshape(-1))
    yield None
    mesh.loops.add(len(arrays.corner_verts))
    yield None
    if not _set_attribute(mesh, ".corner_vert", "CORNER", "INT", arrays.corner_verts):
        mesh.loops.foreach_set("vertex_index", arrays.corner_verts.astype(np.uint32))
    yield None
    mesh.polygons.add(arrays.num_polygons)
    yield None
    mesh.polygons.foreach_set("loop_start", arrays.loop_start.astype(np.uint32))
    if bpy.app.version < (4, 0, 0):  # polygons store their own size before 4.0
        yield None
        mesh.polygons.foreach_set("loop_total", arrays.loop_total.astype(np.uint32))
    yield None
    mesh.edges.add(len(arrays.edges))
    yield None
    if not _set_attribute(mesh, ".edge_verts", "EDGE", "INT32_2D", arrays.edges.reshape(-1)):
        mesh.edges.foreach_set("vertices", arrays.edges.reshape(-1).astype(np.uint32))
    yield None
    if not _set_attribute(mesh, ".corner_edge", "CORNER", "INT", arrays.corner_edges):
        mesh.loops.foreach_set("edge_index", arrays.corner_edges.astype(np.uint32))
    yield None
    if arrays.material is not None:
        mesh.polygons.foreach_set("material_index", arrays.material)
        yield None
    for index, layer in enumerate(arrays.color_layers):
        assert arrays.colors is not None
        values = arrays.colors[:, 4 * index: 4 * index + 4]
        if layer.domain == "CORNER":  # each corner takes its vertex's colour
            values = values[arrays.corner_verts]
        attribute = mesh.color_attributes.new(layer.name, layer.data_type, layer.domain)
        attribute.data.foreach_set("color", np.ascontiguousarray(values, dtype=np.float32).reshape(-1))
        yield None
    mesh.update()
    yield mesh


def _set_attribute(mesh: bpy.types.Mesh, name: str, domain: str, data_type: str, values: np.ndarray) -> bool:
    """Write a built-in attribute (positions 3.5+, corners and edges 4.0+) straight from a buffer;
    False where the mesh has no such attribute (an older Blender), so the caller takes the property
    path."""
    attribute = mesh.attributes.get(name)
    if attribute is None or attribute.domain != domain or attribute.data_type != data_type:
        return False
    if data_type == "FLOAT_VECTOR":
        attribute.data.foreach_set("vector", np.ascontiguousarray(values, dtype=np.float32))
    else:
        attribute.data.foreach_set("value", np.ascontiguousarray(values, dtype=np.int32))
    return True
