"""`log3d serve` end to end over loopback TCP: results, concurrency, errors, cancel, auth, training."""

from __future__ import annotations

import os
import sys
import textwrap
import threading
import time

import msgpack
import numpy as np
import pytest
import trimesh
import zmq

from backend import protocol as proto
from tests.conftest import keyed_dealer
from tests.conftest import server_config as config
from backend.cli import main
from backend.client import BackendError, Log3DClient
from backend.server import Server, ServerConfig
from model.autoencode import load_vae
from model.mesh import Mesh, MeshError
from model.pipeline import RemeshOptions, decode_to_mesh, encode_mesh, remesh

LIMITS = proto.Limits(max_message_bytes=8 << 20)


def sphere(subdivisions: int = 3, radius: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    tm = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    return np.asarray(tm.vertices, dtype=np.float32), np.asarray(tm.faces, dtype=np.int32)


def reference(vertices: np.ndarray, faces: np.ndarray, resolution: int = 64):
    """The in-process result for exactly the float32 input the server receives."""
    return remesh(Mesh(vertices.astype(np.float64), faces.astype(np.int64)), RemeshOptions(resolution=resolution)).mesh


@pytest.fixture(scope="module")
def server():
    srv = Server(config()).start()
    yield srv
    srv.stop()
    assert srv.stopped


@pytest.fixture
def client(server):
    with Log3DClient(port=server.port, timeout_s=10, job_timeout_s=60) as c:
        yield c


def collect(client: Log3DClient, job: str, timeout_s: float = 60.0) -> list[proto.Event]:
    """Every event of a job through the non-blocking poll, until its terminal event."""
    events: list[proto.Event] = []
    deadline = time.monotonic() + timeout_s
    while not (events and events[-1].terminal):
        assert time.monotonic() < deadline, f"job {job} did not end: {[e.type for e in events]}"
        events += client.poll(job)
        time.sleep(0.01)
    return events


def assert_stream(events: list[proto.Event], end: str) -> None:
    types = [e.type for e in events]
    assert types[0] == "accepted" and types[-1] == end, types
    assert set(types[1:-1]) <= {"progress"} and types.count(end) == 1, types


def test_hello_reports_version_device_and_capabilities(client):
    info = client.hello()
    assert info["protocol"] == proto.PROTOCOL_VERSION and info["server"] == "log3d-studio"
    assert info["device"] == "cpu" and info["model"] is None and info["auth"] == "curve"
    caps = info["capabilities"]
    assert caps["modes"] == ["direct"]
    assert caps["resolutions"] == {"min": 64, "max": 2048, "multiple_of": 8}
    assert caps["limits"]["max_message_bytes"] == LIMITS.max_message_bytes
    assert set(caps["types"]) == set(proto.REQUESTS)


def test_round_trip_equals_in_process_remesh(client):
    v, f = sphere()
    seen: list[str] = []
    rv, rf, info = client.remesh(v, f, resolution=64, mode="direct", on_progress=lambda s, _: seen.append(s))
    ref = reference(v, f)
    assert rv.dtype == np.float32 and rf.dtype == np.int32
    assert rf.shape == ref.faces.shape and info["num_faces"] == ref.num_faces
    np.testing.assert_array_equal(rf, ref.faces)
    np.testing.assert_array_equal(rv, ref.vertices.astype(np.float32))
    assert {"extract", "cleanup"} <= set(seen) and info["resolution"] == 64


def test_several_clients_at_once(server):
    inputs = [sphere(1, 1.0), sphere(2, 2.0), sphere(3, 0.5)]
    results: dict[int, tuple] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            with Log3DClient(port=server.port, timeout_s=10) as c:
                job = c.submit_remesh(*inputs[i], resolution=64)
                events = collect(c, job)
                results[i] = (job, events)
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not errors and sorted(results) == [0, 1, 2]
    assert len({job for job, _ in results.values()}) == 3
    for i, (job, events) in results.items():
        assert_stream(events, "result")
        assert all(e.job == job for e in events) and any(e.type == "progress" for e in events)
        ref = reference(*inputs[i])
        np.testing.assert_array_equal(events[-1].arrays["faces"], ref.faces)
        np.testing.assert_array_equal(events[-1].arrays["vertices"], ref.vertices.astype(np.float32))


def raw_request(sock: zmq.Socket, frames: list, timeout_ms: int = 10_000) -> proto.Event:
    sock.send_multipart(frames)
    assert sock.poll(timeout_ms), "the server did not answer"
    return proto.parse_event(sock.recv_multipart())


def test_malformed_messages_get_their_code_and_the_server_keeps_serving(server, client):
    v, f = sphere(1)
    good = dict(kind="remesh", request_id="x", options={"resolution": 64}, arrays={"vertices": v, "faces": f})

    def req(header: dict | None = None, arrays: dict | None = None, drop_last: bool = False) -> list:
        fr = proto.request_frames(good["kind"], good["request_id"], good["options"], arrays or good["arrays"])
        head = msgpack.unpackb(fr[0])
        head.update(header or {})
        fr[0] = msgpack.packb(head)
        return [bytes(x) for x in (fr[:-1] if drop_last else fr)]

    nan_v = v.copy()
    nan_v[5, 1] = np.nan
    cases = {
        "garbage bytes": ([b"\xc1\x00\xffnot msgpack at all"], "bad_message"),
        "empty frame": ([b""], "bad_message"),
        "header not a map": ([msgpack.packb("hello")], "bad_message"),
        "wrong frame count": (req(drop_last=True), "bad_message"),
        "wrong dtype": (req(arrays={"vertices": v.astype(np.float64), "faces": f}), "bad_array"),
        "wrong shape": (req(arrays={"vertices": v.reshape(-1, 1), "faces": f}), "bad_array"),
        "NaN vertex": (req(arrays={"vertices": nan_v, "faces": f}), "bad_mesh"),
        "index out of range": (req(arrays={"vertices": v, "faces": f + len(v)}), "bad_mesh"),
        "resolution 100": (req({"options": {"resolution": 100}}), "bad_resolution"),
        "unknown option": (req({"options": {"resolution": 64, "sharpness": 1}}), "unknown_option"),
        "unknown clean-up setting": (req({"options": {"resolution": 64, "cleanup": {"polish": True}}}), "unknown_option"),
        "unknown type": (req({"type": "explode"}), "unknown_type"),
        "version mismatch": (req({"v": 99}), "version_mismatch"),
        "oversized": (req(arrays={"vertices": np.zeros((750_000, 3), np.float32), "faces": f}), "too_large"),
        "vae without weights": (req({"options": {"resolution": 64, "mode": "vae"}}), "mode_unavailable"),
        "cancel unknown job": (proto.request_frames("cancel", "c", job="job-none"), "not_found"),
    }
    sock = keyed_dealer(server.port)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.endpoint)
    try:
        for name, (frames, code) in cases.items():
            event = raw_request(sock, frames)
            assert event.type == "error", name
            assert event.data["code"] == code, (name, event.data)
            assert event.data["message"], name
        # The id is echoed whenever the header could be read.
        assert raw_request(sock, req({"options": {"resolution": 100}})).id == "x"
    finally:
        sock.close()
    assert client.hello()["protocol"] == proto.PROTOCOL_VERSION
    rv, rf, _ = client.remesh(v, f, resolution=64)
    assert rf.shape[0] > 0


