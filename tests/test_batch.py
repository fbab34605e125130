"""`log3d batch`: a folder through the server, resumable, failures summarised."""

from __future__ import annotations

import socket
from types import SimpleNamespace

import numpy as np
import pytest
import trimesh

from backend.batch import BatchConfig, output_paths, run_batch
from backend.cli import main
from backend.client import BackendError, Log3DClient
from backend.server import Server, ServerConfig
from model.mesh import Mesh, load_mesh


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
    assert info.value.code == "not_running"  # its connection file went with it: nothing is sent

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
        sizes = [len(line.split()) - 1 for line in (out / "ball.obj").read_text().splitlines() if line.startswith("f ")]
        assert sizes.count(4) == ref.num_quads  # the server's quads reach the file (none on the raw ε-surface)
    assert load_mesh(tmp_path / "raw" / "ball.obj").num_faces != load_mesh(tmp_path / "o" / "ball.obj").num_faces


def test_batch_refuses_bad_arguments(folder, tmp_path):
    with pytest.raises(ValueError, match="multiple of 8"):
        run_batch(BatchConfig(folder, tmp_path / "o", resolution=100))
    with pytest.raises(ValueError, match="differ"):
        run_batch(BatchConfig(folder, folder))
    with pytest.raises(ValueError, match="voxel_size"):
        run_batch(BatchConfig(folder, tmp_path / "o", voxel_size=-1.0))
    with pytest.raises(ValueError, match="unknown polygons"):
        run_batch(BatchConfig(folder, tmp_path / "o", polygons="hexagons"))
    with pytest.raises(ValueError, match="refinement steps"):
        run_batch(BatchConfig(folder, tmp_path / "o", mode="vae", refine_steps=1001))
    with pytest.raises(ValueError, match="not found"):
        run_batch(BatchConfig(tmp_path / "missing", tmp_path / "o"))


def test_output_names_do_not_collide(tmp_path):
    names = output_paths([tmp_path / "a.obj", tmp_path / "a.stl", tmp_path / "b.ply"], tmp_path / "o", "ply")
    assert [p.name for p in names.values()] == ["a_obj.ply", "a_stl.ply", "b.ply"]


def test_output_names_never_collide_even_with_tricky_inputs(tmp_path):
    """a.obj and a.stl fall back to a_obj / a_stl; an input that is itself called a_obj.ply keeps its
    natural name, so the fallback moves on; names differing only in case are one file on Windows
    and macOS, so they count as taken too."""
    inputs = [tmp_path / n for n in ("a.obj", "a.stl", "a_obj.ply", "B.obj", "b.ply", "c.off")]
    names = {src.name: dst.name for src, dst in output_paths(inputs, tmp_path / "o", "ply").items()}
    assert len({n.casefold() for n in names.values()}) == len(inputs), names
    assert names["a_obj.ply"] == "a_obj.ply" and names["c.off"] == "c.ply"
    again = {src.name: dst.name for src, dst in output_paths(list(reversed(inputs)), tmp_path / "o", "ply").items()}
    assert again == names  # decided by the set of inputs alone: a rerun finds the same files


def test_batch_of_colliding_names_writes_every_result(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    trimesh.creation.icosphere(subdivisions=2).export(str(src / "a.obj"))
    trimesh.creation.box().export(str(src / "a.stl"))
    trimesh.creation.torus(1.0, 0.3).export(str(src / "a_obj.ply"))
    with Server(ServerConfig(port=0, device="cpu", load_default_weights=False)) as srv:
        report = run_batch(BatchConfig(src, tmp_path / "o", resolution=64, port=srv.port, show_progress=False))
    assert len(report.done) == 3 and not report.failed
    written = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert len(written) == 3 and not [n for n in written if "partial" in n], written


def test_a_killed_server_stops_the_batch_with_a_summary(tmp_path):
    """The server dies mid-job: the batch notices through its heartbeat within seconds (not the
    per-mesh timeout), reports every mesh it could not do, and leaves no partial file."""
    import subprocess
    import sys
    import threading
    import time

    from backend import auth

    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        trimesh.creation.icosphere(subdivisions=4).export(str(src / f"ball{i}.ply"))
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "backend.cli", "serve", "--port", str(port), "--device", "cpu",
                               "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not auth.default_connection_file(port).is_file():
            assert time.monotonic() < deadline and server.poll() is None, "the server did not start"
            time.sleep(0.1)
        killer = threading.Timer(4.0, server.kill)
        killer.start()
        start = time.monotonic()
        report = run_batch(BatchConfig(src, tmp_path / "o", resolution=1024, port=port, show_progress=False,
                                       heartbeat_s=1.0))
        elapsed = time.monotonic() - start
        killer.join()
    finally:
        server.kill()
        server.wait()
    print(f"\nthe batch noticed the killed server and stopped after {elapsed:.1f} s")
    assert len(report.failed) + len(report.done) == 3 and report.failed, report.summary()
    assert any("stopped answering" in why for _, why in report.failed), report.summary()
    out = tmp_path / "o"
    assert not [p for p in out.iterdir() if "partial" in p.name]


def test_a_missing_checkpoint_starts_no_server_and_leaves_nothing_behind(folder, tmp_path):
    import os
    import tempfile

    port = free_port()
    before = set(os.listdir(tempfile.gettempdir()))
    with pytest.raises(RuntimeError, match="checkpoint not found"):
        run_batch(BatchConfig(folder, tmp_path / "o", resolution=64, port=port, show_progress=False,
                              checkpoint=tmp_path / "missing.safetensors"))
    assert set(os.listdir(tempfile.gettempdir())) - before == set()  # no secret, no log file left
    with Log3DClient(port=port, timeout_s=1.0) as c, pytest.raises(BackendError):
        c.hello()  # and no server child answering


def test_refinement_steps_reach_the_request_only_when_asked(tmp_path):
    """The batch's --refine-steps goes into each remesh request, and nothing is sent when it is 0
    (a server older than the option would refuse an unknown one)."""
    from backend.batch import _remesh_one
    from model.mesh import save_mesh

    src = tmp_path / "ball.obj"
    ball = trimesh.creation.icosphere(2)
    save_mesh(Mesh(ball.vertices, ball.faces), src)

    class Recording:
        timeout_s = 5.0

        def __init__(self):
            self.asked = {}

        def submit_remesh(self, vertices, faces, **options):
            self.asked = options
            return "job-1"

        def wait(self, job, on_progress=None, timeout_s=None):
            return SimpleNamespace(arrays={"vertices": ball.vertices.astype("f4"), "faces": ball.faces.astype("i4")},
                                   data={"quads": 0})

    for steps, sent in ((12, 12), (0, None)):
        client = Recording()
        _remesh_one(client, src, tmp_path / f"out{steps}.ply", BatchConfig(tmp_path, tmp_path / "o", mode="vae",
                                                                             refine_steps=steps), None)
        assert client.asked.get("refine_steps") == sent and client.asked["mode"] == "vae"
        assert (tmp_path / f"out{steps}.ply").exists()
