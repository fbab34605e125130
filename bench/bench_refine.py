"""VAE mode with its latents refined (model/refine.py): CD, F1, normal error and the band error of the
decoded field after 0, a few and more Adam steps, with the seconds the refinement took.

    .venv/bin/python bench/bench_refine.py [--meshes cow.obj spot.obj] [--resolutions 128]
        [--steps 0 10 25 50] [--out bench/results/refine_128.json]

Each mesh is encoded once; each count of steps is a refinement of its own from the encoder's
latents (as `--refine-steps` runs it). The extraction is VAE mode's default. Prints the
table and writes JSON plus a markdown table beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_cleanup import SHARED_MESHES  # noqa: E402
from model.autoencode import decode_blocks, encode_blocks, load_vae  # noqa: E402
from model.grid import voxel_to_unit  # noqa: E402
from model.mesh import Mesh, load_mesh  # noqa: E402
from model.metrics import MetricsConfig, compute_metrics  # noqa: E402
from model.objective import band_error  # noqa: E402
from model.pipeline import RemeshOptions, extract_surface, mesh_to_field  # noqa: E402
from model.refine import RefineOptions, refine_latents  # noqa: E402
from model.stages import Stages  # noqa: E402
from model.ublocks import extract_ublocks, iter_chunks, pad_average  # noqa: E402

RESULTS = REPO / "bench" / "results"


def score(network, latents, ublocks, gt: Mesh, normalization, n: int, config: MetricsConfig) -> dict:
    import torch

    decoded = decode_blocks(network, latents)
    field_ = pad_average(iter_chunks(decoded, 16384), n, decoded.coords)
    surface = extract_surface(field_, None, RemeshOptions(resolution=n, mode="vae"), Stages())
    out = Mesh(normalization.from_unit(voxel_to_unit(surface.vertices, n)), surface.faces)
    m = compute_metrics(gt, out, config)
    return {"CD": m["CD"], "F1@0.01": m["F1@0.01"], "F1@0.001": m["F1@0.001"], "NMSE": m["NMSE"],
            "band_error": band_error(torch.as_tensor(decoded.blocks), torch.as_tensor(ublocks.blocks))}


def table(rows: list[dict]) -> str:
    base = {(r["mesh"], r["N"]): r["CD"] for r in rows if r["steps"] == 0}
    lines = ["| mesh | N | steps | CD ×1e3 | CD / unrefined | F1@0.01 | F1@0.001 | NMSE | band error | refine seconds |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['mesh']} | {r['N']} | {r['steps']} | {1e3 * r['CD']:.4g} | {r['CD'] / base[(r['mesh'], r['N'])]:.2f} | "
                     f"{r['F1@0.01']:.4f} | {r['F1@0.001']:.4f} | {r['NMSE']:.4f} | {r['band_error']:.4f} | {r['seconds']:.1f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meshes", nargs="+", default=["cow.obj", "spot.obj", "fandisk.obj"])
    parser.add_argument("--resolutions", nargs="+", type=int, default=[128])
    parser.add_argument("--steps", nargs="+", type=int, default=[0, 10, 25, 50])
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=RESULTS / "refine_128.json")
    args = parser.parse_args()
    network = load_vae(None, "auto")
    config = MetricsConfig(num_samples=args.samples, sharp_samples=args.samples // 5)
    meta = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, device {network.device}",
            "date": time.strftime("%Y-%m-%d %H:%M"), "command": "python bench/bench_refine.py " + " ".join(sys.argv[1:])}
    rows: list[dict] = []
    for n in args.resolutions:
        for name in args.meshes:
            gt = load_mesh(SHARED_MESHES / name)
            field_, normalization = mesh_to_field(gt, n)
            ublocks = extract_ublocks(field_)
            encoded = encode_blocks(network, ublocks)
            for steps in sorted(set(args.steps)):
                start = time.perf_counter()
                latents = refine_latents(network, ublocks, encoded, RefineOptions(steps=steps))
                seconds = time.perf_counter() - start
                row = {"mesh": name, "N": n, "steps": steps, "seconds": seconds,
                       **score(network, latents, ublocks, gt, normalization, n, config)}
                rows.append(row)
                print(row, flush=True)
    text = f"# VAE mode with refined latents (bench/bench_refine.py)\n\n{meta}\n\n{table(rows)}\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    args.out.with_suffix(".md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
