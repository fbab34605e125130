"""backend.synthetic: determinism, family coverage, validity, topology of the thin/open families,
and that every family is a usable input of the direct pipeline."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import trimesh

from backend.cli import main
from backend.synthetic import (FAMILIES, FAMILY_WEIGHTS, MAX_FACES, generate_shapes, make_shape, real_meshes,
                               shape_family)
from model.cleanup import CleanupOptions
from model.mesh import Mesh, load_mesh, validate_arrays
from model.pipeline import RemeshOptions, remesh

COUNT = 100


@pytest.fixture(scope="module")
def shapes() -> list[tuple[str, Mesh]]:
    return list(generate_shapes(COUNT, seed=0))


def _family(name: str) -> str:
    return name.split("_", 3)[3]


def _edge_counts(faces: np.ndarray) -> np.ndarray:
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    return np.unique(edges, axis=0, return_counts=True)[1]


def _first_of_each(shapes: list[tuple[str, Mesh]]) -> dict[str, tuple[str, Mesh]]:
    first: dict[str, tuple[str, Mesh]] = {}
    for name, mesh in shapes:
        first.setdefault(_family(name), (name, mesh))
    return first


def test_same_seed_same_arrays_and_prefix(shapes):
    again = list(generate_shapes(25, seed=0))  # a shorter run is a prefix of the longer one
    assert len(again) == 25
    for (name_a, mesh_a), (name_b, mesh_b) in zip(shapes, again):
        assert name_a == name_b
        np.testing.assert_array_equal(mesh_a.vertices, mesh_b.vertices)
        np.testing.assert_array_equal(mesh_a.faces, mesh_b.faces)
    name, mesh = make_shape(0, 73)  # one shape alone equals the same index in a run
    assert name == shapes[73][0]
    np.testing.assert_array_equal(mesh.vertices, shapes[73][1].vertices)
    np.testing.assert_array_equal(mesh.faces, shapes[73][1].faces)


def test_other_seed_other_shapes(shapes):
    other = list(generate_shapes(5, seed=1))
    assert all(n.startswith("synth_1_") for n, _ in other)
    for (_, a), (_, b) in zip(shapes, other):
        assert a.vertices.shape != b.vertices.shape or not np.array_equal(a.vertices, b.vertices)


def test_names(shapes):
    for i, (name, _) in enumerate(shapes):
        match = re.fullmatch(r"synth_0_(\d{6})_([a-z_]+)", name)
        assert match, name
        assert int(match.group(1)) == i
        assert match.group(2) in FAMILIES
        assert match.group(2) == shape_family(0, i)


def test_every_family_in_the_first_hundred(shapes):
    assert {_family(n) for n, _ in shapes} == set(FAMILIES)


def test_family_frequencies_follow_the_weights():
    assert abs(sum(FAMILY_WEIGHTS.values()) - 1.0) < 1e-9
    draws = [shape_family(7, i) for i in range(4000)]
    for family, weight in FAMILY_WEIGHTS.items():
        observed = draws.count(family) / len(draws)
        assert abs(observed - weight) < 4 * np.sqrt(weight * (1 - weight) / len(draws)) + 1e-3, family


def test_every_shape_is_a_valid_modest_mesh(shapes):
    for name, mesh in shapes:
        checked = validate_arrays(mesh.vertices, mesh.faces, name=name)
        assert checked.vertices.dtype == np.float64 and checked.faces.dtype == np.int64
        assert mesh.vertices.dtype == np.float64 and mesh.faces.dtype == np.int64
        assert 0 < mesh.num_faces <= MAX_FACES, name
        assert np.unique(mesh.faces).size == mesh.num_vertices, f"{name}: unreferenced vertices"
        tri = mesh.vertices[mesh.faces]
        lo, hi = mesh.vertices.min(axis=0), mesh.vertices.max(axis=0)
        np.testing.assert_allclose((hi - lo).max(), 1.0, rtol=1e-9, err_msg=name)  # centred, longest side 1
        np.testing.assert_allclose((hi + lo) / 2, 0.0, atol=1e-9, err_msg=name)
        area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1).sum() / 2
        assert area > 1e-3, f"{name}: no surface"


def test_open_sheets_are_open_and_thin_shells_closed_and_thin(shapes):
    seen = {"open_sheet": 0, "thin_shell": 0}
    for name, mesh in shapes:
        family = _family(name)
        if family == "open_sheet":
            assert (_edge_counts(mesh.faces) == 1).any(), f"{name} has no boundary edge"
            seen[family] += 1
        elif family == "thin_shell":
            assert (_edge_counts(mesh.faces) == 2).all(), f"{name} is not closed"
            tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
            thickness = 2.0 * abs(tm.volume) / tm.area  # a thin wall: volume ~ (area / 2) * thickness
            assert thickness < 0.05, f"{name}: wall {thickness:.3f} is not thin"
            seen[family] += 1
    assert all(seen.values()), seen


def test_one_shape_per_family_remeshes(shapes):
    first = _first_of_each(shapes)
    assert set(first) == set(FAMILIES)
    for family, (name, mesh) in first.items():
        result = remesh(mesh, RemeshOptions(resolution=64))  # contoured: no field is made
        assert result.mesh.num_faces > 0 and np.isfinite(result.mesh.vertices).all(), name
        raw = remesh(mesh, RemeshOptions(resolution=64, cleanup=CleanupOptions.none()))  # through the UDF blocks
        assert raw.mesh.num_faces > 0 and raw.num_blocks > 0, name


def test_bad_arguments():
    with pytest.raises(ValueError):
        list(generate_shapes(-1))
    with pytest.raises(ValueError):
        list(generate_shapes(1, seed=-3))
    with pytest.raises(ValueError):
        make_shape(0, -1)
    assert list(generate_shapes(0)) == []


def test_real_meshes_skips_unreadable_files(tmp_path):
    trimesh.creation.box().export(tmp_path / "box.obj")
    trimesh.creation.icosphere(subdivisions=2).export(tmp_path / "ball.ply")
    (tmp_path / "broken.stl").write_bytes(b"\x00garbage, not a mesh")
    (tmp_path / "notes.txt").write_text("ignored")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = list(real_meshes(tmp_path))
    assert [name for name, _ in found] == ["real_ball", "real_box"]
    assert all(m.num_faces > 0 for _, m in found)
    assert any("broken.stl" in str(w.message) for w in caught)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert [n for n, _ in real_meshes(tmp_path, max_faces=100)] == ["real_box"]
    with pytest.raises(FileNotFoundError):
        list(real_meshes(tmp_path / "missing"))


def test_real_meshes_reads_the_shared_folder(shared_meshes):
    name, mesh = next(iter(real_meshes(shared_meshes)))
    assert name.startswith("real_") and mesh.num_faces > 0


def test_synth_command_writes_loadable_files(tmp_path: Path, capsys):
    assert main(["synth", str(tmp_path), "--count", "3", "--seed", "5", "-q"]) == 0
    files = sorted(tmp_path.glob("*.ply"))
    assert [f.stem for f in files] == [make_shape(5, i)[0] for i in range(3)]
    for f, i in zip(files, range(3)):
        assert load_mesh(f).num_faces == make_shape(5, i)[1].num_faces
    assert main(["synth", str(tmp_path / "tubes"), "--count", "2", "--family", "tube", "-q"]) == 0
    assert all(_family(f.stem) == "tube" for f in (tmp_path / "tubes").glob("*.ply"))
    assert len(list((tmp_path / "tubes").glob("*.ply"))) == 2
