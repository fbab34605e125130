"""Artist-grade clean-up of the ε-surface: deflate, outer shell, single layer, target face count."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from model.cleanup import CleanupOptions
from model.mesh import Mesh
from model.pipeline import RemeshOptions, remesh
from tests.conftest import as_mesh
from tests.reference import point_triangle_distance

N = 128


def voxel_of(mesh: Mesh, n: int = N) -> float:
    extent = float((mesh.vertices.max(axis=0) - mesh.vertices.min(axis=0)).max())
    return extent / (n - 10)


def boundary_loops(tm: trimesh.Trimesh) -> int:
    edges = tm.edges_sorted
    unique, counts = np.unique(edges, axis=0, return_counts=True)
    boundary = unique[counts == 1]
    if len(boundary) == 0:
        return 0
    graph = coo_matrix((np.ones(len(boundary)), (boundary[:, 0], boundary[:, 1])), shape=(len(tm.vertices),) * 2)
    _, label = connected_components(graph, directed=False)
    return len(np.unique(label[np.unique(boundary)]))


def test_sphere_is_one_closed_shell_with_the_right_radius():
    sphere = as_mesh(trimesh.creation.icosphere(subdivisions=5, radius=1.0))
    out = remesh(sphere, RemeshOptions(resolution=N)).mesh
    tm = trimesh.Trimesh(out.vertices, out.faces, process=False)
    assert len(tm.split(only_watertight=False)) == 1 and tm.is_watertight and tm.is_winding_consistent
    assert tm.volume > 0  # oriented outwards
    radius_error = (np.linalg.norm(out.vertices, axis=1) - 1.0) / voxel_of(sphere)
    assert abs(radius_error.mean()) < 0.05 and np.abs(radius_error).max() < 0.25
    # the paper's raw output for comparison: two shells, one voxel off each way
    raw = remesh(sphere, RemeshOptions(resolution=N, cleanup=CleanupOptions.none())).mesh
    raw_tm = trimesh.Trimesh(raw.vertices, raw.faces, process=False)
    assert len(raw_tm.split(only_watertight=False)) == 2


def test_flat_sheet_is_one_open_layer_with_one_boundary():
    square = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], [[0, 1, 2], [0, 2, 3]]).subdivide().subdivide()
    out = remesh(as_mesh(square), RemeshOptions(resolution=N, cleanup=CleanupOptions(single_layer=True))).mesh
    tm = trimesh.Trimesh(out.vertices, out.faces, process=False)
    assert len(tm.split(only_watertight=False)) == 1
    assert boundary_loops(tm) == 1
    assert abs(tm.area - 1.0) < 0.02
    assert np.abs(out.vertices[:, 2]).max() < 0.5 * voxel_of(as_mesh(square))  # on the plane, not ε above it
    # by default (single layer off) the sheet stays a closed slab at ε, never two coincident layers
    slab = remesh(as_mesh(square), RemeshOptions(resolution=N)).mesh
    slab_tm = trimesh.Trimesh(slab.vertices, slab.faces, process=False)
    eps = voxel_of(as_mesh(square))
    assert slab_tm.is_watertight and abs(slab_tm.area - (2.0 + 4.0 * np.pi * eps)) < 0.02  # two sides + the rim
    assert np.abs(np.abs(slab.vertices[:, 2]).max() / voxel_of(as_mesh(square)) - 1.0) < 0.1


@pytest.mark.parametrize("thickness_voxels", [3.0, 1.2])
def test_thin_closed_box_stays_closed(thickness_voxels):
    extent = 1.0
    box = trimesh.creation.box(extents=(extent, extent, thickness_voxels * extent / (N - 10)))
    out = remesh(as_mesh(box), RemeshOptions(resolution=N)).mesh
    tm = trimesh.Trimesh(out.vertices, out.faces, process=False)
    assert len(tm.split(only_watertight=False)) == 1 and tm.is_watertight
    z = out.vertices[:, 2]
    top, bottom = np.median(z[z > 0]), np.median(z[z < 0])  # the faces, not the rounded corners
    assert abs((top - bottom) / (extent / (N - 10)) - thickness_voxels) < 0.2


def test_target_face_count_decimates_and_stays_on_the_surface():
    sphere = as_mesh(trimesh.creation.icosphere(subdivisions=4, radius=1.0))
    full = remesh(sphere, RemeshOptions(resolution=64)).mesh
    small = remesh(sphere, RemeshOptions(resolution=64, cleanup=CleanupOptions(target_faces=2000))).mesh
    assert full.num_faces > 20_000
    assert 1500 <= small.num_faces <= 2100
    d = point_triangle_distance(small.vertices, sphere.vertices[sphere.faces]) / voxel_of(sphere, 64)
    assert np.median(d) < 0.3


def test_inner_shell_kept_when_asked_and_options_validated():
    sphere = as_mesh(trimesh.creation.icosphere(subdivisions=3, radius=1.0))
    both = remesh(sphere, RemeshOptions(resolution=64, cleanup=CleanupOptions(outer_shell=False))).mesh
    tm = trimesh.Trimesh(both.vertices, both.faces, process=False)
    assert len(tm.split(only_watertight=False)) == 2  # deflated outer and inner shell, both kept
    with pytest.raises(ValueError, match="single_layer needs deflate"):
        RemeshOptions(cleanup=CleanupOptions(deflate=False, single_layer=True)).validate()
    with pytest.raises(ValueError, match="target_faces"):
        RemeshOptions(cleanup=CleanupOptions(target_faces=-5)).validate()
