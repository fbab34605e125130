"""The `log3d` command line."""

from __future__ import annotations

import trimesh

from backend.cli import main
from model.mesh import load_mesh


def test_remesh_command_writes_a_mesh_and_prints_stage_times(tmp_path, capsys):
    src = tmp_path / "sphere.ply"
    trimesh.creation.icosphere(subdivisions=2).export(str(src))
    out = tmp_path / "out" / "sphere_log3d.obj"
    assert main(["remesh", str(src), str(out), "--resolution", "64", "--quiet"]) == 0
    assert load_mesh(out).num_faces > 1000
    printed = capsys.readouterr().out
    for stage in ("load", "extract", "cleanup", "save", "total"):
        assert stage in printed
    raw = tmp_path / "raw.ply"
    assert main(["remesh", str(src), str(raw), "--resolution", "64", "--quiet", "--raw"]) == 0
    printed = capsys.readouterr().out
    for stage in ("udf", "extract", "total"):
        assert stage in printed
    assert "pad_average" not in printed  # exact blocks averaged back would be the same field
    assert load_mesh(raw).num_faces > 1.5 * load_mesh(out).num_faces  # two shells instead of one
    small = tmp_path / "small.ply"
    assert main(["remesh", str(src), str(small), "--resolution", "64", "--quiet", "--target-faces", "500"]) == 0
    assert 300 <= load_mesh(small).num_faces <= 520


def test_remesh_command_voxel_size_and_quads(tmp_path, capsys):
    """--voxel-size sets N from the mesh's extent; the OBJ holds quads unless --triangles."""
    src = tmp_path / "box.ply"
    trimesh.creation.box((2.0, 1.0, 1.0)).export(str(src))
    out = tmp_path / "box.obj"
    assert main(["remesh", str(src), str(out), "--voxel-size", "0.02", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "N=112 " in printed and " quads + " in printed  # 2 / 0.02 + 10 voxels of margin → 112
    sizes = [len(line.split()) - 1 for line in out.read_text().splitlines() if line.startswith("f ")]
    assert sizes.count(4) > 0.9 * len(sizes)
    tris = tmp_path / "box_tris.obj"
    assert main(["remesh", str(src), str(tris), "--voxel-size", "0.02", "--triangles", "--quiet"]) == 0
    assert "triangles" in capsys.readouterr().out
    assert {len(line.split()) - 1 for line in tris.read_text().splitlines() if line.startswith("f ")} == {3}
    assert load_mesh(tris).num_faces == load_mesh(out).num_faces  # the same triangles
    assert main(["remesh", str(src), str(tmp_path / "o.obj"), "--voxel-size", "0.0001"]) == 2
    assert "smallest voxel size for it is 0.000981" in capsys.readouterr().err


def test_remesh_command_reports_bad_input(tmp_path, capsys):
    src = tmp_path / "sphere.ply"
    trimesh.creation.icosphere(subdivisions=1).export(str(src))
    assert main(["remesh", str(src), str(tmp_path / "o.obj"), "--resolution", "100"]) == 2
    assert "not a multiple of 8" in capsys.readouterr().err
    assert main(["remesh", str(tmp_path / "nope.obj"), str(tmp_path / "o.obj")]) == 2
    assert "file not found" in capsys.readouterr().err
    assert not (tmp_path / "o.obj").exists()


def test_eval_command_prints_one_json_object(tmp_path, capsys):
    import json

    src = tmp_path / "sphere.ply"
    trimesh.creation.icosphere(subdivisions=2).export(str(src))
    shifted = trimesh.creation.icosphere(subdivisions=2)
    shifted.apply_translation([0.02, 0.0, 0.0])
    moved = tmp_path / "moved.ply"
    shifted.export(str(moved))
    assert main(["eval", str(src), str(moved), "--json", "--samples", "20000"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) == {"CD", "F1@0.01", "F1@0.001", "NMSE", "SNE"}
    assert 0.002 < result["CD"] < 0.02 and result["F1@0.001"] < 0.5


def test_the_clean_up_switches_reach_the_options():
    """Each clean-up switch turns off its own step and no other (the defaults: every step on)."""
    import argparse

    from backend.cli.arguments import add_cleanup_arguments, cleanup_from_args
    from model.cleanup import CleanupOptions

    parser = argparse.ArgumentParser()
    add_cleanup_arguments(parser)
    assert cleanup_from_args(parser.parse_args([])) == CleanupOptions()
    assert cleanup_from_args(parser.parse_args(["--cut-slabs"])) == CleanupOptions(contour_slabs=False)
    assert cleanup_from_args(parser.parse_args(["--no-settle"])) == CleanupOptions(settle=False)
    assert cleanup_from_args(parser.parse_args(["--no-fill-gaps"])) == CleanupOptions(fill_gaps=False)
    assert cleanup_from_args(parser.parse_args(["--no-creases"])) == CleanupOptions(creases=False)
    assert cleanup_from_args(parser.parse_args(["--keep-slabs"])) == CleanupOptions(single_layer=False)
    assert cleanup_from_args(parser.parse_args(["--raw"])) == CleanupOptions.none()
