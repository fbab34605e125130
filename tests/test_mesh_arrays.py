"""The add-on's off-main-thread preparation of a result (blender_addon/mesh_arrays.py, numpy only):
the edges and corner edges handed to Blender instead of its own ``calc_edges``, and the guard
against results Blender must not be given."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from blender_addon.mesh_arrays import ColorLayer, MeshArrays, triangle_edges


@pytest.mark.parametrize("shape", ["icosphere", "torus", "open_box"])
def test_edges_are_each_undirected_edge_once_and_corners_point_at_them(shape):
    if shape == "icosphere":
        mesh = trimesh.creation.icosphere(subdivisions=3)
    elif shape == "torus":
        mesh = trimesh.creation.torus(1.0, 0.3)
    else:
        box = trimesh.creation.box().subdivide()
        mesh = trimesh.Trimesh(box.vertices, box.faces[box.face_normals[:, 2] < 0.5])
    faces = np.asarray(mesh.faces, dtype=np.int32)
    edges, corner_edges = triangle_edges(faces, len(mesh.vertices))
    expected = {tuple(e) for e in np.sort(mesh.edges_unique, axis=1)}
    assert {tuple(e) for e in edges} == expected and len(edges) == len(expected)
    assert np.all(edges[:, 0] < edges[:, 1])
    # corner k's edge joins corner k and corner k+1 of its face
    start, end = faces.reshape(-1), np.roll(faces, -1, axis=1).reshape(-1)
    np.testing.assert_array_equal(np.sort(edges[corner_edges], axis=1), np.sort(np.stack([start, end], 1), axis=1))
    if mesh.is_watertight:
        assert len(edges) * 2 == faces.size  # every edge between two faces


def test_bad_results_are_refused_with_the_reason():
    vertices = np.zeros((3, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="NaN or Inf"):
        MeshArrays.of(np.array([[0, 0, 0], [1, 0, 0], [np.nan, 0, 0]]), [[0, 1, 2]])
    with pytest.raises(ValueError, match="outside 0..2"):
        MeshArrays.of(vertices, [[0, 1, 3]])
    empty = MeshArrays.of(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int32))
    assert empty.edges.shape == (0, 2) and empty.corner_edges.shape == (0,)


def test_quads_become_polygons_with_their_material_and_colours():
    """A result with quads (model/quad_layout.py): each quad one polygon of four corners with no
    edge along its diagonal, its material from its first triangle, the colour layers per vertex."""
    from model import RemeshOptions, remesh
    from tests.conftest import as_mesh

    out = remesh(as_mesh(trimesh.creation.box((1.0, 0.6, 0.4))), RemeshOptions(resolution=64)).mesh
    q, f = out.num_quads, len(out.faces)
    material = np.repeat(np.arange(f // 2 + 1, dtype=np.int32), 2)[:f]  # both triangles of a quad alike
    colors = np.random.default_rng(0).random((len(out.vertices), 8)).astype(np.float32)
    layers = (ColorLayer("A", "POINT", "FLOAT_COLOR"), ColorLayer("B", "CORNER", "BYTE_COLOR"))
    arrays = MeshArrays.of(out.vertices, out.faces, q, material, colors, layers)
    assert arrays.num_polygons == q + (f - 2 * q)
    assert list(arrays.loop_total[:q]) == [4] * q and set(arrays.loop_total[q:]) <= {3}
    assert len(arrays.corner_verts) == 4 * q + 3 * (f - 2 * q)
    np.testing.assert_array_equal(arrays.loop_start, np.cumsum(arrays.loop_total) - arrays.loop_total)
    np.testing.assert_array_equal(arrays.material[:q], material[: 2 * q: 2])
    # a closed box of quads and triangles: Euler's V - E + F = 2, with no diagonal among the edges
    assert len(out.vertices) - len(arrays.edges) + arrays.num_polygons == 2
    assert arrays.colors.shape == (len(out.vertices), 8) and arrays.color_layers == layers
    with pytest.raises(ValueError, match="quad 0"):
        MeshArrays.of(out.vertices, out.faces[::-1], q)
    with pytest.raises(ValueError, match="material indices"):
        MeshArrays.of(out.vertices, out.faces, q, material[:-1])
    with pytest.raises(ValueError, match="colours of shape"):
        MeshArrays.of(out.vertices, out.faces, q, None, colors[:, :4], layers)
