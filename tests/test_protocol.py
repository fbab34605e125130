"""The wire format without sockets: framing, validation and error codes (backend.protocol)."""

from __future__ import annotations

import subprocess
import sys

import msgpack
import numpy as np
import pytest

from backend import protocol as proto
from backend.jobs import QUEUED, Job, JobQueue, MetricsReader, ProgressThrottle, QueueFull

LIMITS = proto.Limits()


def tetra() -> dict[str, np.ndarray]:
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    f = np.array([[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]], dtype=np.int32)
    return {"vertices": v, "faces": f}


def frames(kind: str = "remesh", options: dict | None = None, arrays: dict | None = None, **header) -> list:
    out = proto.request_frames(kind, "r1", options if options is not None else {"resolution": 64},
                               tetra() if arrays is None and kind == "remesh" else arrays)
    if header:
        head = msgpack.unpackb(out[0])
        head.update(header)
        out[0] = msgpack.packb(head)
    return [bytes(f) for f in out]


def code_of(fr: list, limits: proto.Limits = LIMITS) -> str:
    with pytest.raises(proto.ProtocolError) as info:
        proto.parse_request(fr, limits)
    return info.value.code


def test_constants_match_the_model():
    from model import grid, pipeline

    assert (proto.MIN_RESOLUTION, proto.MAX_RESOLUTION, proto.RESOLUTION_STEP) == (
        grid.MIN_RESOLUTION, grid.MAX_RESOLUTION, grid.BLOCK_SIZE)
    assert proto.MODES == pipeline.MODES


