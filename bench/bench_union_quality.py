"""Direct mode's quality before and after a change of the contouring, on the meshes of several bodies.

Made for the union of closed bodies (issue 34): it removes the walls of one body inside another, and
the metrics' outer sampling keeps some of those walls in the reference (docs/metrics.md, "Enclosed
points"), so CD is reported both ways — the reported protocol and ``drop_enclosed`` — beside the
topology columns, for the code in ``--before`` (any checkout of this repository) and this one, each
output in canonical element order (two outputs that differ only in order get the same numbers)::

    git worktree add /tmp/before a96784e^     # the contouring before the union
    python bench/bench_union_quality.py --before /tmp/before

Each remesh runs in its own process with that checkout first on the path; the metrics are this
checkout's for both. Writes bench/results/union_quality.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_pipeline import SHARED_MESHES, default_meshes, topology  # noqa: E402
from model.contour import InputTopology  # noqa: E402
from model.mesh import Mesh, load_mesh  # noqa: E402
from model.metrics import MetricsConfig, VisibilityConfig, compute_metrics  # noqa: E402

RESULTS = REPO / "bench" / "results"
REMESH = ("import sys; from model.mesh import load_mesh, save_mesh; from model.pipeline import RemeshOptions, remesh; "
          "save_mesh(remesh(load_mesh(sys.argv[1]), RemeshOptions(resolution=int(sys.argv[2]))).mesh, sys.argv[3])")


def remesh_with(code: Path, source: Path, resolution: int, out: Path) -> None:
    subprocess.run([sys.executable, "-c", REMESH, str(source), str(resolution), str(out)], cwd=code, check=True,
                   env={**os.environ, "PYTHONPATH": str(code)}, timeout=1800)


def _canonical(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The vertices sorted, the faces renumbered to that order, each started at its lowest corner
    (orientation kept) and sorted: equal for two meshes that differ only in element order."""
    order = np.lexsort(vertices.T[::-1])
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    f = rank[faces]
    first = np.argmin(f, axis=1)
    rolled = np.stack([f[np.arange(len(f)), (first + k) % 3] for k in range(3)], axis=1)
    return vertices[order], rolled[np.lexsort(rolled.T[::-1])]


def same_surface(a, b) -> bool:
    """The same triangles on the same points, up to the order of vertices and faces (the metrics'
    samples follow the face order, so such a pair can differ in CD by sampling noise alone)."""
    if a.vertices.shape != b.vertices.shape or a.faces.shape != b.faces.shape:
        return False
    (va, fa), (vb, fb) = _canonical(a.vertices, a.faces), _canonical(b.vertices, b.faces)
    return bool(np.array_equal(va, vb) and np.array_equal(fa, fb))


def scores(gt, out, samples: int, seeds: int = 1) -> dict:
    """Topology and CD both ways, on the output in canonical element order: two outputs that differ
    only in order get the same samples, so the same numbers. With ``seeds`` > 1 the CDs are also
    taken with seeds 0 … seeds−1 (lists ``CD_seeds``, ``CD_visible_seeds``): the sampling noise
    beside a difference between two different surfaces."""
    out = Mesh(*_canonical(out.vertices, out.faces))
    cd, visible = [], []
    for seed in range(seeds):
        config = MetricsConfig(num_samples=samples, sharp_samples=10_000, seed=seed)
        cd.append(compute_metrics(gt, out, config)["CD"])
        visible.append(compute_metrics(gt, out, replace(config, visibility=VisibilityConfig(drop_enclosed=True)))["CD"])
    return {**topology(out), "CD": cd[0], "CD_visible": visible[0], "CD_seeds": cd, "CD_visible_seeds": visible}


def paired(before: list[float], after: list[float]) -> str:
    """after − before over the seeds, relative to before's mean: mean ± standard error."""
    d = (np.array(after) - np.array(before)) / np.mean(before)
    return f"{100 * d.mean():+.2f} % ± {100 * d.std(ddof=1) / np.sqrt(len(d)):.2f} %" if len(d) > 1 else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="a checkout of the code to compare against")
    parser.add_argument("--meshes", nargs="+", default=None, help="default: every shared mesh of two or more bodies")
    parser.add_argument("--resolutions", nargs="+", type=int, default=[256, 512])
    parser.add_argument("--samples", type=int, default=100_000, help="samples per mesh for CD")
    parser.add_argument("--seeds", type=int, default=1, help="sampling seeds per CD (more: the paired difference and its standard error)")
    parser.add_argument("--out", type=Path, default=RESULTS / "union_quality.json")
    args = parser.parse_args()
    before_rev = subprocess.run(["git", "-C", str(args.before), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    after_rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    rows = []
    lines = ["| mesh | N | bodies | same surface | CD ×1e3 before / after | CD visible ×1e3 before / after | pieces before / after / input | "
             "loops before / after / input | 3+-face edges before / after / input |", "|---|---:|---:|---|---|---|---|---|---|"]
    if args.seeds > 1:
        lines[0] += f" CD after − before, {args.seeds} seeds | CD visible after − before, {args.seeds} seeds |"
        lines[1] += "---|---|"
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.meshes or default_meshes():
            path = Path(name) if Path(name).exists() else SHARED_MESHES / name
            gt = load_mesh(path)
            bodies = len(np.unique(InputTopology.of(gt.vertices, gt.faces).piece))
            if args.meshes is None and bodies < 2:
                continue
            source = topology(gt)
            for n in args.resolutions:
                row = {"mesh": path.name, "resolution": n, "bodies": bodies, "input": source}
                outputs = {}
                for tag, code in (("before", args.before), ("after", REPO)):
                    out = Path(scratch) / f"{tag}.ply"
                    remesh_with(code, path, n, out)
                    outputs[tag] = load_mesh(out)
                    row[tag] = scores(gt, outputs[tag], args.samples, args.seeds)
                row["same_surface"] = same_surface(outputs["before"], outputs["after"])
                rows.append(row)
                b, a = row["before"], row["after"]
                line = (f"| {path.name} | {n} | {bodies} | {'yes' if row['same_surface'] else 'no'} | "
                        f"{1e3 * b['CD']:.4g} / {1e3 * a['CD']:.4g} | "
                        f"{1e3 * b['CD_visible']:.4g} / {1e3 * a['CD_visible']:.4g} | "
                        + " | ".join(f"{b[k]} / {a[k]} / {source[k]}" for k in ("pieces", "loops", "edges_3plus")) + " |")
                if args.seeds > 1:
                    line += (f" {paired(b['CD_seeds'], a['CD_seeds'])} | {paired(b['CD_visible_seeds'], a['CD_visible_seeds'])} |")
                lines.append(line)
                print(line, flush=True)
    table = "\n".join(lines)
    meta = {"before": before_rev, "after": after_rev, "date": time.strftime("%Y-%m-%d %H:%M"),
            "command": "python bench/bench_union_quality.py " + " ".join(sys.argv[1:])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    args.out.with_suffix(".md").write_text(f"# Direct mode before ({before_rev}) and after ({after_rev}) on meshes of several bodies\n\n"
                                           f"{meta}\n\n{table}\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
