"""Held-out quality against UBlocks seen, across a lineage of training runs, and what the curve says
the targets would cost.

A shipped model is usually several runs in a row (each ``--init`` from the one before). Each run
directory has ``metrics.csv`` (blocks per step) and ``val.csv`` (held-out validation rows, the
trainer's deterministic protocol); this script chains them — the blocks of run k start where run
k−1 ended — and plots held-out CD and F1@0.01 against the total. A power law CD ∝ blocks^−a fitted
on the end of each run's learning-rate cycle gives the extrapolation the model card quotes: how
many more blocks a given drop in CD would take *if the trend held* (it flattens; the estimate is a
lower bound).

    python bench/training_curve.py --start-blocks 217000 --start-cd 0.00447 --start-f1 0.896 \\
        --runs RUN_A RUN_B RUN_C --out bench/results/training_curve
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections import defaultdict
from pathlib import Path


def blocks_per_step(run: Path) -> dict[int, int]:
    """UBlocks of each step; a resumed run repeats steps after its checkpoint, the last row wins."""
    steps: dict[int, int] = {}
    with open(run / "metrics.csv") as f:
        for row in csv.DictReader(f):
            steps[int(row["step"])] = int(row["blocks"])
    return steps


def validation_means(run: Path) -> dict[int, dict[str, float]]:
    """Mean held-out metrics per validated step (rows with an error are left out, and said)."""
    acc: dict[int, list[dict[str, float]]] = defaultdict(list)
    with open(run / "val.csv") as f:
        for row in csv.DictReader(f):
            if row.get("CD"):
                acc[int(row["step"])].append({k: float(row[k]) for k in ("CD", "F1@0.01", "F1@0.001", "NMSE")})
    return {step: {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]} | {"shapes": len(rows)}
            for step, rows in sorted(acc.items())}


def chain(runs: list[Path], start_blocks: int) -> list[dict]:
    """One point per validated step of every run, with the total UBlocks seen by then."""
    points, offset = [], start_blocks
    for run in runs:
        blocks = blocks_per_step(run)
        cumulative, total = {}, 0
        for step in sorted(blocks):
            total += blocks[step]
            cumulative[step] = total
        for step, mean in validation_means(run).items():
            points.append({"run": run.name, "step": step, "blocks_seen": offset + cumulative.get(step, 0), **mean})
        offset += total
    return points


def power_law(points: list[dict]) -> tuple[float, float]:
    """Least-squares fit of log CD = c − a · log blocks; returns (a, c)."""
    xs = [math.log(p["blocks_seen"]) for p in points]
    ys = [math.log(p["CD"]) for p in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return -slope, my - slope * mx


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="run directories, oldest first")
    parser.add_argument("--start-blocks", type=int, default=0, help="UBlocks seen before the first run")
    parser.add_argument("--start-cd", type=float, help="held-out CD of the weights the first run started from")
    parser.add_argument("--start-f1", type=float, help="their F1@0.01")
    parser.add_argument("--fit-on", choices=["run-ends", "all"], default="run-ends",
                        help="fit the power law on the start and each run's last point (each at the end of its "
                             "learning-rate cycle, so comparable), or on every point (restarts' bumps included)")
    parser.add_argument("--cd-drops", nargs="+", type=float, default=[2.0, 4.0, 15.0],
                        help="CD reductions to price in UBlocks")
    parser.add_argument("--out", type=Path, required=True, help="output stem (.json, .md, .png)")
    args = parser.parse_args()

    points = chain(args.runs, args.start_blocks)
    if args.start_cd is not None:
        points.insert(0, {"run": "start", "step": 0, "blocks_seen": args.start_blocks, "CD": args.start_cd,
                          "F1@0.01": args.start_f1 if args.start_f1 is not None else float("nan")})
    if args.fit_on == "all":
        fitted = points
    else:
        ends = {p["run"]: p for p in points}  # the last point of each run (and the start)
        fitted = list(ends.values())
    a, c = power_law(fitted)
    last = points[-1]
    prices = {f"{drop:g}x": last["blocks_seen"] * drop ** (1.0 / a) - last["blocks_seen"] if a > 0 else None
              for drop in args.cd_drops}
    result = {"points": points, "fit": {"exponent": a, "log_intercept": c, "on_points": len(fitted),
                                        "fit_on": args.fit_on},
              "more_blocks_for_cd_drop": prices}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))

    lines = ["| run | step | UBlocks seen | CD | F1@0.01 | F1@0.001 | NMSE |", "|---|---:|---:|---:|---:|---:|---:|"]
    for p in points:
        lines.append(f"| {p['run']} | {p['step']} | {p['blocks_seen']:,} | {p['CD']:.5f} | {p['F1@0.01']:.4f} | "
                     f"{p.get('F1@0.001', float('nan')):.4f} | {p.get('NMSE', float('nan')):.4f} |")
    lines.append("")
    lines.append(f"Power law on {len(fitted)} points ({args.fit_on}): CD ∝ UBlocks^−{a:.3f}.")
    for drop, more in prices.items():
        lines.append(f"- CD {drop} lower: {more / 1e6:.1f}M more UBlocks" if more is not None else f"- CD {drop}: no trend")
    table = "\n".join(lines)
    args.out.with_suffix(".md").write_text(table + "\n")
    print(table)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(9.5, 3.6))
    xs = [p["blocks_seen"] for p in points]
    ax[0].plot(xs, [p["CD"] for p in points], "o-", label="held-out CD")
    span = [min(xs), max(xs) * 4]
    ax[0].plot(span, [math.exp(c - a * math.log(x)) for x in span], "--", color="grey", label=f"fit ∝ blocks^−{a:.2f}")
    ax[0].set_xscale("log"), ax[0].set_yscale("log"), ax[0].legend(fontsize=8)
    ax[0].set_xlabel("UBlocks seen in training"), ax[0].set_ylabel("held-out CD (N=128)")
    ax[1].plot(xs, [p["F1@0.01"] for p in points], "o-")
    ax[1].set_xscale("log"), ax[1].set_xlabel("UBlocks seen in training"), ax[1].set_ylabel("held-out F1@0.01 (N=128)")
    for axis in ax:
        axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=110)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
