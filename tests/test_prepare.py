"""`log3d prepare`: the UBlock cache format, resumability, augmentation, broken meshes, workers."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import trimesh

from backend.cli import main as cli_main
from backend.dataset import JOURNAL_NAME, Cache, CacheError, ShardError, decode_shard
from backend.prepare import PrepareOptions, augment_params, prepare
from model.pipeline import mesh_to_field
from model.ublocks import extract_ublocks
from tests.conftest import as_mesh

N = 64


def _quiet(*args, **kwargs) -> None:
    pass



@pytest.fixture
def mesh_dir(tmp_path: Path) -> Path:
    d = tmp_path / "meshes"
    (d / "sub").mkdir(parents=True)
    trimesh.creation.icosphere(subdivisions=2).export(d / "sphere.obj")
    trimesh.creation.box().export(d / "sub" / "box.stl")
    trimesh.creation.torus(1.0, 0.3, major_sections=24, minor_sections=12).export(d / "torus.ply")
    (d / "broken.obj").write_text("v 0 0 0\nv 1 0 0\nf 1 2 7\n")  # face index out of range
    (d / "notes.txt").write_text("not a mesh")
    return d


def test_cache_holds_the_pipelines_ublocks_and_lists_broken_meshes(mesh_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cache"
    report = prepare(mesh_dir, out, PrepareOptions(resolutions=(N,), workers=1), progress=False, log=_quiet)
    assert report.written == 3 and [f.id for f in report.failures] == ["broken@64"]
    assert "MeshError" in report.failures[0].error and "broken.obj" in report.failures[0].error

    cache = Cache.open(out)
    assert sorted(e.id for e in cache.entries) == ["sphere@64", "sub/box@64", "torus@64"]
    assert [f.source for f in cache.failures] == [str(mesh_dir / "broken.obj")]
    index = json.loads((out / "index.json").read_text())
    assert index["format"] == "log3d-ublock-cache" and index["options"]["resolutions"] == [N]

    entry = next(e for e in cache.entries if e.name == "sphere")
    blocks, coords = cache.read(entry)
    assert blocks.dtype == np.float16 and coords.dtype == np.int32
    assert blocks.shape == (entry.num_blocks, 12, 12, 12)
    # The un-augmented copy is exactly what remesh feeds the network (up to float16 rounding).
    field, _ = mesh_to_field(as_mesh(trimesh.load(mesh_dir / "sphere.obj", process=False)), N)
    ref = extract_ublocks(field)
    np.testing.assert_array_equal(coords, ref.coords)
    np.testing.assert_allclose(blocks.astype(np.float32), ref.blocks, atol=5e-4)


def test_rerun_resumes_and_redoes_only_missing_work(mesh_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cache"
    opts = PrepareOptions(resolutions=(N,), workers=1)
    prepare(mesh_dir, out, opts, progress=False, log=_quiet)
    shas = {e.id: e.sha256 for e in Cache.open(out).entries}

    again = prepare(mesh_dir, out, opts, progress=False, log=_quiet)
    assert again.written == 0 and again.skipped == 4 and not again.failures  # broken meshes are not retried

    # A lost shard and a torn journal line (killed mid-write) are redone; the rest is kept.
    lost = next(e for e in Cache.open(out).entries if e.name == "torus")
    (out / lost.shard).unlink()
    with open(out / JOURNAL_NAME, "a") as f:
        f.write('{"id": "half a rec')
    third = prepare(mesh_dir, out, opts, progress=False, log=_quiet)
    assert third.written == 1 and third.skipped == 3
    assert {e.id: e.sha256 for e in Cache.open(out).entries} == shas

    retry = prepare(mesh_dir, out, PrepareOptions(resolutions=(N,), workers=1, retry_failed=True), progress=False, log=_quiet)
    assert retry.written == 0 and [f.id for f in retry.failures] == ["broken@64"]


def test_augmentation_and_several_resolutions(mesh_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cache"
    opts = PrepareOptions(resolutions=(N, 2 * N), augment=("rotate", "scale"), copies=2, scale_range=(0.5, 0.7),
                          workers=1, seed=7)
    prepare(mesh_dir, out, opts, progress=False, log=_quiet)
    cache = Cache.open(out)
    sphere = {e.id: e for e in cache.entries if e.name == "sphere"}
    assert sorted(sphere) == ["sphere@128", "sphere@128#1", "sphere@128#2", "sphere@64", "sphere@64#1", "sphere@64#2"]
    aug = sphere["sphere@64#1"].augment
    assert abs(np.linalg.norm(aug["rotation"]) - 1.0) < 1e-9 and 0.5 <= aug["scale"] <= 0.7
    assert sphere["sphere@64"].augment == {}
    # Scaled-down copies cover fewer blocks; the parameters are a function of (seed, task) only.
    assert sphere["sphere@64#1"].num_blocks < sphere["sphere@64"].num_blocks
    assert sphere["sphere@128"].num_blocks > sphere["sphere@64"].num_blocks
    assert aug == augment_params("sphere@64#1", 7, ("rotate", "scale"), (0.5, 0.7))
    assert aug != augment_params("sphere@64#1", 8, ("rotate", "scale"), (0.5, 0.7))


def test_worker_processes_write_the_same_cache(mesh_dir: Path, tmp_path: Path) -> None:
    opts = dict(resolutions=(N,), augment=("rotate",), copies=1)
    prepare(mesh_dir, tmp_path / "a", PrepareOptions(workers=1, **opts), progress=False, log=_quiet)
    report = prepare(mesh_dir, tmp_path / "b", PrepareOptions(workers=2, **opts), progress=False, log=_quiet)
    assert report.written == 6 and len(report.failures) == 2
    a = {e.id: e.sha256 for e in Cache.open(tmp_path / "a").entries}
    b = {e.id: e.sha256 for e in Cache.open(tmp_path / "b").entries}
    assert a == b


def test_damaged_shards_raise_shard_error(mesh_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cache"
    prepare(mesh_dir, out, PrepareOptions(resolutions=(N,), workers=1), progress=False, log=_quiet)
    cache = Cache.open(out)
    truncated, altered, missing = cache.entries
    data = (out / truncated.shard).read_bytes()
    (out / truncated.shard).write_bytes(data[: len(data) // 2])
    with pytest.raises(ShardError, match="sha256"):
        cache.read(truncated)
    with pytest.raises(ShardError, match="cannot decode"):
        cache.read(truncated, verify=False)  # the archive itself is unreadable too
    with pytest.raises(ShardError, match="cannot decode"):
        decode_shard(b"garbage")
    (out / missing.shard).unlink()
    with pytest.raises(ShardError, match="cannot read"):
        cache.read(missing)
    assert [e.id for e, _, _ in cache.iter_ok()] == [altered.id]
    with pytest.raises(CacheError):
        Cache.open(tmp_path / "nowhere")


def test_synthetic_shapes_mix_with_files(mesh_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def generate_shapes(count: int, seed: int):
        calls.append((count, seed))
        for i in range(count):
            yield f"cone{i}", as_mesh(trimesh.creation.cone(0.5 + 0.1 * i, 1.0))

    fake = types.ModuleType("backend.synthetic")
    fake.generate_shapes = generate_shapes  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "backend.synthetic", fake)
    out = tmp_path / "cache"
    prepare(mesh_dir, out, PrepareOptions(resolutions=(N,), workers=1, synthetic=2, seed=3), progress=False, log=_quiet)
    ids = sorted(e.id for e in Cache.open(out).entries)
    assert ids == ["sphere@64", "sub/box@64", "synthetic/cone0@64", "synthetic/cone1@64", "torus@64"]
    assert calls == [(2, 3)]
    # Synthetic shapes alone: the only positional argument is the output folder.
    assert cli_main(["prepare", str(tmp_path / "syn"), "--synthetic", "1", "-n", str(N), "-j", "1", "-q"]) == 0
    assert [e.id for e in Cache.open(tmp_path / "syn").entries] == ["synthetic/cone0@64"]


def test_synthetic_without_generator_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "backend.synthetic", None)  # import fails
    assert cli_main(["prepare", str(tmp_path / "c"), "--synthetic", "2", "-q"]) == 3
    assert "backend.synthetic" in capsys.readouterr().err


def test_cli_prepare(mesh_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cache"
    rc = cli_main(["prepare", str(mesh_dir), str(out), "--resolution", str(N), "--augment", "scale",
                   "--copies", "1", "--workers", "1", "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "6 shapes written" in text and "2 failed" in text and "broken.obj" in text
    assert len(Cache.open(out)) == 6
    assert cli_main(["prepare", str(mesh_dir), str(out), "-n", "60", "-q"]) == 2  # not a multiple of 8