def test_cancel_queued_and_running_jobs_and_the_queue_continues(server, client):
    big, small = sphere(3), sphere(2)
    a = client.submit_remesh(*big, resolution=512)
    b = client.submit_remesh(*small, resolution=64)
    c = client.submit_remesh(*small, resolution=64)
    assert client.cancel(b) == {"job": b, "state": "cancelled"}  # still queued behind a
    events_a: list[proto.Event] = []
    deadline = time.monotonic() + 30
    while not any(e.type == "progress" for e in events_a):
        assert time.monotonic() < deadline
        events_a += client.poll(a)
        time.sleep(0.005)
    assert client.cancel(a)["state"] == "cancelling"
    events_a += collect(client, a)
    assert_stream(events_a, "cancelled")
    assert events_a[-1].data["stage"] in ("udf", "ublocks", "pad_average", "extract", "cleanup")
    assert_stream(collect(client, b), "cancelled")
    events_c = collect(client, c)
    assert_stream(events_c, "result")
    states = {j["job"]: j["state"] for j in client.jobs()}
    assert (states[a], states[b], states[c]) == ("cancelled", "cancelled", "done")
    assert server.queue.get(a).arrays is None and server.queue.get(b).arrays is None  # inputs freed
    with pytest.raises(BackendError) as info:
        client.wait(client.submit_remesh(*small, resolution=64, chunk_blocks=0))
    assert info.value.code == "bad_option"


def test_non_loopback_needs_allow_remote(tmp_path, capsys):
    with pytest.raises(ValueError, match="allow-remote"):
        ServerConfig(host="0.0.0.0").validate()
    assert ServerConfig(host="0.0.0.0", allow_remote=True).validate().bind_address == "tcp://0.0.0.0:5557"
    assert main(["serve", "--host", "0.0.0.0", "--port", "0"]) == 2
    assert "refusing" in capsys.readouterr().err


