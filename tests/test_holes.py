"""Closing the holes a surface has where its field has none (model.holes)."""

from __future__ import annotations

import numpy as np
import trimesh

from model.edges import edge_valence
from model.grid import unit_to_voxel
from model.holes import close_false_holes
from model.pipeline import settled_centres
from model.pipeline import mesh_to_field
from tests.conftest import as_mesh, grid_triangles


def boundary_edges(vertices: np.ndarray, faces: np.ndarray) -> int:
    return int((edge_valence(len(vertices), faces)[1] == 1).sum())


def test_a_hole_is_closed_only_where_the_field_has_the_surface():
    """A cap cut out of a sphere: over the whole sphere's field the hole is closed (a fan of one new
    vertex, near the sphere); over the cut sphere's own field — whose hole it is — it stays open."""
    n = 64
    sphere = trimesh.creation.icosphere(subdivisions=4)
    holed_faces = np.asarray(sphere.faces[sphere.triangles_center[:, 2] < 0.985])  # a hole ~16 voxels across at 64
    whole_field, normalization = mesh_to_field(as_mesh(sphere), n)
    holed_field, _ = mesh_to_field(as_mesh(trimesh.Trimesh(sphere.vertices, holed_faces)), n)
    vertices = unit_to_voxel(normalization.to_unit(np.asarray(sphere.vertices, dtype=np.float64)), n)
    assert boundary_edges(vertices, holed_faces) > 0

    v, f = close_false_holes(vertices, holed_faces, whole_field, 64.0, 1.5)
    assert boundary_edges(v, f) == 0 and len(v) == len(vertices) + 1
    assert trimesh.Trimesh(v, f, process=False).is_winding_consistent  # the fan runs like the faces around it
    centre = v[-1]
    radius = np.linalg.norm(vertices - vertices.mean(axis=0), axis=1).mean()
    assert abs(np.linalg.norm(centre - vertices.mean(axis=0)) - radius) < 1.5  # on the sphere within 1.5 voxels

    v, f = close_false_holes(vertices, holed_faces, holed_field, 64.0, 1.5)
    assert len(f) == len(holed_faces) and len(v) == len(vertices)  # the field has this hole: it stays
    v, f = close_false_holes(vertices, holed_faces, whole_field, 40.0, 1.5)
    assert len(f) == len(holed_faces)  # longer than asked: stays


def test_two_holes_touching_at_a_vertex_are_closed_apart():
    """Two cells of a flat grid taken out, diagonal to each other (their boundaries share a corner):
    each gets its own fan, so no edge gets three faces."""
    x, y = np.meshgrid(np.arange(5.0), np.arange(5.0))
    world = np.stack([x.ravel(), y.ravel(), np.zeros(25)], 1)
    idx = np.arange(25).reshape(5, 5)
    field, normalization = mesh_to_field(as_mesh(trimesh.Trimesh(world, grid_triangles(idx))), 64)
    vertices = unit_to_voxel(normalization.to_unit(world), 64)  # cells of ~13.5 voxels
    cells = np.ones((4, 4), dtype=bool)
    cells[1, 1] = cells[2, 2] = False  # two cells out, diagonal
    faces = grid_triangles(idx, cells)
    v, f = close_false_holes(vertices, faces, field, 64.0, 1.5)
    valence = edge_valence(len(v), f)[1]
    assert len(v) == len(vertices) + 2 and valence.max() == 2  # two fans, no edge of three faces
    assert (valence == 1).sum() == 16  # the outer rim (perimeter ~216 voxels) stays: longer than asked


def test_a_hole_in_a_curved_surface_is_judged_from_its_centroid_settled_onto_the_surface():
    """A cap ~22 voxels across (a rim of ~93 voxels) cut out of a sphere of radius 27 voxels: its
    centroid lies 2.4 voxels inside the sphere, so the fan from it fails the 1.6-voxel test though the sphere runs
    through the hole; from the centroid settled onto the zero set the fan lies within a voxel of it,
    and the hole closes, its new vertex on the sphere. Over the cut sphere's own field (a real hole)
    it stays open either way."""
    n = 64
    sphere = trimesh.creation.icosphere(subdivisions=4)
    holed_faces = np.asarray(sphere.faces[sphere.triangles_center[:, 2] < np.cos(0.42)])
    whole_field, normalization = mesh_to_field(as_mesh(sphere), n)
    holed_field, _ = mesh_to_field(as_mesh(trimesh.Trimesh(sphere.vertices, holed_faces)), n)
    vertices = unit_to_voxel(normalization.to_unit(np.asarray(sphere.vertices, dtype=np.float64)), n)
    open_edges = boundary_edges(vertices, holed_faces)
    assert open_edges > 0

    v, f = close_false_holes(vertices, holed_faces, whole_field, 96.0, 1.6)
    assert len(f) == len(holed_faces)  # from the centroid: 2.4 voxels inside, stays open
    v, f = close_false_holes(vertices, holed_faces, whole_field, 96.0, 1.6, settle=settled_centres)
    assert boundary_edges(v, f) == 0 and len(v) == len(vertices) + 1
    assert trimesh.Trimesh(v, f, process=False).is_winding_consistent
    centre = vertices.mean(axis=0)
    radius = np.linalg.norm(vertices - centre, axis=1).mean()
    assert abs(np.linalg.norm(v[-1] - centre) - radius) < 0.25  # the fan's vertex on the sphere

    v, f = close_false_holes(vertices, holed_faces, holed_field, 96.0, 1.6, settle=settled_centres)
    assert len(f) == len(holed_faces) and boundary_edges(v, f) == open_edges  # the field's own hole stays
