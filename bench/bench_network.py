"""LoG-VAE speed and memory: encode + decode per 1,000 UBlocks for each preset.

Coordinates are a realistic surface: the L blocks nearest a sphere of radius 0.4·s on the s³ block
grid (a closed shell, one to a few blocks thick), in linear-key order as the UBlock code emits them.
Block contents are random; they do not change the cost.

CPU: each preset runs in a fresh subprocess so that the peak resident memory (ru_maxrss) minus the
resident memory just before the forward is the forward's own peak. CUDA (when available): the same
per-preset table in fp32, then the ``paper`` preset at L = 75,000 (a 1024³ shape) under bf16 and
fp16 autocast with ``torch.cuda.max_memory_allocated``.

    python bench/bench_network.py                   # CPU table (+ CUDA if present)
    python bench/bench_network.py --presets tiny --blocks 500

Writes bench/results/network_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from model.sparse import SparseContext, attention_backend  # noqa: E402
from model.vae import LogVAE, count_parameters, preset  # noqa: E402


def shell_coords(n: int, s: int) -> torch.Tensor:
    """The n blocks nearest the sphere of radius 0.4·s centred in the s³ grid, sorted by key."""
    g = torch.stack(torch.meshgrid(*[torch.arange(s)] * 3, indexing="ij"), -1).reshape(-1, 3)
    d = ((g.float() + 0.5 - s / 2).norm(dim=1) - 0.4 * s).abs()
    if n > g.shape[0]:
        raise ValueError(f"{n} blocks do not fit a {s}³ grid")
    idx = torch.topk(d, n, largest=False).indices
    c = g[idx]
    key = (c[:, 0] * s + c[:, 1]) * s + c[:, 2]
    return c[torch.argsort(key)]


def grid_for(n: int) -> int:
    """A grid edge on which an n-block shell is about one block thick (area 4π(0.4s)² ≈ 2s²)."""
    return max(8, 8 * math.ceil(math.sqrt(n / 2.0) / 8))


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: fall back to the lifetime peak (less precise)
        return _peak_rss_bytes()


def _peak_rss_bytes() -> int:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb if sys.platform == "darwin" else kb * 1024


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    name: str, n: int, device_str: str, dtype: str | None, threads: int | None, s: int | None = None, repeats: int = 1
) -> dict[str, Any]:
    """Encode + decode n shell blocks with preset ``name``; timings (best and median of ``repeats``
    runs: the machine may be shared, and the minimum is the least disturbed) and peak memory."""
    if threads:
        torch.set_num_threads(threads)
    device = torch.device(device_str)
    torch.manual_seed(0)
    model = LogVAE(preset(name)).to(device).eval()
    s = s or grid_for(n)
    coords = shell_coords(n, s).to(device)
    blocks = torch.rand(n, 12, 12, 12, device=device)
    amp = getattr(torch, dtype) if dtype else None

    def run(b: torch.Tensor, c: torch.Tensor) -> tuple[float, float]:
        with torch.inference_mode(), torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            _sync(device)
            t0 = time.perf_counter()
            ctx = model.context(c)
            mean, _ = model.encode(b, c, ctx)
            _sync(device)
            t1 = time.perf_counter()
            model.decode(mean, c, ctx)
            _sync(device)
            return t1 - t0, time.perf_counter() - t1

    warm = min(n, 64)
    run(blocks[:warm], coords[:warm])  # oneDNN / cuDNN set-up, kernel selection
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = _rss_bytes()
    times = [run(blocks, coords) for _ in range(max(1, repeats))]
    t_enc, t_dec = min(times, key=sum)
    median = sorted(sum(t) for t in times)[len(times) // 2]
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        peak = _peak_rss_bytes() - base
    part = SparseContext(coords.cpu()).windows(8, 0)
    total = t_enc + t_dec
    return {
        "preset": name,
        "blocks": n,
        "grid": s,
        "resolution": 8 * s,
        "windows": part.num_windows,
        "mean_window_population": round(n / part.num_windows, 1),
        "max_window_population": part.max_population,
        "dtype": dtype or "float32",
        "parameters": count_parameters(model),
        "encode_s": round(t_enc, 3),
        "decode_s": round(t_dec, 3),
        "total_s": round(total, 3),
        "per_1000_blocks_s": round(total * 1000 / n, 3),
        "repeats": len(times),
        "median_total_s": round(median, 3),
        "median_per_1000_blocks_s": round(median * 1000 / n, 3),
        "peak_mem_mb": round(peak / 2**20, 1),
        "peak_mem_per_1000_blocks_mb": round(peak / 2**20 * 1000 / n, 1),
        "peak_mem_kind": "cuda max_memory_allocated above baseline" if device.type == "cuda" else "peak RSS above pre-forward RSS",
        "threads": torch.get_num_threads(),
        "attention_backend": attention_backend(device, amp or torch.float32, model.config.dim // model.config.heads),
    }


def _child(args: tuple) -> dict[str, Any]:
    return measure(*args)


def in_subprocess(*args: Any) -> dict[str, Any]:
    """Fresh interpreter per measurement: a clean ru_maxrss and no allocator history."""
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_child, (args,))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def print_table(rows: list[dict[str, Any]]) -> None:
    cols = ["device", "preset", "dtype", "blocks", "resolution", "parameters", "encode_s", "decode_s", "per_1000_blocks_s",
            "median_per_1000_blocks_s", "peak_mem_mb", "peak_mem_per_1000_blocks_mb"]
    head = ["device", "preset", "dtype", "L", "N", "params", "enc s", "dec s", "s/1k blk", "median", "peak MB", "MB/1k blk"]
    table = [head] + [[str(r[c]) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for i, row in enumerate(table):
        print("  ".join(v.rjust(w) for v, w in zip(row, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="tiny,small,paper")
    ap.add_argument("--blocks", type=int, default=1000, help="L for the per-preset table")
    ap.add_argument("--paper-blocks", type=int, default=None, help="L for the paper preset on CPU (default --blocks)")
    ap.add_argument("--cuda-blocks", type=int, default=75000, help="L for the paper preset under autocast on CUDA")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (best and median reported)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads on CPU (default: torch's)")
    ap.add_argument("--no-cuda", action="store_true")
    ap.add_argument("--out-dir", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args(argv)

    names = [p for p in args.presets.split(",") if p]
    use_cuda = torch.cuda.is_available() and not args.no_cuda
    device = "cuda" if use_cuda else "cpu"
    report: dict[str, Any] = {
        "device": device,
        "device_name": torch.cuda.get_device_name(0) if use_cuda else cpu_name(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "loadavg_before": list(os.getloadavg()),
        "coords": "L blocks nearest a sphere of radius 0.4 s on the s^3 block grid",
        "results": [],
    }
    rows = report["results"]
    for name in names:
        n = args.paper_blocks if (name == "paper" and args.paper_blocks) else args.blocks
        print(f"cpu: {name}, L={n} ...", flush=True)
        r = in_subprocess(name, n, "cpu", None, args.threads, None, args.repeats)
        r["device"] = "cpu"
        rows.append(r)
    if use_cuda:
        for name in names:
            print(f"cuda: {name}, L={args.blocks} ...", flush=True)
            r = measure(name, args.blocks, "cuda", None, None, None, args.repeats)
            r["device"] = "cuda"
            rows.append(r)
        for dt in ("bfloat16", "float16"):
            print(f"cuda: paper, L={args.cuda_blocks}, {dt} autocast ...", flush=True)
            r = measure("paper", args.cuda_blocks, "cuda", dt, None, 128, args.repeats)
            r["device"] = "cuda"
            rows.append(r)
    report["loadavg_after"] = list(os.getloadavg())
    print_table(rows)
    out = Path(args.out_dir) / f"network_{device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
