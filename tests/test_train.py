"""`log3d train` on CPU with the `tiny` preset: learning, kill → resume bit-for-bit, damaged shards,
checkpoints, validation through the reconstruction path, and the pure pieces (schedule, window)."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from safetensors.torch import load_file

from backend.cli import build_parser
from backend.cli.train import config_from_args
from backend.dataset import Cache, CacheEntry
from backend.prepare import PrepareOptions, prepare
from model.objective import vae_loss, voxel_weights
from backend.train import (
    METRIC_COLUMNS,
    RECIPES,
    ShapeSchedule,
    TrainConfig,
    last_checkpoint,
    list_checkpoints,
    select_window,
    split_holdout,
    train,
    validate_shape,
)
from model.checkpoint import ConfigMismatchError
from model.grid import FAR
from model.vae import LogVAE, load_model, preset, save_model

REPO = Path(__file__).resolve().parents[1]
N = 64


# One torch thread: no OpenMP spin-waits on the shared cores, and in-process and subprocess runs on
# the same kernels (the resume test compares them bit for bit).
pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three primitives at N = 64, scaled to 0.35 of the cube (30-60 blocks each, so a step sees a
    whole shape and stays well under a second on one loaded core)."""
    root = tmp_path_factory.mktemp("train")
    meshes = root / "meshes"
    meshes.mkdir()
    trimesh.creation.icosphere(subdivisions=2).export(meshes / "sphere.obj")
    trimesh.creation.box().export(meshes / "box.stl")
    trimesh.creation.torus(1.0, 0.3, major_sections=24, minor_sections=12).export(meshes / "torus.ply")
    out = root / "cache"
    prepare(meshes, out, PrepareOptions(resolutions=(N,), augment=("scale",), copies=1, scale_range=(0.35, 0.35),
                                        keep_original=False, workers=1), progress=False, log=lambda *a, **k: None)
    assert len(Cache.open(out)) == 3
    return out


def quiet(_: str) -> None:
    pass


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def base_config(cache_dir: Path, run_dir: Path, **kw) -> TrainConfig:
    cfg = dict(data=str(cache_dir), run_dir=str(run_dir), preset="tiny", max_steps=6, save_every=3, val_every=0,
               val_shapes=0, max_blocks=32, threads=1, device="cpu", mixed_precision="no")
    cfg.update(kw)
    return TrainConfig(**cfg)


# ----------------------------------------------------------------------------------------------
# Learning
# ----------------------------------------------------------------------------------------------


def test_loss_falls_by_half(cache_dir: Path, tmp_path: Path) -> None:
    """The whole loop (cache → AdamW → Huber + KL → clip → step) learns. Test-only settings for
    speed: lr 1e-2 instead of the paper's 5e-5, and the output head started at 0 (a runtime field)
    instead of at the data prior, so the loss has somewhere to fall in tens of steps; from the prior,
    `tiny` needs hundreds of steps to go below the best constant (docs/network.md)."""
    run = tmp_path / "run"
    summary = train(base_config(cache_dir, run, max_steps=30, lr=1e-2, save_every=30, warmup_steps=0,
                                lr_schedule="constant", surface_weight=0.0,
                                model_overrides={"output_init": 0.0}), log=quiet)
    rows = read_metrics(run)
    assert list(rows[0]) == METRIC_COLUMNS and len(rows) == 30 and summary["step"] == 30
    losses = np.array([float(r["loss"]) for r in rows])
    first, last = losses[:3].mean(), losses[-6:].mean()
    assert np.isfinite(losses).all()
    assert last < 0.5 * first, f"loss {first:.4f} -> {last:.4f}"


# ----------------------------------------------------------------------------------------------
# Checkpoints and resume
# ----------------------------------------------------------------------------------------------


def _train_cmd(cache_dir: Path, run_dir: Path, steps: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "backend.cli", "train", "--data", str(cache_dir), "--run-dir", str(run_dir),
            "--preset", "tiny", "--max-steps", str(steps), "--save-every", "2", "--val-every", "0",
            "--val-shapes", "0", "--max-blocks", "32", "--threads", "1", "--device", "cpu",
            "--mixed-precision", "no", *extra]