def test_encode_decode_through_the_server_match_in_process(tiny_checkpoint):
    v, f = sphere()
    mesh = Mesh(v.astype(np.float64), f.astype(np.int64))
    vae = load_vae(tiny_checkpoint, "cpu")
    opts = RemeshOptions(resolution=64, mode="vae")
    ref_latents, ref_norm = encode_mesh(mesh, opts, vae=vae)
    refined, _ = encode_mesh(mesh, RemeshOptions(resolution=64, mode="vae", refine_steps=2), vae=vae)
    assert not np.allclose(refined.latents, ref_latents.latents, rtol=1e-3, atol=1e-3)
    try:
        ref_mesh, ref_error = decode_to_mesh(ref_latents, ref_norm, opts, vae=vae), None
    except MeshError as exc:
        ref_mesh, ref_error = None, exc

    with Server(config(checkpoint=str(tiny_checkpoint))) as srv, Log3DClient(port=srv.port, job_timeout_s=60) as c:
        hello = c.hello()
        assert hello["capabilities"]["modes"] == ["direct", "vae"] and hello["model"]["preset"] == "tiny"
        enc = c.encode(v, f, resolution=64)
        assert enc.latents.dtype == np.float32 and enc.latents.shape == (len(enc.coords), 16)
        assert enc.coords.dtype == np.int32 and enc.coords.shape[1] == 3 and enc.resolution == 64
        np.testing.assert_array_equal(enc.coords, ref_latents.coords)
        np.testing.assert_allclose(enc.latents, ref_latents.latents, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(enc.center, ref_norm.center)
        assert enc.scale == pytest.approx(ref_norm.scale)
        enc_refined = c.encode(v, f, resolution=64, refine_steps=2)  # the option reaches the pipeline
        np.testing.assert_array_equal(enc_refined.coords, refined.coords)
        np.testing.assert_allclose(enc_refined.latents, refined.latents, rtol=1e-4, atol=1e-4)
        if ref_error is None:
            dv, df, info = c.decode(enc.latents, enc.coords, enc.resolution, enc.center, enc.scale)
            assert df.shape == ref_mesh.faces.shape and info["num_faces"] == ref_mesh.num_faces
            np.testing.assert_allclose(dv, ref_mesh.vertices, rtol=1e-4, atol=1e-4)
        else:  # an untrained decoder may place no voxel below ε: a clean, specific error
            with pytest.raises(BackendError) as info:
                c.decode(enc.latents, enc.coords, enc.resolution, enc.center, enc.scale)
            assert info.value.code == "empty_surface" and "empty" in info.value.message
        with pytest.raises(BackendError) as info:  # latents of another width than the loaded model's
            c.decode(np.zeros((2, 8), np.float32), enc.coords[:2], 64, enc.center, enc.scale)
        assert info.value.code == "bad_array"
        assert c.shutdown() == {"state": "stopping"}


# Takes the command line the server builds from train.start's typed options (server.training_command).
FAKE_TRAINER = textwrap.dedent("""
    import argparse, pathlib, sys, time
    p = argparse.ArgumentParser()
    p.add_argument("--run-dir", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--preset")
    p.add_argument("--max-steps", type=int, default=2000)
    p.add_argument("--seed")
    p.add_argument("--val-every")
    p.add_argument("--lr")
    p.add_argument("--init")
    p.add_argument("--resume", action="store_true")
    a = p.parse_args()
    if "fail" in pathlib.Path(a.data).name:
        print("fake trainer: diverged", file=sys.stderr)
        sys.exit(3)
    with open(pathlib.Path(a.run_dir) / "metrics.csv", "w") as f:
        f.write("step,loss\\n")
        f.flush()
        for step in range(1, min(a.max_steps, 2000) + 1):
            f.write(f"{step},{1.0 / step}\\n")
            f.flush()
            time.sleep(0.02)
""")


def training_server_config(tmp_path, **changes):
    """A server whose trainer is FAKE_TRAINER, with caches `cache` and `fail-cache` in its data root."""
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAINER)
    data = tmp_path / "data"
    for name in ("cache", "fail-cache"):
        (data / name).mkdir(parents=True, exist_ok=True)
        (data / name / "index.json").write_text("{}")
    return config(train_command=[sys.executable, str(script)], runs_dir=tmp_path / "runs", data_roots=(data,),
                  train_poll_s=0.05, **changes)


