"""Loading and validating meshes: every bad input gets an error that names the problem."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from model.mesh import MeshError, face_normals_and_areas, fit_unit_cube, load_mesh, save_mesh, validate_arrays
from tests.conftest import SAMPLE, as_mesh


def test_load_sample_and_formats(tmp_path):
    mesh = load_mesh(SAMPLE)
    assert mesh.num_faces == 5856 and mesh.vertices.dtype == np.float64 and mesh.faces.dtype == np.int64
    for ext in (".ply", ".stl", ".off", ".glb", ".obj"):
        path = tmp_path / f"spot{ext}"
        save_mesh(mesh, path)
        again = load_mesh(path)
        assert again.num_faces == mesh.num_faces
        assert np.allclose(np.sort(again.vertices[again.faces].reshape(-1, 3), axis=0),
                           np.sort(mesh.vertices[mesh.faces].reshape(-1, 3), axis=0), atol=1e-5)


def test_quads_are_triangulated_and_scenes_concatenated(tmp_path):
    path = tmp_path / "quads.obj"
    path.write_text("v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nv 0 0 1\nf 1 2 3 4\nf 1 2 5\n")
    assert load_mesh(path).num_faces == 3
    scene = trimesh.Scene([trimesh.creation.box(), trimesh.creation.icosphere(subdivisions=1)])
    scene.export(str(tmp_path / "scene.glb"))
    assert load_mesh(tmp_path / "scene.glb").num_faces == 12 + 80


@pytest.mark.parametrize(
    "verts,faces,match",
    [
        (np.zeros((0, 3)), np.zeros((0, 3), int), "empty"),
        ([[0, 0, 0], [1, 0, 0], [np.nan, 1, 0]], [[0, 1, 2]], "NaN or Inf"),
        ([[0, 0, 0], [1, 0, 0], [0, np.inf, 0]], [[0, 1, 2]], "NaN or Inf"),
        ([[0, 0, 0], [1, 0, 0], [0, 1, 0]], [[0, 1, 3]], "face index 3 is out of range"),
        ([[0, 0, 0], [1, 0, 0], [0, 1, 0]], [[0, -1, 2]], "face index -1 is out of range"),
        ([[0, 0, 0], [1, 0, 0], [0, 1, 0]], [[0, 1, 2, 0]], r"\[F, 3\]"),
        ([[0, 0], [1, 0], [0, 1]], [[0, 1, 2]], r"\[V, 3\]"),
        ([[1, 1, 1]] * 3, [[0, 1, 2]], "zero extent"),
        ([[0, 0, 0], [1, 0, 0], [0, 1, 0]], [[0.5, 1, 2]], "integers"),
    ],
)
def test_bad_arrays(verts, faces, match):
    with pytest.raises(MeshError, match=match):
        validate_arrays(np.asarray(verts, dtype=float), np.asarray(faces))


def test_bad_files(tmp_path):
    with pytest.raises(MeshError, match="file not found"):
        load_mesh(tmp_path / "missing.obj")
    (tmp_path / "a.xyz").write_text("1 2 3")
    with pytest.raises(MeshError, match="unsupported format"):
        load_mesh(tmp_path / "a.xyz")
    (tmp_path / "broken.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 99\n\x00\x01garbage")
    with pytest.raises(MeshError, match="broken.ply"):
        load_mesh(tmp_path / "broken.ply")
    (tmp_path / "points.obj").write_text("v 0 0 0\nv 1 0 0\n")
    with pytest.raises(MeshError, match="points.obj"):
        load_mesh(tmp_path / "points.obj")


def test_unit_cube_normalisation_round_trips():
    mesh = as_mesh(trimesh.creation.box(extents=(2.0, 4.0, 1.0)))
    mesh.vertices[:] += [10.0, -3.0, 7.0]
    norm = fit_unit_cube(mesh.vertices, margin=0.05)
    unit = norm.to_unit(mesh.vertices)
    assert np.isclose(unit.max(axis=0)[1], 0.45) and np.isclose(unit.min(axis=0)[1], -0.45)
    assert np.all(np.abs(unit) <= 0.45 + 1e-12)
    np.testing.assert_allclose(norm.from_unit(unit), mesh.vertices)


def test_face_normals_and_areas_match_trimesh_and_name_a_bad_index():
    """Unit normals and areas of a real mesh agree with trimesh's; a degenerate face has a zero normal
    and area; an index past the vertices is an error naming the range, not a read out of bounds."""
    mesh = load_mesh(SAMPLE)
    normals, areas = face_normals_and_areas(mesh.vertices, mesh.faces)
    reference = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    assert np.allclose(areas, reference.area_faces) and np.allclose(normals, reference.face_normals, atol=1e-9)
    normals, areas = face_normals_and_areas(np.array([[0.0, 0, 0], [1, 0, 0], [2, 0, 0]]), np.array([[0, 1, 2]]))
    assert areas[0] == 0.0 and not normals.any()
    with pytest.raises(IndexError, match=r"\[0, 3\)"):
        face_normals_and_areas(np.zeros((3, 3)), np.array([[0, 1, 3]]))