def test_kill_and_resume_is_bit_for_bit(cache_dir: Path, tmp_path: Path) -> None:
    steps = 10
    # Uninterrupted reference, in this process.
    ref = tmp_path / "ref"
    train(base_config(cache_dir, ref, max_steps=steps, save_every=2), log=quiet)

    # Same run in a child, SIGKILLed as soon as its first checkpoint is on disk...
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(_train_cmd(cache_dir, run, steps), cwd=REPO, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    try:
        while last_checkpoint(run) is None and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    killed_at = int(last_checkpoint(run).name[5:])
    assert killed_at < steps, "the child finished before it could be killed; the test proves nothing"

    # ...then resumed (in a child too, as the server would) to the same length.
    done = subprocess.run(_train_cmd(cache_dir, run, steps, "--resume"), cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]

    a, b = load_file(ref / "model.safetensors"), load_file(run / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    opt_a = load_file(last_checkpoint(ref) / "optimizer.safetensors")
    opt_b = load_file(last_checkpoint(run) / "optimizer.safetensors")
    assert opt_a.keys() == opt_b.keys() and any(k.endswith("/exp_avg_sq") for k in opt_a)
    for k in opt_a:
        assert torch.equal(opt_a[k], opt_b[k]), k
    # metrics.csv reads like one run: every step once, the same losses.
    ra, rb = read_metrics(ref), read_metrics(run)
    assert [r["step"] for r in rb] == [str(i) for i in range(1, steps + 1)]
    assert [r["loss"] for r in ra] == [r["loss"] for r in rb]
    assert [s for s, _ in list_checkpoints(run)] == [6, 8, 10]  # keep_checkpoints = 3


def test_checkpoint_layout_and_export(cache_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(base_config(cache_dir, run, max_steps=4, save_every=2, keep_checkpoints=1), log=quiet)
    assert (run / "last").read_text().strip() == "checkpoints/step_0000004"
    ckpt = last_checkpoint(run)
    assert sorted(p.name for p in ckpt.iterdir()) == ["model.safetensors", "optimizer.safetensors", "trainer_state.json"]
    assert [s for s, _ in list_checkpoints(run)] == [4]
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".tmp")]
    model = load_model(run / "model.safetensors")  # what `log3d remesh --mode vae --checkpoint` loads
    assert model.config.name == "tiny"
    # A finished run is not silently restarted; --resume past the end does nothing.
    with pytest.raises(ValueError, match="--resume"):
        train(base_config(cache_dir, run, max_steps=4), log=quiet)
    assert train(base_config(cache_dir, run, max_steps=4, resume=True), log=quiet)["step"] == 4


def test_init_fine_tunes_and_refuses_other_architectures(cache_dir: Path, tmp_path: Path) -> None:
    tiny = tmp_path / "tiny.safetensors"
    save_model(LogVAE(preset("tiny")), tiny)
    run = tmp_path / "ft"
    train(base_config(cache_dir, run, max_steps=1, init=str(tiny), lr=1e-12, grad_clip=0.0), log=quiet)
    a, b = load_file(tiny), load_file(run / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)  # started from those weights
    with pytest.raises(ConfigMismatchError, match="dim"):
        train(base_config(cache_dir, tmp_path / "bad", preset="small", init=str(tiny)), log=quiet)


# ----------------------------------------------------------------------------------------------
# Damaged data
# ----------------------------------------------------------------------------------------------


def test_corrupt_shard_is_reported_and_skipped(cache_dir: Path, tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "cache"
    shutil.copytree(cache_dir, broken)
    victim = Cache.open(broken).entries[0]
    data = (broken / victim.shard).read_bytes()
    (broken / victim.shard).write_bytes(data[: len(data) // 3])
    messages: list[str] = []
    run = tmp_path / "run"
    summary = train(base_config(broken, run, max_steps=6), log=messages.append)
    assert summary["step"] == 6 and summary["skipped_shards"] == 1
    warned = [m for m in messages if m.startswith("warning: skipping damaged shard")]
    assert len(warned) == 1 and victim.name in warned[0] and "1 skipped" in warned[0]
    rows = read_metrics(run)
    assert len(rows) == 6 and victim.id not in {r["shape"] for r in rows}
    assert rows[-1]["skipped_shards"] == "1"


# ----------------------------------------------------------------------------------------------
# Validation through the reconstruction path
# ----------------------------------------------------------------------------------------------


class _PerfectVAE:
    """Returns the encoded blocks unchanged: the metrics must then say 'perfect'."""

    def __init__(self, blocks: np.ndarray, coords: np.ndarray) -> None:
        self._blocks = torch.from_numpy(blocks)
        self.device = torch.device("cpu")

    def __call__(self, blocks, coords, sample=None):
        return blocks.clone(), None, None

    def encode(self, blocks, coords, ctx=None):
        idx = torch.arange(blocks.shape[0], dtype=torch.float32)[:, None]
        return idx, idx

    def decode(self, latents, coords, ctx=None):
        return self._blocks[latents[:, 0].long()]


def test_validation_scores_the_reconstructed_surface(cache_dir: Path) -> None:
    cache = Cache.open(cache_dir)
    entry = cache.entries[0]
    ub = cache.ublocks(entry)
    cfg = TrainConfig(data=str(cache_dir), run_dir="unused", val_samples=3000, val_sampling="uniform")
    row = validate_shape(_PerfectVAE(ub.blocks, ub.coords), cache, entry, cfg, {})
    assert "error" not in row, row
    assert row["val_loss"] == 0.0 and row["CD"] < 1e-6 and row["F1@0.001"] > 0.99

    class _Flat(_PerfectVAE):  # decodes nothing but far field: an empty surface is a row, not a crash
        def decode(self, latents, coords, ctx=None):
            return torch.full((latents.shape[0], 12, 12, 12), FAR)

    row = validate_shape(_Flat(ub.blocks, ub.coords), cache, entry, cfg, {})
    assert "empty" in row["error"]


def test_validation_runs_in_training_on_held_out_shapes(cache_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(base_config(cache_dir, run, max_steps=2, save_every=2, val_every=2, val_shapes=1, val_samples=2000,
                                val_sampling="uniform"),
          log=quiet)
    with open(run / "val.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["step"] == "2"
    held = rows[0]["shape"]
    assert held not in {r["shape"] for r in read_metrics(run)}
    assert float(rows[0]["val_loss"]) > 0
    assert rows[0]["CD"] or rows[0]["error"]  # an untrained net may decode no surface yet


# ----------------------------------------------------------------------------------------------
# Pure pieces
# ----------------------------------------------------------------------------------------------


def test_schedule_visits_every_shape_once_per_epoch() -> None:
    sched = ShapeSchedule(7, seed=3, world=2)
    epoch0 = [sched.index(step, rank) for step in range(4) for rank in range(2)][:7]
    assert sorted(epoch0) == list(range(7))
    assert ShapeSchedule(7, seed=3, world=2).index(11, 1) == sched.index(11, 1)
    assert sched.index(0, 0, attempt=1) == sched.index(0, 1)  # a fallback takes the next slot


def test_window_is_a_contiguous_ball() -> None:
    g = np.stack(np.meshgrid(*[np.arange(10)] * 3, indexing="ij"), -1).reshape(-1, 3)
    coords = g[np.abs(np.linalg.norm(g - 4.5, axis=1) - 4) < 0.9].astype(np.int32)
    rng = np.random.default_rng(0)
    idx = select_window(coords, 50, rng)
    assert idx.shape == (50,) and np.all(np.diff(idx) > 0)
    chosen = coords[idx].astype(float)
    rest = np.delete(coords, idx, axis=0).astype(float)
    # Some centre has every chosen block at least as close as every other block.
    d_in = np.linalg.norm(chosen[:, None] - chosen[None], axis=2).max(axis=1)
    centre = chosen[np.argmin(d_in)]
    radius = np.linalg.norm(chosen - centre, axis=1).max()
    assert radius < 0.75 * np.linalg.norm(coords - coords.mean(0), axis=1).max() * 2
    assert np.array_equal(select_window(coords, 10_000, rng), np.arange(coords.shape[0]))
    assert rest.shape[0] == coords.shape[0] - 50


def test_holdout_keeps_all_copies_of_a_source_out() -> None:
    def e(name: str, i: str, aug: dict | None = None) -> CacheEntry:
        return CacheEntry(id=i, name=name, source=name, resolution=64, num_blocks=1, shard="x", sha256="",
                          bytes=0, augment=aug or {})

    entries = [e("a", "a@64"), e("a", "a@64#1", {"scale": 0.5}), e("b", "b@64"), e("c", "c@64"), e("c", "c@128")]
    train_e, val_e = split_holdout(entries, 1)
    assert len(val_e) == 1 and not val_e[0].augment
    assert val_e[0].name not in {x.name for x in train_e} and len(train_e) + sum(
        x.name == val_e[0].name for x in entries) == len(entries)
    assert split_holdout(entries[:1], 1) == (entries[:1], [])  # never hold out the only shape


def test_cli_run_dir_alias_and_defaults() -> None:
    args = build_parser().parse_args(["train", "--data", "c", "--run-dir", "r", "--max-steps", "5"])
    cfg = config_from_args(args)
    assert cfg.run_dir == "r" and cfg.max_steps == 5 and cfg.preset == "small"
    assert (cfg.weight_decay, cfg.huber_delta, cfg.kl_weight) == (0.01, 0.2, 1e-6)
    # Unset recipe fields come from the preset: the paper's recipe for `paper`, CPU recipes otherwise.
    paper = config_from_args(build_parser().parse_args(["train", "--data", "c", "--out", "r", "--preset", "paper"]))
    assert paper.resolved().lr == 5e-5 and paper.resolved().lr_schedule == "constant"
    assert paper.resolved().surface_weight == 0.0 and paper.resolved().warmup_steps == 0
    assert cfg.resolved().lr == RECIPES["small"]["lr"] and cfg.resolved().lr_schedule == "cosine"
    # small: the surface objective that trained the shipped weights (issue 28); paper: its Huber
    small = cfg.resolved()
    assert (small.objective, small.surface_delta, small.surface_band, small.slope_weight) == ("surface", 0.01, 0.75, 0.5)
    assert (paper.resolved().objective, paper.resolved().surface_delta, paper.resolved().slope_weight) == ("huber", 0.02, 0.0)
    huber = config_from_args(build_parser().parse_args(["train", "--data", "c", "--out", "r", "--objective", "huber",
                                                        "--surface-delta", "0.05"])).resolved()
    assert (huber.objective, huber.surface_delta, huber.slope_weight) == ("huber", 0.05, 0.5)
    explicit = config_from_args(build_parser().parse_args(["train", "--data", "c", "--out", "r", "--lr", "1e-3",
                                                           "--surface-weight", "0"]))
    assert explicit.resolved().lr == 1e-3 and explicit.resolved().surface_weight == 0.0
    assert config_from_args(build_parser().parse_args(["train", "--data", "c", "--out", "r"])).run_dir == "r"


def test_sigterm_writes_a_checkpoint_and_exits_cleanly(cache_dir: Path, tmp_path: Path) -> None:
    """`train.stop` on the server sends SIGTERM: the step in progress finishes, a checkpoint is
    written at that step (not only at the next --save-every) and the exit code is 0."""
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = _train_cmd(cache_dir, run, 10_000)
    cmd[cmd.index("--save-every") + 1] = "1000"
    child = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    try:
        while child.poll() is None and time.monotonic() < deadline:
            if (run / "metrics.csv").is_file() and len(read_metrics(run)) >= 2:
                break
            time.sleep(0.05)
        child.send_signal(signal.SIGTERM)
        out, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, err[-2000:]
    steps = len(read_metrics(run))
    assert 2 <= steps < 10_000
    assert [s for s, _ in list_checkpoints(run)] == [steps]
    assert '"stopped": true' in out


def test_ship_writes_half_precision_weights_that_load(tmp_path):
    import torch

    from backend.train import ship_weights
    from model.checkpoint import read_metadata
    from model.vae import LogVAE, load_model, preset, save_model

    torch.manual_seed(0)
    run = tmp_path / "run"
    run.mkdir()
    net = LogVAE(preset("tiny")).eval()
    save_model(net, run / "model.safetensors")
    info = ship_weights(run, tmp_path / "weights" / "log3d-vae.safetensors")
    shipped = tmp_path / "weights" / "log3d-vae.safetensors"
    assert read_metadata(shipped)["dtype"] == "float16" and info["preset"] == "tiny"
    assert shipped.stat().st_size < 0.6 * (run / "model.safetensors").stat().st_size
    loaded = load_model(shipped)
    for (name, a), (_, b) in zip(net.state_dict().items(), loaded.state_dict().items()):
        if a.is_floating_point():
            assert torch.allclose(a, b, rtol=1e-3, atol=1e-4), name
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        ship_weights(tmp_path / "nothing", tmp_path / "x.safetensors")


# ----------------------------------------------------------------------------------------------
# Objective, optimiser state, CPU precision
# ----------------------------------------------------------------------------------------------


def test_surface_weighting_favours_the_iso_level() -> None:
    """With the weighting on, the same error costs more at the zero set than at the truncation
    value; with it off, the loss is the paper's plain mean Huber."""
    target = torch.tensor([0.0, 0.25, 0.5, 1.0])
    w = voxel_weights(target, 4.0, 0.5)
    assert torch.allclose(w, torch.tensor([5.0, 3.0, 1.0, 1.0]))
    assert voxel_weights(target, 0.0, 0.5) is None

    target = torch.tensor([[0.1, 1.0]])
    near = target + torch.tensor([[0.05, 0.0]])  # error at the surface
    far = target - torch.tensor([[0.0, 0.05]])   # the same error at the truncation value
    z = torch.zeros(1, 16)
    plain_near = vae_loss(near, target, z, z, 0.2, 0.0)[1]
    plain_far = vae_loss(far, target, z, z, 0.2, 0.0)[1]
    assert torch.isclose(plain_near, plain_far)
    assert torch.isclose(plain_near, torch.nn.functional.huber_loss(near, target, delta=0.2))
    assert vae_loss(near, target, z, z, 0.2, 0.0, 4.0)[1] > 3 * vae_loss(far, target, z, z, 0.2, 0.0, 4.0)[1]


def test_optimizer_state_round_trips_without_pickle(tmp_path: Path) -> None:
    from backend.train import load_optimizer_state, save_optimizer_state

    net = LogVAE(preset("tiny"))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.01)
    x = torch.rand(4, 12, 12, 12)
    coords = torch.tensor([[0, 0, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0]])
    for _ in range(2):
        net(x, coords)[0].mean().backward()
        opt.step()
        opt.zero_grad()
    save_optimizer_state(opt, tmp_path / "opt.safetensors")
    assert b"exp_avg" in (tmp_path / "opt.safetensors").read_bytes()[:200_000]
    fresh = torch.optim.AdamW(net.parameters(), lr=5.0)
    load_optimizer_state(fresh, tmp_path / "opt.safetensors", "cpu")
    a, b = opt.state_dict(), fresh.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for i, st in a["state"].items():
        for k, v in st.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(b["state"][i][k])), (i, k)


def test_a_pickled_optimizer_checkpoint_is_refused(cache_dir: Path, tmp_path: Path) -> None:
    """A run folder someone else could write to must not get code executed by --resume."""
    run = tmp_path / "run"
    train(base_config(cache_dir, run, max_steps=2, save_every=2), log=quiet)
    ckpt = last_checkpoint(run)
    (ckpt / "optimizer.safetensors").unlink()
    torch.save({"state": {}, "param_groups": []}, ckpt / "optimizer.pt")
    with pytest.raises(ValueError, match="optimizer.safetensors"):
        train(base_config(cache_dir, run, max_steps=4, resume=True), log=quiet)


def test_cpu_precision_is_measured_not_assumed() -> None:
    from model.cpu import bf16_works_on_cpu, choose_cpu_precision, cpu_features

    assert cpu_features()["cores"] >= 1 and "avx512_bf16" in cpu_features()["flags"]
    slow_bf16 = {"no": 0.01, "bf16": 0.05}
    assert choose_cpu_precision(lambda p: time.sleep(slow_bf16[p]), repeats=1)[0] == "no"
    if bf16_works_on_cpu():
        fast_bf16 = {"no": 0.05, "bf16": 0.01}
        choice, timings = choose_cpu_precision(lambda p: time.sleep(fast_bf16[p]), repeats=1)
        assert choice == "bf16" and timings["bf16"] < timings["no"]


# ----------------------------------------------------------------------------------------------
# Training never goes on broken; the same command gives the same curve
# ----------------------------------------------------------------------------------------------

POISON_AFTER_STEP = "LOG3D_TEST_POISON_AFTER"
POISON_KIND = "LOG3D_TEST_POISON_KIND"


class _PoisonGradient(torch.autograd.Function):
    """Identity forward; the backward hands back NaN: a finite loss with a non-finite gradient (what
    issue 28 saw at step 13 of a `tiny` run)."""

    @staticmethod
    def forward(ctx, x):  # noqa: D401
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, float("nan"))


def poisoned_loss(after: int, kind: str):
    """A ``vae_loss`` that is honest for the first ``after`` calls, then poisons the gradient
    (kind "gradient") or the loss itself (kind "loss")."""
    import backend.train as bt

    honest = bt.vae_loss
    calls = [0]

    def loss(recon, *args, **kwargs):
        calls[0] += 1
        if calls[0] > after:
            if kind == "gradient":
                recon = _PoisonGradient.apply(recon)
            else:
                recon = recon * float("nan")
        return honest(recon, *args, **kwargs)

    return loss


@pytest.mark.parametrize("kind", ["gradient", "loss"])
def test_a_non_finite_step_never_reaches_the_weights_and_the_run_stops(cache_dir, tmp_path, monkeypatch, kind):
    import backend.train as bt
    from backend.train import TrainingDiverged

    monkeypatch.setattr(bt, "vae_loss", poisoned_loss(4, kind))
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"3 steps in a row had a non-finite") as info:
        train(base_config(cache_dir, run, max_steps=20, save_every=1, max_skipped_steps=3), log=quiet)
    assert "@64" in str(info.value)  # the shapes are named
    rows = read_metrics(run)
    assert [r["skipped_step"] for r in rows] == ["", "", "", "", kind, kind, kind]  # the third skip stopped it
    # no checkpoint after the last good step, and every checkpoint finite
    assert [s for s, _ in list_checkpoints(run)][-1] == 4 + 2  # steps 5 and 6 changed nothing, so were saved
    for _, ckpt in list_checkpoints(run):
        state = load_file(str(ckpt / "model.safetensors"))
        assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point()), ckpt
    good = load_file(str(run / "checkpoints" / "step_0000004" / "model.safetensors"))
    last = load_file(str(list_checkpoints(run)[-1][1] / "model.safetensors"))
    assert all(torch.equal(good[k], last[k]) for k in good)  # the skipped steps left the weights alone


def test_the_cli_exits_non_zero_when_steps_keep_failing(cache_dir, tmp_path):
    run = tmp_path / "run"
    code = (
        "import sys, backend.train as bt\n"
        "from tests.test_train import poisoned_loss\n"
        "bt.vae_loss = poisoned_loss(2, 'gradient')\n"
        "from backend.cli import main\n"
        f"sys.exit(main({_train_cmd(cache_dir, run, 30, '--max-skipped-steps', '4')[3:]!r}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 3, done.stderr[-2000:]
    assert "4 steps in a row had a non-finite gradient" in done.stderr, done.stderr[-2000:]
    assert len(read_metrics(run)) == 6


def test_non_finite_weights_are_never_resumed_or_shipped(cache_dir, tmp_path):
    from backend.train import TrainingDiverged, ship_weights

    run = tmp_path / "run"
    train(base_config(cache_dir, run, max_steps=2, save_every=2), log=quiet)
    ckpt = last_checkpoint(run) / "model.safetensors"
    net = load_model(ckpt)
    with torch.no_grad():
        next(net.parameters())[0].fill_(float("nan"))
    save_model(net, ckpt)
    with pytest.raises(TrainingDiverged, match="non-finite"):
        train(base_config(cache_dir, run, max_steps=4, resume=True), log=quiet)
    save_model(net, run / "model.safetensors")
    with pytest.raises(TrainingDiverged, match="non-finite"):
        ship_weights(run, tmp_path / "shipped.safetensors")
    assert not (tmp_path / "shipped.safetensors").exists()


def test_the_same_command_gives_the_same_curve(cache_dir, tmp_path):
    """Same seed, same machine, the CPU precision left to the trainer: identical losses and gradient
    norms, step by step (the precision comes from the CPU's flags, not from a timing)."""
    from accelerate.state import AcceleratorState

    curves = []
    for k in range(2):
        run = tmp_path / f"run{k}"
        # Accelerate keeps one precision per process; a `log3d train` process runs once, this test twice
        AcceleratorState._reset_state(True)
        train(base_config(cache_dir, run, max_steps=8, save_every=8, mixed_precision=None), log=quiet)
        curves.append([(r["loss"], r["grad_norm"]) for r in read_metrics(run)])
    AcceleratorState._reset_state(True)
    assert curves[0] == curves[1]


def test_partial_init_loads_what_carries_over(cache_dir, tmp_path):
    """A new decoder design warm-starts from weights of the old one: everything but the local
    decoder is loaded, the local decoder starts fresh."""
    old = LogVAE(preset("tiny"))
    save_model(old, tmp_path / "old.safetensors")
    run = tmp_path / "run"
    logs: list[str] = []
    train(base_config(cache_dir, run, max_steps=1, save_every=1, lr=1e-12, init=str(tmp_path / "old.safetensors"),
                      init_partial=True, arch_overrides={"dec_stem": 4, "dec_upsample": "shuffle",
                                                         "dec_channels": (16, 8, 4), "dec_scales": (1, 2, 2)}),
          log=logs.append)
    new = load_model(run / "model.safetensors")
    assert new.config.dec_stem == 4 and new.config.dec_upsample == "shuffle"
    assert torch.allclose(new.enc_local.stem.weight, old.enc_local.stem.weight, atol=1e-6)
    assert any("fresh: dec_local" in line for line in logs), logs


def test_surface_objective_is_l1_like_and_sees_the_slope():
    from model.objective import band_error, slope_error

    target = torch.linspace(0.0, 1.0, 12).reshape(1, 12, 1, 1).expand(2, 12, 12, 12).contiguous()
    z = torch.zeros(2, 16)
    shifted = target + 0.05  # right slope, wrong level
    flat = torch.full_like(target, float(target.mean()))  # wrong slope
    assert float(slope_error(target, target, None)) == 0.0
    assert float(slope_error(shifted, target, None)) < 1e-6 < float(slope_error(flat, target, None))
    # L1 above the small quadratic zone: an error of 0.05 costs ~0.05, not Huber's 0.05²/2
    term = vae_loss(shifted, target, z, z, 0.2, 0.0, 0.0, 0.5, objective="surface", surface_delta=0.01)[1]
    assert float(term) == pytest.approx(0.045, abs=1e-4)
    paper = vae_loss(shifted, target, z, z, 0.2, 0.0)[1]
    assert float(paper) == pytest.approx(0.05**2 / 2, rel=1e-3)
    assert band_error(shifted, target) == pytest.approx(0.05, abs=1e-6)


def test_decision_term_counts_the_rare_side_of_epsilon_as_much_as_the_common_one():
    """The ε-decision hinge: zero for the truth, and a thin shell's few under-ε voxels decoded above
    ε cost as much as the same error on every over-ε voxel would (per-class means)."""
    from model.objective import decision_error

    target = torch.ones(1, 12, 12, 12)
    target[0, 5, :, :] = 0.1  # a one-voxel sheet: 144 of 1728 voxels under ε = 0.25
    assert float(decision_error(target, target)) == 0.0
    lifted = target.clone()
    lifted[0, 5, :, :] = 0.35  # the sheet lost: every under-ε voxel 0.1 above ε, needs a 0.05 margin
    assert float(decision_error(lifted, target)) == pytest.approx(0.15, abs=1e-5)
    sunk = target - 0.1  # far voxels 0.9: still on their side, no cost
    assert float(decision_error(sunk, target)) == 0.0
    z = torch.zeros(1, 16)
    plain = vae_loss(lifted, target, z, z, 0.2, 0.0, 4.0, 0.75, objective="surface", surface_delta=0.01)[1]
    with_decision = vae_loss(lifted, target, z, z, 0.2, 0.0, 4.0, 0.75, objective="surface", surface_delta=0.01,
                             decision_weight=2.0)[1]
    assert float(with_decision - plain) == pytest.approx(0.30, abs=1e-4)
    with pytest.raises(ValueError, match="decision-weight"):
        TrainConfig(data="x", run_dir="y", decision_weight=-1.0).validate()