def test_client_side_modules_import_without_torch_or_model():
    code = ("import sys; import backend.client, backend.protocol; "
            "bad = [m for m in sys.modules if m == 'torch' or m == 'model' or m.startswith(('torch.', 'model.'))]; "
            "print(bad); sys.exit(1 if bad else 0)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def test_mesh_round_trips_as_raw_little_endian_frames():
    fr = frames()
    head = msgpack.unpackb(fr[0])
    assert head["arrays"] == [{"name": "vertices", "dtype": "<f4", "shape": [4, 3]},
                              {"name": "faces", "dtype": "<i4", "shape": [4, 3]}]
    assert fr[1] == tetra()["vertices"].astype("<f4").tobytes() and len(fr[2]) == 4 * 3 * 4
    req = proto.parse_request(fr, LIMITS)
    assert req.type == "remesh" and req.id == "r1"
    assert req.options == {"resolution": 64, "mode": "direct", "chunk_blocks": 16384, "cleanup": {}, "voxel_size": None,
                           "polygons": "quads", "refine_steps": 0}
    np.testing.assert_array_equal(req.arrays["vertices"], tetra()["vertices"])
    np.testing.assert_array_equal(req.arrays["faces"], tetra()["faces"])


def test_big_endian_and_strided_arrays_are_sent_little_endian_and_contiguous():
    v = tetra()["vertices"].astype(">f4")
    f = np.asfortranarray(tetra()["faces"].astype(">i4"))
    fr = [bytes(x) for x in proto.request_frames("remesh", 1, {"resolution": 64}, {"vertices": v, "faces": f})]
    req = proto.parse_request(fr, LIMITS)
    np.testing.assert_array_equal(req.arrays["faces"], tetra()["faces"])
    assert req.arrays["vertices"].dtype.str == "<f4"


def test_event_round_trip():
    arrays = {"latents": np.arange(32, dtype=np.float32).reshape(2, 16), "coords": np.zeros((2, 3), np.int32)}
    ev = proto.parse_event([bytes(f) for f in proto.event_frames("result", "r1", "job-1", {"scale": 1.5}, arrays)])
    assert (ev.type, ev.id, ev.job, ev.data, ev.terminal) == ("result", "r1", "job-1", {"scale": 1.5}, True)
    np.testing.assert_array_equal(ev.arrays["latents"], arrays["latents"])
    err = proto.parse_event(proto.error_frames("bad_mesh", "nope", "r2"))
    assert err.type == "error" and err.data == {"code": "bad_mesh", "message": "nope"}


@pytest.mark.parametrize("case, code", [
    ("garbage", "bad_message"),
    ("not_a_map", "bad_message"),
    ("no_frames", "bad_message"),
    ("missing_frame", "bad_message"),
    ("extra_frame", "bad_message"),
    ("unknown_header_field", "bad_message"),
    ("version", "version_mismatch"),
    ("no_version", "version_mismatch"),
    ("type", "unknown_type"),
    ("option", "unknown_option"),
    ("resolution_100", "bad_resolution"),
    ("resolution_4096", "bad_resolution"),
    ("resolution_str", "bad_resolution"),
    ("mode", "bad_option"),
    ("refine_too_many", "bad_option"),
    ("refine_negative", "bad_option"),
    ("refine_float", "bad_option"),
    ("wrong_dtype", "bad_array"),
    ("wrong_shape", "bad_array"),
    ("short_frame", "bad_array"),
    ("missing_array", "bad_array"),
    ("nan_vertex", "bad_mesh"),
    ("inf_vertex", "bad_mesh"),
    ("index_high", "bad_mesh"),
    ("index_negative", "bad_mesh"),
    ("empty", "bad_mesh"),
    ("decode_missing_option", "bad_option"),
    ("cancel_without_job", "bad_message"),
])
def test_each_malformed_request_has_its_code(case, code):
    t = tetra()
    fr = {
        "garbage": lambda: [b"\xc1\xff garbage"],
        "not_a_map": lambda: [msgpack.packb([1, 2, 3])],
        "no_frames": lambda: [],
        "missing_frame": lambda: frames()[:2],
        "extra_frame": lambda: frames() + [b"1234"],
        "unknown_header_field": lambda: frames(colour="red"),
        "version": lambda: frames(v=proto.PROTOCOL_VERSION + 1),
        "no_version": lambda: frames(v=None),
        "type": lambda: frames("transmogrify", options={}),
        "option": lambda: frames(options={"resolution": 64, "smoothness": 3}),
        "resolution_100": lambda: frames(options={"resolution": 100}),
        "resolution_4096": lambda: frames(options={"resolution": 4096}),
        "resolution_str": lambda: frames(options={"resolution": "64"}),
        "mode": lambda: frames(options={"mode": "magic"}),
        "refine_too_many": lambda: frames(options={"mode": "vae", "refine_steps": 1001}),
        "refine_negative": lambda: frames(options={"mode": "vae", "refine_steps": -1}),
        "refine_float": lambda: frames(options={"mode": "vae", "refine_steps": 2.5}),
        "wrong_dtype": lambda: frames(arrays={"vertices": t["vertices"].astype(np.float64), "faces": t["faces"]}),
        "wrong_shape": lambda: frames(arrays={"vertices": t["vertices"].reshape(3, 4), "faces": t["faces"]}),
        "short_frame": lambda: frames()[:2] + [b"\x00" * 8],
        "missing_array": lambda: frames(arrays={"vertices": t["vertices"]}),
        "nan_vertex": lambda: frames(arrays={"vertices": np.where(np.eye(4, 3, dtype=bool), np.nan, t["vertices"]).astype(np.float32),
                                             "faces": t["faces"]}),
        "inf_vertex": lambda: frames(arrays={"vertices": np.full((4, 3), np.inf, np.float32), "faces": t["faces"]}),
        "index_high": lambda: frames(arrays={"vertices": t["vertices"], "faces": t["faces"] + 1}),
        "index_negative": lambda: frames(arrays={"vertices": t["vertices"], "faces": t["faces"] - 1}),
        "empty": lambda: frames(arrays={"vertices": np.zeros((0, 3), np.float32), "faces": np.zeros((0, 3), np.int32)}),
        "decode_missing_option": lambda: frames("decode", options={"resolution": 64},
                                                arrays={"latents": np.zeros((1, 16), np.float32), "coords": np.zeros((1, 3), np.int32)}),
        "cancel_without_job": lambda: frames("cancel", options={}),
    }[case]()
    assert code_of(fr) == code


def test_error_keeps_the_request_id_when_the_header_is_readable():
    with pytest.raises(proto.ProtocolError) as info:
        proto.parse_request(frames(options={"resolution": 100}), LIMITS)
    assert info.value.request_id == "r1" and "multiple of 8" in info.value.message


def test_limits():
    small = proto.Limits(max_message_bytes=1000, max_vertices=3, max_blocks=1)
    assert code_of(frames(arrays={"vertices": np.zeros((100, 3), np.float32), "faces": tetra()["faces"]}), small) == "too_large"
    assert code_of(frames(), proto.Limits(max_vertices=3)) == "too_large"
    assert code_of([b"\x80" + b" " * 70_000]) == "too_large"  # header over max_header_bytes
    lat = {"latents": np.zeros((2, 16), np.float32), "coords": np.array([[0, 0, 0], [1, 1, 1]], np.int32)}
    opts = {"resolution": 64, "center": [0, 0, 0], "scale": 1.0}
    assert code_of(frames("decode", options=opts, arrays=lat), small) == "too_large"
    assert proto.parse_request(frames("decode", options=opts, arrays=lat), LIMITS).options["scale"] == 1.0


@pytest.mark.parametrize("coords, latents, needle", [
    ([[0, 0, 0], [8, 0, 0]], np.zeros((2, 16)), "lie in"),
    ([[0, 0, 0], [0, 0, 0]], np.zeros((2, 16)), "duplicates"),
    ([[0, 0, 0]], np.zeros((2, 16)), "one per latent"),
    ([[0, 0, 0], [1, 0, 0]], np.full((2, 16), np.nan), "NaN"),
])
def test_latent_checks(coords, latents, needle):
    fr = frames("decode", options={"resolution": 64, "center": [0, 0, 0], "scale": 2.0},
                arrays={"latents": np.asarray(latents, np.float32), "coords": np.asarray(coords, np.int32)})
    with pytest.raises(proto.ProtocolError, match=needle) as info:
        proto.parse_request(fr, LIMITS)
    assert info.value.code == "bad_array"


def test_every_error_code_is_documented():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "protocol.md").read_text()
    for code in proto.ERROR_CODES:
        assert f"`{code}`" in doc, code
    for kind in proto.REQUESTS:
        assert f"`{kind}`" in doc, kind
    for event in proto.EVENT_TYPES:
        assert f"`{event}`" in doc, event


