"""The equal-compute A/B of LoG-VAE designs (issue 28): today's local decoder and loss against each
candidate, same data, same seed, same starting point, the same CPU minutes, scored on held-out
shapes.

    .venv/bin/python bench/decoder_ab.py --data CACHE --out RUNS [--cpu-minutes 30] [--candidates A B ...]

Protocol (docs/training.md, "The decoder A/B"):

* **Start.** Every candidate starts from the shipped weights (``--init``) for everything that
  carries over — the local encoder, both transformers, the latent projections — and from a fresh,
  identically seeded local decoder (``--init-partial --init-fresh dec_local``), today's design
  included, so that only the decoder and the loss differ. The reference row ``shipped+`` continues
  the shipped weights whole (its decoder already had six hours), with today's loss.
* **Compute.** ``log3d train --threads 1 --max-cpu-minutes M``: each run stops when its training
  steps have used M minutes of CPU time in its own process (not wall time: the machine is shared).
  Two runs at a time, one core each. Constant learning rate after a 20-step warm-up (a cosine
  schedule needs a known number of steps), 512 blocks per step, seed 3, the CPU precision the
  trainer picks for this machine (the same for all).
* **Score.** The held-out shapes of the trainer's split (``--val-shapes`` source shapes, every
  resolution ≤ 256 of their original copy), each encoded, decoded, Pad-Averaged and extracted
  (the ε-surface, no clean-up) and compared with the ε-surface of its own blocks: CD and F1@0.01
  (20,000 uniform samples), and the mean absolute error over the iso band (true value < 0.5, two
  voxels: ``model.objective.band_error``), in normalised units.

Prints the table; writes OUT/ab.json and bench/results/decoder_ab.md (``--table`` names another).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RESULTS = REPO / "bench" / "results"
LOG3D = [sys.executable, "-m", "backend.cli"]

GRID = ["--arch", "dec_stem=4", "--arch", "dec_upsample=nearest", "--arch", "dec_channels=64,24,8",
        "--arch", "dec_scales=1,2,2"]
SURFACE = ["--objective", "surface", "--surface-weight", "4", "--surface-band", "0.75", "--slope-weight", "0.5",
           "--surface-delta", "0.01"]
# "today" is the design the A/B started from (the `small` preset before issue 28): named in full,
# since the preset's defaults are now the winner's (GRID + SURFACE).
TOKEN = ["--arch", "dec_stem=1", "--arch", "dec_upsample=nearest", "--arch", "dec_channels=128,64,32,16,8",
         "--arch", "dec_scales=1,2,2,2,2"]
HUBER = ["--objective", "huber", "--surface-weight", "4", "--surface-band", "0.5", "--slope-weight", "0",
         "--surface-delta", "0.02"]
CANDIDATES: dict[str, dict] = {
    "today": {"args": TOKEN + HUBER,
              "what": "1³ token, nearest upsampling; Huber δ 0.2 weighted ×4 at the iso level (the previous recipe)"},
    "loss": {"args": TOKEN + SURFACE, "what": "today's decoder; surface loss (smooth L1 β 0.01 over the band, ×4, + 0.5 slope)"},
    "grid": {"args": GRID + HUBER, "what": "token → learned 4³ grid, nearest upsampling (64, 24, 8 channels); today's loss"},
    "grid+loss": {"args": GRID + SURFACE, "what": "the grid decoder and the surface loss (the `small` preset's defaults now)"},
    "grid+loss+abs": {"args": GRID + ["--arch", "dec_output=abs"] + SURFACE,
                      "what": "grid+loss with a signed head: the decoder draws a signed field, the output is its absolute value"},
    "grid+loss+abs+decision": {"args": GRID + ["--arch", "dec_output=abs"] + SURFACE + ["--decision-weight", "1"],
                               "what": "grid+loss+abs plus the ε-decision hinge (wrong side of ε, averaged per side, ×1)"},
    "shipped+": {"args": GRID + SURFACE, "warm": True,
                 "what": "the shipped weights (grid+loss) continued whole with their own recipe (reference)"},
}


def train_command(name: str, data: str, out: Path, init: str, minutes: float, seed: int, val_shapes: int) -> list[str]:
    spec = CANDIDATES[name]
    cmd = LOG3D + ["train", "--data", data, "--out", str(out / name), "--preset", "small", "--init", init,
                   "--val-shapes", str(val_shapes),
                   "--threads", "1", "--max-cpu-minutes", str(minutes), "--max-steps", "100000",
                   "--lr-schedule", "constant", "--warmup-steps", "20", "--val-every", "0", "--save-every", "50",
                   "--seed", str(seed), "--device", "cpu"]
    if not spec.get("warm"):
        cmd += ["--init-partial", "--init-fresh", "dec_local"]
    return cmd + spec["args"]


def run_pairs(names: list[str], data: str, out: Path, init: str, minutes: float, seed: int, val_shapes: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    for i in range(0, len(names), 2):
        procs = []
        for name in names[i:i + 2]:
            if (out / name / "model.safetensors").is_file() and (out / name / "done").is_file():
                print(f"{name}: already trained", flush=True)
                continue
            (out / name).mkdir(parents=True, exist_ok=True)
            log = open(out / f"{name}.log", "w")
            cmd = train_command(name, data, out, init, minutes, seed, val_shapes)
            print(f"{name}: {' '.join(cmd)}", flush=True)
            procs.append((name, subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT), log))
        for name, proc, log in procs:
            code = proc.wait()
            log.close()
            if code != 0:
                raise RuntimeError(f"{name} failed with exit code {code}: see {out / (name + '.log')}")
            (out / name / "done").write_text(time.strftime("%Y-%m-%d %H:%M:%S"))


def held_out_entries(data: str, val_shapes: int):
    from backend.dataset import Cache
    from backend.train import split_holdout

    cache = Cache.open(data)
    _, val = split_holdout(cache.entries, val_shapes)
    groups = {e.group for e in val}
    chosen = [e for e in cache.entries if e.group in groups and not e.augment and e.resolution <= 256]
    return cache, sorted(chosen, key=lambda e: (e.resolution, e.id))


def score(weights: Path, data: str, val_shapes: int) -> dict:
    import torch

    from backend.train import TrainConfig, validate_shape
    from model.vae import load_model

    torch.set_num_threads(2)
    model = load_model(weights)
    cache, entries = held_out_entries(data, val_shapes)
    cfg = TrainConfig(data=data, run_dir="-", val_samples=20_000, val_sampling="uniform")
    rows = []
    with torch.no_grad():
        for e in entries:
            rows.append(validate_shape(model, cache, e, cfg, {}))
    finite = lambda k: [r[k] for r in rows if k in r and not math.isnan(r[k])]  # noqa: E731
    return {"rows": rows, **{k: (sum(finite(k)) / len(finite(k)) if finite(k) else math.nan)
                             for k in ("CD", "F1@0.01", "band_error", "val_loss")}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cpu-minutes", type=float, default=30.0)
    parser.add_argument("--init", default=str(REPO / "model" / "weights" / "log3d-vae.safetensors"))
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    parser.add_argument("--val-shapes", type=int, default=6)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--score-only", action="store_true")
    parser.add_argument("--table", default="decoder_ab", help="name of the table under bench/results (default decoder_ab)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.score_only:
        run_pairs(args.candidates, args.data, args.out, args.init, args.cpu_minutes, args.seed, args.val_shapes)
    results = {"shipped (no extra training)": {"what": "the shipped weights as they are", **score(Path(args.init), args.data, args.val_shapes)}}
    for name in args.candidates:
        summary_lines = [line for line in (args.out / f"{name}.log").read_text().splitlines() if line.startswith("{")]
        summary = json.loads(summary_lines[-1]) if summary_lines else {}
        results[name] = {"what": CANDIDATES[name]["what"], "steps": summary.get("step"),
                         "cpu_seconds": summary.get("cpu_seconds"),
                         **score(args.out / name / "model.safetensors", args.data, args.val_shapes)}
        print(name, {k: results[name][k] for k in ("steps", "CD", "F1@0.01", "band_error")}, flush=True)
    base = results.get("today", {}).get("CD", math.nan)
    lines = ["# The decoder A/B at equal compute (bench/decoder_ab.py)\n",
             f"Data `{args.data}`; {args.cpu_minutes:g} CPU-minutes per run, one thread each, two runs side by side; "
             f"held-out shapes: {', '.join(r['shape'] for r in results['shipped (no extra training)']['rows'])}. "
             "CD in units of the cube, band error in normalised units (× 4 = voxels).\n",
             "| run | what | steps | CD | CD / today | F1@0.01 | band error |", "|---|---|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        ratio = r["CD"] / base if base and not math.isnan(base) else math.nan
        lines.append(f"| {name} | {r['what']} | {r.get('steps') or '—'} | {r['CD']:.5f} | {ratio:.2f} | "
                     f"{r['F1@0.01']:.4f} | {r['band_error']:.4f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    (args.out / "ab.json").write_text(json.dumps(results, indent=1, default=str))
    (RESULTS / f"{args.table}.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
