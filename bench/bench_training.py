"""Training throughput: UBlocks per second through one full training step (forward with the
reparameterised latent, Huber + KL loss, backward, gradient clipping, AdamW) for each preset.

The step is the one ``backend.train`` runs (same loss function, optimiser and clipping); block
coordinates are a closed sphere shell on the block grid (as in bench_network.py), contents are
random (they do not change the cost). One warm-up step, then ``--steps`` timed steps; best and
median are reported because the 2-core machine is shared.

CPU: every precision in ``--cpu-precisions`` (fp32, and bf16 autocast where the CPU runs it) ×
every thread count in ``--cpu-threads`` (default 1 and all cores), L = ``--blocks`` (256; ``paper``
at ``--paper-blocks``); the CPU's model and its bf16-relevant flags are recorded.
CUDA (when available): L = ``--cuda-blocks`` (4096, the trainer's GPU default for ``--max-blocks``)
in fp32, fp16 (autocast + GradScaler, what Accelerate's ``mixed_precision="fp16"`` does on one GPU)
and bf16 (autocast), with the peak allocated memory.

    python bench/bench_training.py
    python bench/bench_training.py --presets tiny,small --blocks 128 --steps 2

Writes bench/results/training_<device>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from model.objective import vae_loss  # noqa: E402
from bench.bench_network import cpu_name, grid_for, shell_coords  # noqa: E402
from model.vae import LogVAE, count_parameters, preset  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(name: str, blocks: int, device: torch.device, precision: str, steps: int) -> dict[str, Any]:
    """Time ``steps`` training steps of preset ``name`` on ``blocks`` shell blocks."""
    torch.manual_seed(0)
    model = LogVAE(preset(name)).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01)
    s = grid_for(blocks)
    coords = shell_coords(blocks, s).to(device)
    x = torch.rand(blocks, 12, 12, 12, device=device)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None

    def step() -> float:
        _sync(device)
        t0 = time.perf_counter()
        ctx = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        with ctx:
            recon, mean, logvar = model(x, coords, sample=True)
        loss, _, _ = vae_loss(recon, x, mean, logvar, 0.2, 1e-6)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        return time.perf_counter() - t0

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step()  # warm-up: allocator, oneDNN/cuDNN algorithm choice, varlen probe
    times = [step() for _ in range(steps)]
    best, median = min(times), statistics.median(times)
    row = {
        "preset": name, "device": device.type, "precision": precision, "blocks": blocks, "grid": s,
        "parameters": count_parameters(model), "steps": steps,
        "step_s_best": round(best, 4), "step_s_median": round(median, 4),
        "blocks_per_s_best": round(blocks / best, 1), "blocks_per_s_median": round(blocks / median, 1),
    }
    if device.type == "cuda":
        row["peak_allocated_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    del model, opt
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'preset':<7} {'device':<6} {'prec':<5} {'thr':>3} {'L':>6} {'step best':>10} {'median':>8} {'blocks/s':>9} {'(median)':>9} {'mem GB':>7}")
    for r in rows:
        mem = f"{r['peak_allocated_gb']:.2f}" if "peak_allocated_gb" in r else "-"
        print(f"{r['preset']:<7} {r['device']:<6} {r['precision']:<5} {r.get('threads', '-'):>3} {r['blocks']:>6} {r['step_s_best']:>9.3f}s "
              f"{r['step_s_median']:>7.3f}s {r['blocks_per_s_best']:>9.1f} {r['blocks_per_s_median']:>9.1f} {mem:>7}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="tiny,small,paper")
    ap.add_argument("--blocks", type=int, default=256, help="L per step on CPU")
    ap.add_argument("--paper-blocks", type=int, default=128, help="L per step for the paper preset on CPU")
    ap.add_argument("--cuda-blocks", type=int, default=4096, help="L per step on CUDA")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per measurement (after one warm-up)")
    ap.add_argument("--cpu-threads", default=None, help="comma-separated thread counts (default: 1 and all cores)")
    ap.add_argument("--cpu-precisions", default="fp32,bf16", help="comma-separated: fp32, bf16")
    ap.add_argument("--no-cuda", action="store_true")
    ap.add_argument("--out-dir", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args(argv)
    presets = [p for p in args.presets.split(",") if p]
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    load = list(os.getloadavg()) if hasattr(os, "getloadavg") else None

    from model.cpu import cpu_features

    cores = os.cpu_count() or 1
    threads = [int(t) for t in args.cpu_threads.split(",")] if args.cpu_threads else sorted({1, cores})
    precisions = [p for p in args.cpu_precisions.split(",") if p]
    results: dict[str, list[dict[str, Any]]] = {"cpu": []}
    for name in presets:
        L = args.paper_blocks if name == "paper" else args.blocks
        for n in threads:
            torch.set_num_threads(n)
            for precision in precisions:
                row = measure(name, L, torch.device("cpu"), precision, args.steps)
                row["threads"] = n
                results["cpu"].append(row)
                print_table(results["cpu"][-1:])
    if torch.cuda.is_available() and not args.no_cuda:
        results["cuda"] = []
        dev = torch.device("cuda")
        for name in presets:
            for precision in ("fp32", "fp16", "bf16"):
                if precision == "bf16" and not torch.cuda.is_bf16_supported():
                    continue
                results["cuda"].append(measure(name, args.cuda_blocks, dev, precision, args.steps))
                print_table(results["cuda"][-1:])

    for device, rows in results.items():
        if not rows:
            continue
        doc = {
            "device": device,
            "device_name": torch.cuda.get_device_name(0) if device == "cuda" else cpu_name(),
            "cpu_count": os.cpu_count(),
            "cpu_features": cpu_features() if device == "cpu" else None,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "loadavg_before": load,
            "step": "forward (sampled z) + Huber(0.2) + 1e-6 KL + backward + clip(1.0) + AdamW(5e-5, wd 0.01)",
            "coords": "L blocks nearest a sphere of radius 0.4 s on the s^3 block grid",
            "results": rows,
        }
        path = out_dir / f"training_{device}.json"
        path.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"\n{device}:")
        print_table(rows)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
