"""Blender meshes <-> numpy arrays, in bulk.

Every transfer is one ``foreach_get``/``foreach_set`` over a whole attribute (a C loop over a numpy
buffer), never a Python loop over vertices: a 1024³ result has millions of triangles and must reach
the viewport in about a second (bench/bench_blender_import.py).

What is sent is the *evaluated* mesh (modifiers applied), triangulated through ``loop_triangles``,
in world space, so the backend's grid has the same voxel size along every world axis whatever the
object's scale. Results come back in world space and are moved into the original's local frame.
"""

from __future__ import annotations

import bpy
import numpy as np


def matrix_array(matrix: object) -> np.ndarray:
    """A ``mathutils.Matrix`` (4x4) as a float64 numpy array."""
    return np.array(matrix, dtype=np.float64).reshape(4, 4)


def evaluated_triangles(obj: bpy.types.Object, depsgraph: bpy.types.Depsgraph) -> tuple[np.ndarray, np.ndarray]:
    """The object's evaluated mesh (modifiers, shape keys) as world-space float32 vertices [V, 3] and
    int32 triangles [F, 3]. The original object and its mesh are only read."""
    evaluated = obj.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    try:
        mesh.calc_loop_triangles()
        vertices = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
        mesh.vertices.foreach_get("co", vertices)
        triangles = np.empty(len(mesh.loop_triangles) * 3, dtype=np.int32)
        mesh.loop_triangles.foreach_get("vertices", triangles)
        world = matrix_array(evaluated.matrix_world)
    finally:
        evaluated.to_mesh_clear()
    return to_world(vertices.reshape(-1, 3), world), triangles.reshape(-1, 3)


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
    """A new mesh datablock from float32 [V, 3] vertices and int32 [F, 3] triangles.

    Corner indices go straight into the ``.corner_vert`` attribute when the Blender version has it
    (4.0+), which is two orders of magnitude faster than ``loops.foreach_set("vertex_index")``;
    edges are derived by Blender (``update(calc_edges=True)``). A new mesh is smooth-shaded, which
    suits a remeshed surface.
    """
    vertices = np.ascontiguousarray(vertices, dtype=np.float32).reshape(-1, 3)
    faces = np.ascontiguousarray(faces, dtype=np.int32).reshape(-1, 3)
    check_result(vertices, faces)
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(len(vertices))
    mesh.vertices.foreach_set("co", vertices.ravel())
    mesh.loops.add(faces.size)
    corner_vert = mesh.attributes.get(".corner_vert")
    if corner_vert is not None and corner_vert.domain == "CORNER" and corner_vert.data_type == "INT":
        corner_vert.data.foreach_set("value", faces.ravel())
    else:
        mesh.loops.foreach_set("vertex_index", faces.ravel())
    mesh.polygons.add(len(faces))
    mesh.polygons.foreach_set("loop_start", np.arange(0, faces.size, 3, dtype=np.int32))
    if bpy.app.version < (4, 0, 0):  # before 4.0 polygons store their size; left at 0, the next redraw crashes
        mesh.polygons.foreach_set("loop_total", np.full(len(faces), 3, dtype=np.int32))
    mesh.update(calc_edges=True)
    return mesh


def check_result(vertices: np.ndarray, faces: np.ndarray) -> None:
    """Refuse a result Blender must not be handed: non-finite coordinates or indices out of range
    (a bad mesh datablock can crash Blender later, far from the cause)."""
    if vertices.size and not np.isfinite(vertices).all():
        raise ValueError("the backend sent a result with NaN or Inf vertex coordinates")
    if faces.size and (int(faces.min()) < 0 or int(faces.max()) >= len(vertices)):
        raise ValueError(f"the backend sent face indices outside 0..{len(vertices) - 1}")
