"""Quads in direct mode (issue 31): the contour's flat quads stay quads, everything else is exactly
the triangle output; writers keep them; voxel size sets N."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh

from model import Mesh, RemeshOptions, ResolutionError, load_mesh, remesh, save_mesh
from model.quad_layout import check_quad_pairs, quad_corners
from model.quads import pair_quads
from tests.conftest import as_mesh, canonical_faces

SPOT = Path(__file__).resolve().parents[1] / "examples" / "spot.obj"  # bundled: runs wherever the repo does


def quad_normals_bend(mesh: Mesh) -> np.ndarray:
    """Per quad, the angle (degrees) between its two triangles' normals."""
    pairs = mesh.faces[: 2 * mesh.num_quads].reshape(-1, 2, 3)
    tri = mesh.vertices[pairs]  # [Q, 2, 3, 3]
    n = np.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0])
    n /= np.linalg.norm(n, axis=2, keepdims=True)
    return np.degrees(np.arccos(np.clip(np.einsum("ij,ij->i", n[:, 0], n[:, 1]), -1, 1)))


def test_quads_are_the_triangle_output_joined_in_pairs():
    """Same vertices, same triangles (up to where each starts): only the grouping differs, so every
    metric of the triangle output holds for the quad output."""
    mesh = load_mesh(SPOT)
    tris = remesh(mesh, RemeshOptions(resolution=128, polygons="triangles")).mesh
    quads = remesh(mesh, RemeshOptions(resolution=128)).mesh
    assert tris.num_quads == 0 and quads.num_quads > 0
    np.testing.assert_array_equal(quads.vertices, tris.vertices)
    np.testing.assert_array_equal(canonical_faces(quads.faces), canonical_faces(tris.faces))
    check_quad_pairs(quads.faces, quads.num_quads)
    assert 2 * quads.num_quads / len(quads.faces) > 0.7  # spot at 128: 78 % of the triangles in quads
    assert quad_normals_bend(quads).max() <= 20.0 + 1e-6


