"""What a local decoder can draw: each design fits real UBlocks from free tokens (an auto-decoder:
one learnable ``dim``-vector per block, no encoder, no transformer), at the same CPU time, and the
error left over the iso band says how much of a block the design can express at all. A screen for
the equal-compute A/B (bench/decoder_ab.py), not a replacement for it: it measures capacity, not
how well a design trains through the whole VAE or generalises.

    .venv/bin/python bench/decoder_capacity.py --data CACHE [--blocks 2048] [--cpu-seconds 240]

Blocks: the first ``--blocks`` of a fixed random draw over the cache's shapes at N = 256 (or any
resolution when none is at 256). One torch thread per design; designs run one after another.
Prints a table; writes bench/results/decoder_capacity.json and .md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backend.dataset import Cache  # noqa: E402
from model.objective import band_error, vae_loss  # noqa: E402
from model.cpu import autocast_context, default_cpu_precision  # noqa: E402
from model.grid import iso_level  # noqa: E402
from model.vae import LocalDecoder, count_parameters, preset  # noqa: E402

RESULTS = REPO / "bench" / "results"

TOKEN = {"dec_stem": 1, "dec_channels": (128, 64, 32, 16, 8), "dec_scales": (1, 2, 2, 2, 2)}  # the 1³ start
GRID4 = {"dec_stem": 4, "dec_upsample": "nearest", "dec_channels": (64, 24, 8), "dec_scales": (1, 2, 2)}  # the small preset's
DESIGNS: dict[str, dict] = {
    "token (the previous small preset: 1³ token, nearest)": {**TOKEN, "dec_upsample": "nearest"},
    "token + shuffle": {**TOKEN, "dec_upsample": "shuffle"},
    "grid4 + shuffle 64,24,8": {"dec_stem": 4, "dec_upsample": "shuffle", "dec_channels": (64, 24, 8), "dec_scales": (1, 2, 2)},
    "grid4 + nearest 64,24,8": GRID4,
    "grid4 + shuffle 64,32,16": {"dec_stem": 4, "dec_upsample": "shuffle", "dec_channels": (64, 32, 16), "dec_scales": (1, 2, 2)},
    "grid4 + nearest 64,24,8, abs head": {**GRID4, "dec_output": "abs"},
    "grid8 + nearest 32,16": {"dec_stem": 8, "dec_upsample": "nearest", "dec_channels": (32, 16), "dec_scales": (1, 2)},
    "token, abs head": {**TOKEN, "dec_upsample": "nearest", "dec_output": "abs"},
}


def load_blocks(cache_dir: str, count: int, seed: int) -> torch.Tensor:
    cache = Cache.open(cache_dir)
    entries = [e for e in cache.entries if e.resolution == 256] or list(cache.entries)
    rng = np.random.default_rng(seed)
    picked = []
    for e in rng.permutation(len(entries))[: max(8, count // 200)]:
        blocks, _ = cache.read(entries[int(e)])
        picked.append(blocks[rng.permutation(len(blocks))[: count // 8]])
    blocks = np.concatenate(picked)[:count]
    return torch.from_numpy(blocks.astype(np.float32))


def fit(name: str, overrides: dict, blocks: torch.Tensor, cpu_seconds: float, precision: str, seed: int) -> dict:
    cfg = preset("small").replace(**overrides)
    torch.manual_seed(seed)
    decoder = LocalDecoder(cfg).to(memory_format=torch.channels_last_3d)
    tokens = torch.nn.Parameter(torch.randn(blocks.shape[0], cfg.dim))
    opt = torch.optim.Adam([{"params": decoder.parameters(), "lr": 1e-3}, {"params": [tokens], "lr": 1e-2}])
    rng = torch.Generator().manual_seed(seed)
    batch, steps, used = 128, 0, 0.0
    z = torch.zeros(1, 16)
    while used < cpu_seconds:
        c0 = time.process_time()
        idx = torch.randint(0, blocks.shape[0], (batch,), generator=rng)
        with autocast_context("cpu", precision):
            recon = decoder(torch.nn.functional.layer_norm(tokens[idx], (cfg.dim,)))
        loss = vae_loss(recon, blocks[idx], z, z, 0.2, 0.0, 4.0, 0.75, objective="surface", surface_delta=0.01,
                        slope_weight=0.5)[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
        used += time.process_time() - c0
    with torch.no_grad():
        out = torch.cat([decoder(torch.nn.functional.layer_norm(tokens[i:i + 256], (cfg.dim,)))
                         for i in range(0, blocks.shape[0], 256)])
    err = (out - blocks).abs()
    eps = iso_level()
    iso = (blocks - eps).abs() < 0.125
    inside_true, inside_out = blocks < eps, out < eps  # under ε: what the ε-surface encloses
    both = float((inside_true & inside_out).sum())
    return {"design": name, "overrides": {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()},
            "decoder_parameters": count_parameters(decoder), "steps": steps, "cpu_seconds": round(used, 1),
            "band_error": band_error(out, blocks), "iso_error": float(err[iso].mean()), "mean_error": float(err.mean()),
            "eps_recall": both / max(float(inside_true.sum()), 1.0), "eps_precision": both / max(float(inside_out.sum()), 1.0)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--blocks", type=int, default=2048)
    parser.add_argument("--cpu-seconds", type=float, default=240.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--designs", nargs="+", metavar="SUBSTRING",
                        help="run only the designs whose names contain one of these (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS / "decoder_capacity")
    args = parser.parse_args()
    torch.set_num_threads(1)
    precision, why = default_cpu_precision()
    blocks = load_blocks(args.data, args.blocks, args.seed)
    rows = []
    chosen = {n: o for n, o in DESIGNS.items() if not args.designs or any(d in n for d in args.designs)}
    for name, overrides in chosen.items():
        rows.append(fit(name, overrides, blocks, args.cpu_seconds, precision, args.seed))
        print(json.dumps(rows[-1]), flush=True)
    lines = ["# Local decoder capacity (bench/decoder_capacity.py)\n",
             f"{len(blocks)} real UBlocks from `{args.data}`, free 128-d tokens (an auto-decoder), the `small` preset's "
             f"width, {args.cpu_seconds:g} CPU-seconds each on one thread, precision {precision} ({why}). Errors in "
             "normalised units (× 4 = voxels): band = true value < 0.5, iso = within half a voxel of the ε level; "
             "ε recall / precision: of the voxels under ε (0.25) in the truth / in the decoded blocks, the share under ε in both "
             "(what the ε-surface encloses: a missed voxel is a hole or a lost thin part).\n",
             "| design | decoder params | steps | band error | iso error | mean error | ε recall | ε precision |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['design']} | {r['decoder_parameters']:,} | {r['steps']} | {r['band_error']:.4f} | "
                     f"{r['iso_error']:.4f} | {r['mean_error']:.4f} | {r['eps_recall']:.3f} | {r['eps_precision']:.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    args.out.with_suffix(".md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