# --- job bookkeeping (backend.jobs) -------------------------------------------------------------


def _job(i: int) -> Job:
    return Job(id=f"j{i}", type="remesh", owner=b"x", request_id=i, options={}, arrays=tetra())


def test_queue_positions_cancel_and_history():
    q = JobQueue(max_queued=2)
    assert q.submit(_job(1)) == 0 and q.submit(_job(2)) == 1
    with pytest.raises(QueueFull):
        q.submit(_job(3))
    running = q.next(0.0)
    assert running.id == "j1" and q.submit(_job(3)) == 2  # j2 waits behind the running j1
    job, outcome = q.cancel("j2")
    assert outcome == "dequeued" and job.state == "cancelled" and job.arrays is None
    assert q.cancel("j1")[1] == "cancelling" and running.cancel_requested.is_set()
    q.finish(running, "cancelled")
    assert q.cancel("j1")[1] == "cancelled" and q.cancel("nope") == (None, "unknown")
    states = {s["job"]: s["state"] for s in q.summaries()}
    assert states == {"j1": "cancelled", "j2": "cancelled", "j3": QUEUED}


def test_progress_throttle():
    now = [0.0]
    t = ProgressThrottle(1.0, clock=lambda: now[0])
    assert t.allow("udf", 0.0) and not t.allow("udf", 0.5)
    assert t.allow("udf", 1.0) and not t.allow("udf", 1.0)  # stage end passes once
    assert t.allow("extract", 0.0)
    now[0] = 2.0
    assert t.allow("extract", 0.5)


def test_metrics_reader_reads_complete_rows_incrementally(tmp_path):
    path = tmp_path / "metrics.csv"
    r = MetricsReader(path)
    assert r.poll() == []
    path.write_text("step,loss,lr\n1,0.5,0.001\n2,0.4")
    assert r.poll() == [{"step": 1, "loss": 0.5, "lr": 0.001}]
    with open(path, "a") as f:
        f.write(",0.001\n3,nan,0.001\nbroken\n")
    rows = r.poll()
    assert [row["step"] for row in rows] == [2, 3] and np.isnan(rows[1]["loss"])


def test_the_wire_default_chunk_equals_the_model_s():
    """protocol.py travels inside the add-on without ``model``, so it writes the number out."""
    from backend.protocol import WIRE_CHUNK_BLOCKS
    from model.grid import CHUNK_BLOCKS
    from model.pipeline import RemeshOptions

    assert WIRE_CHUNK_BLOCKS == CHUNK_BLOCKS == RemeshOptions().chunk_blocks


def test_the_wire_refinement_bound_equals_the_model_s():
    """The same for the most refinement steps a request may ask (model.refine.MAX_STEPS)."""
    from model.refine import MAX_STEPS

    fr = [bytes(x) for x in proto.request_frames("remesh", 1, {"mode": "vae", "refine_steps": MAX_STEPS}, tetra())]
    assert proto.parse_request(fr, LIMITS).options["refine_steps"] == MAX_STEPS
    fr = [bytes(x) for x in proto.request_frames("encode", 2, {"refine_steps": MAX_STEPS + 1}, tetra())]
    with pytest.raises(proto.ProtocolError) as err:
        proto.parse_request(fr, LIMITS)
    assert err.value.code == "bad_option"


def test_queue_position_follows_the_fair_schedule():
    """Client A queues three jobs, then client B one: B's job runs second (the least served client
    goes next), so its position is 1, not its place in arrival order (3); A's last one moves back."""
    q = JobQueue(max_queued=8)
    owned = lambda i, who: Job(id=f"j{i}", type="remesh", owner=who, request_id=i, options={}, arrays=tetra())  # noqa: E731
    assert [q.submit(owned(i, b"A")) for i in (1, 2, 3)] == [0, 1, 2]
    assert q.submit(owned(4, b"B")) == 1
    positions = {s["job"]: s["queue_position"] for s in q.summaries()}
    assert positions == {"j1": 0, "j4": 1, "j2": 2, "j3": 3}
    assert [q.next(0.0).id for _ in range(4)] == ["j1", "j4", "j2", "j3"]  # as promised