def test_a_box_is_quads_except_at_its_corners():
    box = as_mesh(trimesh.creation.box((1.0, 0.7, 0.4)))
    out = remesh(box, RemeshOptions(resolution=64)).mesh
    share = 2 * out.num_quads / len(out.faces)
    assert share > 0.95, share
    assert quad_normals_bend(out).max() < 1.0  # a box's faces are flat: its quads are planar
    # the quads are manifold and closed together with the triangles: every edge used twice
    edges = np.sort(np.stack([out.faces, np.roll(out.faces, -1, axis=1)], axis=2).reshape(-1, 2), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    assert (counts == 2).all()


def test_bent_pairs_stay_triangles():
    sphere = as_mesh(trimesh.creation.icosphere(subdivisions=3))
    out = remesh(sphere, RemeshOptions(resolution=64, polygons="triangles")).mesh
    from model.contour import InputTopology, dual_contour, tidy_contour
    from model.grid import unit_margin, unit_to_voxel
    from model.mesh import fit_unit_cube

    v = unit_to_voxel(fit_unit_cube(sphere.vertices, unit_margin(64)).to_unit(sphere.vertices), 64)
    topology = InputTopology.of(v, sphere.faces)
    cv, cf, source, quad_id = dual_contour(v, sphere.faces, 64, topology)
    tv, tf, kept = tidy_contour(cv, cf, source, topology)
    flat, n_flat = pair_quads(tv, tf, quad_id[kept], max_bend_degrees=0.5)
    loose, n_loose = pair_quads(tv, tf, quad_id[kept], max_bend_degrees=45.0)
    assert 0 <= n_flat < n_loose and len(tf) == len(out.faces)
    bends = quad_normals_bend(Mesh(tv, flat, n_flat))
    assert bends.size == 0 or bends.max() <= 0.5 + 1e-6
    with pytest.raises(ValueError, match="quad_id"):
        pair_quads(tv, tf, quad_id[:3])


def test_vae_mode_and_decimation_give_triangles():
    sphere = as_mesh(trimesh.creation.icosphere(subdivisions=3))
    from model import CleanupOptions

    decimated = remesh(sphere, RemeshOptions(resolution=64, cleanup=CleanupOptions(target_faces=500))).mesh
    assert decimated.num_quads == 0
    vae = remesh(sphere, RemeshOptions(resolution=64, mode="vae", device="cpu")).mesh  # the shipped weights
    assert vae.num_quads == 0


@pytest.mark.parametrize("suffix", [".obj", ".ply", ".off"])
def test_polygon_files_hold_the_quads_and_read_back(tmp_path, suffix):
    out = remesh(load_mesh(SPOT), RemeshOptions(resolution=64)).mesh
    path = tmp_path / f"out{suffix}"
    save_mesh(out, path)
    back = load_mesh(path)  # trimesh for OBJ and OFF; model.ply_reader for the binary PLY
    assert len(back.vertices) == len(out.vertices) and len(back.faces) == len(out.faces)
    assert trimesh.Trimesh(back.vertices, back.faces, process=False).area == pytest.approx(
        trimesh.Trimesh(out.vertices, out.faces, process=False).area, rel=1e-9)
    if suffix == ".obj":
        sizes = [len(line.split()) - 1 for line in path.read_text().splitlines() if line.startswith("f ")]
    elif suffix == ".off":  # the faces are the last lines, each starting with its corner count
        sizes = [int(line.split()[0]) for line in path.read_text().splitlines()[-(out.num_quads + len(out.faces) - 2 * out.num_quads):]]
    else:  # binary: after the header and the vertices' doubles, each face is a byte count then int32 corners
        data = path.read_bytes()
        at = data.index(b"end_header\n") + len(b"end_header\n") + 24 * len(out.vertices)
        sizes = []
        while at < len(data):
            sizes.append(data[at])
            at += 1 + 4 * data[at]
        np.testing.assert_array_equal(back.vertices, out.vertices)  # doubles: exact
        np.testing.assert_array_equal(back.faces, out.faces)  # quads fanned from their first corner: the same pairs
    assert sizes.count(4) == out.num_quads and sizes.count(3) == len(out.faces) - 2 * out.num_quads


def test_triangle_formats_get_the_triangles(tmp_path):
    out = remesh(load_mesh(SPOT), RemeshOptions(resolution=64)).mesh
    save_mesh(out, tmp_path / "out.stl")
    back = trimesh.load(tmp_path / "out.stl", process=False)
    assert len(back.faces) == len(out.faces)


def test_quad_corners_and_the_pair_check():
    faces = np.array([[0, 1, 2], [0, 2, 3], [2, 1, 4]])
    np.testing.assert_array_equal(quad_corners(faces, 1), [[0, 1, 2, 3]])
    check_quad_pairs(faces, 1)
    with pytest.raises(ValueError, match="quad 0"):
        check_quad_pairs(faces[[0, 2, 1]], 1)
    with pytest.raises(ValueError, match="need"):
        check_quad_pairs(faces, 2)


def edge_lengths(mesh: Mesh) -> np.ndarray:
    corners = quad_corners(mesh.faces, mesh.num_quads)
    return np.linalg.norm(mesh.vertices[corners[:, 1]] - mesh.vertices[corners[:, 0]], axis=1)


def test_one_voxel_size_gives_two_objects_one_density():
    """A cup and a table at one voxel size: N differs, the quads' edges do not."""
    small = as_mesh(trimesh.creation.cylinder(radius=0.04, height=0.1))
    large = as_mesh(trimesh.creation.box((1.2, 0.8, 0.75)))
    a = remesh(small, RemeshOptions(voxel_size=0.004))
    b = remesh(large, RemeshOptions(voxel_size=0.004))
    assert a.resolution < b.resolution
    assert (a.resolution, b.resolution) == (64, 312)  # 0.1/0.004 + 10 → 64 (the least N); 1.2/0.004 + 10 → 312
    la, lb = np.median(edge_lengths(a.mesh)), np.median(edge_lengths(b.mesh))
    assert la == pytest.approx(0.004, rel=0.02) and lb == pytest.approx(0.004, rel=0.02)


def test_a_voxel_size_past_the_grid_names_the_smallest_it_can_do():
    box = as_mesh(trimesh.creation.box((2.0, 1.0, 1.0)))
    with pytest.raises(ResolutionError, match=r"needs N=.*over the largest supported 2048.*smallest voxel size for it is 0\.000981"):
        remesh(box, RemeshOptions(voxel_size=0.0005))
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ResolutionError, match="voxel size must be a positive number"):
            RemeshOptions(voxel_size=bad).validate()