def test_train_start_status_stop(tmp_path):
    cfg = training_server_config(tmp_path, max_train_runs=1)
    with Server(cfg) as srv, Log3DClient(port=srv.port, timeout_s=10, job_timeout_s=30) as c:
        assert c.hello()["datasets"] == ["cache", "fail-cache"]
        job = c.train_start("cache", max_steps=2000)
        with pytest.raises(BackendError) as busy:  # one run at a time by default
            c.train_start("cache", max_steps=3)
        assert busy.value.code == "queue_full"
        steps = []
        deadline = time.monotonic() + 20
        while len(steps) < 3:
            assert time.monotonic() < deadline, steps
            status = c.train_status(job, last=5)
            assert status["state"] == "running" and status["run_dir"] == str((tmp_path / "runs" / job).resolve())
            if status["step"] is not None and (not steps or status["step"] > steps[-1]):
                steps.append(status["step"])
                assert status["loss"] == pytest.approx(1.0 / status["step"])
                assert [r["step"] for r in status["rows"]] == sorted(r["step"] for r in status["rows"])
            time.sleep(0.1)
        pid = status["pid"]
        stopped = c.train_stop(job)
        assert stopped["job"] == job and stopped["state"] in ("cancelled", "stopping")
        events = collect(c, job, timeout_s=20)
        assert_stream(events, "cancelled")
        progress_steps = [e.data["step"] for e in events if e.type == "progress"]
        assert progress_steps and progress_steps == sorted(progress_steps) and progress_steps[-1] >= steps[0]
        assert c.train_status(job)["state"] == "cancelled" and c.train_status(job)["returncode"] is not None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)

        done = c.train_start("cache", max_steps=3)
        end = c.wait(done, timeout_s=20)
        assert end.type == "result" and end.data["state"] == "done" and end.data["step"] == 3
        assert end.data["run_dir"] == str((tmp_path / "runs" / done).resolve())
        failed = c.train_start("fail-cache", max_steps=2)
        with pytest.raises(BackendError) as info:
            c.wait(failed, timeout_s=20)
        assert info.value.code == "train_failed" and "diverged" in info.value.message
        listed = {j["job"]: j["state"] for j in c.jobs()}
        assert listed == {job: "cancelled", done: "done", failed: "failed"}


def test_error_classification_tells_a_bad_input_from_an_empty_result():
    from backend.jobs import Job
    from backend.server import classify_error
    from model.grid import ResolutionError
    from model.pipeline import ModeUnavailable

    job = Job(id="j", type="decode", owner=b"", request_id=1, options={}, arrays=None)
    for stage, code in (("udf", "bad_mesh"), ("ublocks", "bad_mesh"), ("decode", "empty_surface"),
                        ("extract", "empty_surface"), ("cleanup", "empty_surface")):
        job.stage = stage
        assert classify_error(MeshError("the ε-surface at N=64 is empty"), job)[0] == code
    assert classify_error(ResolutionError("no"), job)[0] == "bad_resolution"
    assert classify_error(ModeUnavailable("no weights"), job)[0] == "mode_unavailable"
    assert classify_error(MemoryError(), job)[0] == "out_of_memory"
    code, message = classify_error(KeyError("boom"), job)
    assert code == "internal" and "KeyError" in message and "cleanup" in message


def test_random_garbage_never_gets_an_internal_error_nor_stops_the_server(server, client):
    import random

    rng = random.Random(0)
    values = [None, True, 1, -1, 2**40, 1.5, float("nan"), "x", "remesh", b"\x00", [], [1, 2], {}, {"a": 1},
              [{"name": "vertices", "dtype": "<f4", "shape": [1, 3]}]]
    keys = ["v", "type", "id", "job", "options", "arrays", "token", "zzz"]
    safe_types = [t for t in proto.REQUESTS if t not in ("shutdown", "train.start")]
    sock = keyed_dealer(server.port)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.endpoint)
    seen: dict[str, int] = {}
    try:
        for _ in range(200):
            if rng.random() < 0.3:
                frames = [rng.randbytes(rng.randint(0, 40)) for _ in range(rng.randint(1, 3))]
            else:
                header = {k: rng.choice(values) for k in rng.sample(keys, rng.randint(0, len(keys)))}
                if rng.random() < 0.6:
                    header["v"] = proto.PROTOCOL_VERSION
                if rng.random() < 0.5:
                    header["type"] = rng.choice(safe_types)
                frames = [msgpack.packb(header)] + [rng.randbytes(rng.choice([0, 12, 24])) for _ in range(rng.randint(0, 2))]
            event = raw_request(sock, frames, timeout_ms=5000)
            key = event.data.get("code", event.type)
            seen[key] = seen.get(key, 0) + 1
    finally:
        sock.close()
    assert "internal" not in seen and seen.get("bad_message", 0) > 50, seen
    assert client.hello()["protocol"] == proto.PROTOCOL_VERSION
