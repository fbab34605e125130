"""`log3d batch`: a folder through the server, resumable, failures summarised."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import trimesh

from backend.batch import BatchConfig, output_paths, run_batch
from backend.cli import main
from backend.client import BackendError, Log3DClient
from backend.server import Server, ServerConfig
from model.mesh import load_mesh


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def folder(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    trimesh.creation.icosphere(subdivisions=2).export(str(src / "ball.ply"))
    trimesh.creation.box(extents=(1.0, 0.6, 0.3)).export(str(src / "brick.obj"))
    trimesh.creation.torus(major_radius=1.0, minor_radius=0.3).export(str(src / "ring.stl"))
    (src / "broken.obj").write_text("this is not a mesh at all\n")
    (src / "notes.txt").write_text("not an input")
    return src


def test_batch_starts_a_server_writes_outputs_reports_failures_and_resumes(folder, tmp_path, capsys):
    out = tmp_path / "out"
    port = free_port()
    args = ["batch", str(folder), str(out), "--resolution", "64", "--port", str(port), "--device", "cpu", "--quiet"]

    assert main(args) == 1  # no server was running: one is started, used and stopped
    printed = capsys.readouterr().out
    assert "3 remeshed, 0 skipped (output exists), 1 failed" in printed
    assert "FAILED" in printed and "broken.obj" in printed and "no triangles" in printed
    written = sorted(p.name for p in out.iterdir())
    assert written == ["ball.ply", "brick.ply", "ring.ply"]  # no partial files left behind
    for name in written:
        assert load_mesh(out / name).num_faces > 100
    with Log3DClient(port=port, timeout_s=1.0) as c, pytest.raises(BackendError) as info:
        c.hello()  # the batch's own server is gone
    assert info.value.code == "timeout"

    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    with Server(ServerConfig(port=port, device="cpu", load_default_weights=False)) as srv:
        assert main(args) == 1  # a running server is used as it is
        printed = capsys.readouterr().out
        assert "0 remeshed, 3 skipped (output exists), 1 failed" in printed
        assert srv.queue.counts() == {"queued": 0, "running": 0} and srv.queue.summaries() == []
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_batch_result_matches_the_direct_remesh(folder, tmp_path):
    from model.pipeline import RemeshOptions, remesh

    for p in list(folder.iterdir()):
        if p.name != "ball.ply":
            p.unlink()
    from model.cleanup import CleanupOptions

    raw = {"deflate": False, "outer_shell": False, "single_layer": False, "target_faces": 0}
    with Server(ServerConfig(port=0, device="cpu", load_default_weights=False)) as srv:
        report = run_batch(BatchConfig(folder, tmp_path / "o", resolution=64, port=srv.port, fmt="obj",
                                       show_progress=False))
        assert main(["batch", str(folder), str(tmp_path / "raw"), "-n", "64", "--port", str(srv.port), "--format",
                     "obj", "--raw", "--quiet"]) == 0
    assert report.done == [folder / "ball.ply"] and not report.failed
    src = load_mesh(folder / "ball.ply")
    src = type(src)(src.vertices.astype(np.float32).astype(np.float64), src.faces)
    for out, cleanup in ((tmp_path / "o", CleanupOptions()), (tmp_path / "raw", CleanupOptions(**raw))):
        got = load_mesh(out / "ball.obj")
        ref = remesh(src, RemeshOptions(resolution=64, cleanup=cleanup)).mesh
        assert got.num_faces == ref.num_faces
        np.testing.assert_allclose(got.vertices, ref.vertices, atol=1e-5)
    assert load_mesh(tmp_path / "raw" / "ball.obj").num_faces != load_mesh(tmp_path / "o" / "ball.obj").num_faces


def test_batch_refuses_bad_arguments(folder, tmp_path):
    with pytest.raises(ValueError, match="multiple of 8"):
        run_batch(BatchConfig(folder, tmp_path / "o", resolution=100))
    with pytest.raises(ValueError, match="differ"):
        run_batch(BatchConfig(folder, folder))
    with pytest.raises(ValueError, match="not found"):
        run_batch(BatchConfig(tmp_path / "missing", tmp_path / "o"))


def test_output_names_do_not_collide(tmp_path):
    names = output_paths([tmp_path / "a.obj", tmp_path / "a.stl", tmp_path / "b.ply"], tmp_path / "o", "ply")
    assert [p.name for p in names.values()] == ["a_obj.ply", "a_stl.ply", "b.ply"]