def test_written_numbers_read_back_to_twelve_digits_and_integers_exactly():
    import io

    from model.polygon_files import SIGNIFICANT, _write_rows

    rng = np.random.default_rng(5)
    floats = rng.standard_normal(30_000) * 10.0 ** rng.integers(-12, 14, 30_000)
    floats[:8] = [0.0, -0.0, 1.0, -1.0, 0.1, 1e-5, 123456789012.0, 1e12]
    for rows in (floats.reshape(-1, 3), np.array([[1.7e308, 2.3e-308, -5e-324]])):  # the second: the fallback
        out = io.BytesIO()
        _write_rows(out, "v ", rows, True)
        lines = out.getvalue().decode("ascii").splitlines()
        assert all(line.startswith("v ") for line in lines) and len(lines) == len(rows)
        back = np.array([[float(t) for t in line.split()[1:]] for line in lines])
        assert (np.abs(back - rows) <= 0.5 * 10.0 ** (1 - SIGNIFICANT) * np.abs(rows)).all()
    assert lines and out.getvalue().decode().split()[1] == "1.7e+308"
    ints = rng.integers(-10**12, 10**12, (20_000, 4))
    ints[0] = [0, -1, 9, 10]
    out = io.BytesIO()
    _write_rows(out, "4 ", ints, False)
    back = np.array([[int(t) for t in line.split()[1:]] for line in out.getvalue().decode().splitlines()])
    assert (back == ints).all()


def test_blender_reads_the_polygon_files_with_their_quads(tmp_path):
    """What an artist does with the file: Blender's own importers, in a fresh Blender process."""
    import subprocess
    import sys

    from backend.blender_voxel import bpy_available

    if not bpy_available():
        pytest.skip("bpy (pip install bpy==5.0.1) is not importable")
    out = remesh(load_mesh(SPOT), RemeshOptions(resolution=64)).mesh
    script = (
        "import bpy, sys\n"
        "for path in sys.argv[1:]:\n"
        "    bpy.ops.wm.read_factory_settings(use_empty=True)\n"
        "    (bpy.ops.wm.ply_import if path.endswith('.ply') else bpy.ops.wm.obj_import)(filepath=path)\n"
        "    me = bpy.context.selected_objects[0].data\n"
        "    sizes = [len(p.vertices) for p in me.polygons]\n"
        "    print('RESULT', len(me.vertices), sizes.count(4), sizes.count(3))\n")
    paths = [tmp_path / "out.ply", tmp_path / "out.obj"]
    for path in paths:
        save_mesh(out, path)
    done = subprocess.run([sys.executable, "-c", script, *map(str, paths)], capture_output=True, text=True, timeout=300)
    results = [line.split()[1:] for line in done.stdout.splitlines() if line.startswith("RESULT")]
    expected = [str(len(out.vertices)), str(out.num_quads), str(len(out.faces) - 2 * out.num_quads)]
    assert results == [expected, expected], done.stderr[-2000:]
