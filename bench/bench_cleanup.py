"""Artist-grade output vs the paper's raw ε-surface vs Blender's Voxel Remesh, same run.

    .venv/bin/python bench/bench_cleanup.py [--meshes spot.obj woody.obj ...] [--resolutions 512 1024]

For each mesh and N (direct mode): LoG3D with the default clean-up (deflate, outer shell), the
same with slabs kept (--keep-slabs: single layer off), LoG3D raw (the paper's ε-surface), and Blender's Voxel Remesh
at voxel size = extent / N.
Columns: Chamfer distance and F1@0.001 against the input (model.metrics, outer-surface sampling),
output area / input area (a double wall reads ~2), connected pieces, boundary loops (an open sheet
returned as one open layer has ≥ 1, a closed solid 0), time, and CD / Blender's CD for the same mesh
and N. Writes
bench/results/cleanup.json and cleanup.md (or --out PATH).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backend.evaluate import default_methods  # noqa: E402
from model.cleanup import CleanupOptions  # noqa: E402
from model.mesh import Mesh, face_normals_and_areas, fit_unit_cube, load_mesh  # noqa: E402
from model.metrics import MetricsConfig, compute_metrics  # noqa: E402
from model.pipeline import RemeshOptions, remesh  # noqa: E402

SHARED_MESHES = REPO.parent / "shared" / "meshes"
CLOSED = {"spot.obj", "cow.obj", "fandisk.obj", "armchair.obj", "scorpion.obj", "counter_unitsmm.stl",
          "large_turbineblade_midsub1.ply"}
DEFAULT_MESHES = sorted(p.name for p in SHARED_MESHES.glob("*") if p.suffix in (".obj", ".ply", ".stl")) if SHARED_MESHES.is_dir() else []


def surface_area(mesh: Mesh) -> float:
    return float(face_normals_and_areas(mesh.vertices, mesh.faces)[1].sum())


def visible_area(mesh: Mesh, samples: int = 200_000, seed: int = 0) -> float:
    """Area of the part of ``mesh`` visible from outside (the metrics' visibility test): what an
    outer-shell remesh can keep. Assemblies with parts inside a housing (cycloidal, armchair) have
    far more area than this; comparing with the whole input area would call dropping them a loss."""
    from model.metrics import outer_surface_mask, sample_surface

    unit = fit_unit_cube(mesh.vertices, 0.0).to_unit(mesh.vertices)
    candidates = sample_surface(unit, mesh.faces, samples, np.random.default_rng(seed))
    return surface_area(mesh) * float(outer_surface_mask(unit, mesh.faces, candidates).mean())


def topology(mesh: Mesh) -> tuple[int, int]:
    """(edge-connected pieces, boundary loops)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    f = mesh.faces
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    owner = np.tile(np.arange(len(f)), 3)
    key = edges[:, 0] * (mesh.num_vertices + 1) + edges[:, 1]
    order = np.argsort(key, kind="stable")
    key, owner = key[order], owner[order]
    same = key[1:] == key[:-1]
    graph = coo_matrix((np.ones(int(same.sum())), (owner[:-1][same], owner[1:][same])), shape=(len(f), len(f)))
    pieces, _ = connected_components(graph, directed=False)
    unique, counts = np.unique(key, return_counts=True)
    boundary = unique[counts == 1]
    if len(boundary) == 0:
        return pieces, 0
    a, b = boundary // (mesh.num_vertices + 1), boundary % (mesh.num_vertices + 1)
    g = coo_matrix((np.ones(len(a)), (a, b)), shape=(mesh.num_vertices + 1,) * 2)
    _, label = connected_components(g, directed=False)
    return pieces, len(np.unique(label[np.unique(np.concatenate([a, b]))]))


def run_method(name: str, mesh: Mesh, n: int, blender) -> tuple[Mesh, float]:
    start = time.perf_counter()
    if name == "blender-voxel":
        out = blender(mesh, n)
        return out.mesh, out.seconds
    cleanup = {"log3d": CleanupOptions(), "log3d-keep-slabs": CleanupOptions(single_layer=False)}.get(name, CleanupOptions.none())
    result = remesh(mesh, RemeshOptions(resolution=n, cleanup=cleanup))
    return result.mesh, time.perf_counter() - start


def add_blender_ratios(rows: list[dict]) -> None:
    """CD / Blender's CD of the same mesh and N, on every row that has both."""
    blender = {(r["mesh"], r["resolution"]): r.get("CD") for r in rows if r["method"] == "blender-voxel"}
    for r in rows:
        ref = blender.get((r["mesh"], r["resolution"]))
        if "CD" in r and ref:
            r["CD_vs_blender"] = r["CD"] / ref


def format_row(r: dict) -> str:
    head = f"| {r['mesh']} | {r['kind']} | {r['resolution']} | {r['method']} |"
    if "error" in r:
        return f"{head} failed: {r['error'][:80]} | | | | | | | |"
    ratio = f"{r['CD_vs_blender']:.2f}" if "CD_vs_blender" in r else ""
    visible = f"{r['area_vs_visible']:.3f}" if "area_vs_visible" in r else ""
    return (f"{head} {1e3 * r['CD']:.4g} | {ratio} | {r['F1_0001']:.4f} | {r['area_ratio']:.3f} | {visible} | {r['pieces']} | "
            f"{r['boundary_loops']} | {r['seconds']:.1f} |")


TABLE_HEADER = ("| mesh | kind | N | method | CD ×1e3 | CD / Blender | F1@0.001 | area / input | area / visible input | pieces | boundary loops | seconds |\n"
                "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")


def add_visible_areas(rows: list[dict], cache: dict[str, float]) -> None:
    """The area / visible-input column for rows written before it existed."""
    for r in rows:
        if "area_ratio" in r and "area_vs_visible" not in r:
            if r["mesh"] not in cache:
                gt = load_mesh(SHARED_MESHES / r["mesh"])
                cache[r["mesh"]] = surface_area(gt) / visible_area(gt)  # input area / visible area
            r["area_vs_visible"] = r["area_ratio"] * cache[r["mesh"]]


def write_tables(rows: list[dict], out: Path, meta: dict) -> None:
    """JSON and Markdown of the rows so far (rewritten after every row: a stopped run keeps them)."""
    add_blender_ratios(rows)
    table = "\n".join([TABLE_HEADER] + [format_row(r) for r in rows])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    out.with_suffix(".md").write_text(f"# Clean-up vs raw ε-surface vs Blender Voxel Remesh\n\n{meta}\n\n{table}\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meshes", nargs="+", default=DEFAULT_MESHES)
    parser.add_argument("--resolutions", nargs="+", type=int, default=[512, 1024])
    parser.add_argument("--samples", type=int, default=300_000, help="surface samples per mesh for the metrics")
    parser.add_argument("--methods", nargs="+", default=["log3d", "log3d-keep-slabs", "log3d-raw", "blender-voxel"],
                        choices=["log3d", "log3d-keep-slabs", "log3d-raw", "blender-voxel"])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "cleanup.json")
    parser.add_argument("--rescore", action="store_true",
                        help="only add the visible-area column to the rows already in --out and rewrite its tables")
    args = parser.parse_args()
    if args.rescore:
        saved = json.loads(args.out.read_text())
        add_visible_areas(saved["rows"], {})
        write_tables(saved["rows"], args.out, saved["meta"])
        return 0
    blender = default_methods()["blender-voxel"]
    config = MetricsConfig(num_samples=args.samples, sharp_samples=args.samples // 5)
    remesh(load_mesh(REPO / "examples" / "spot.obj"), RemeshOptions(resolution=64))  # compile the kernels
    meta = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d %H:%M"),
            "metrics": f"model.metrics, {args.samples} outer-surface samples, point-to-surface",
            "command": "python bench/bench_cleanup.py " + " ".join(sys.argv[1:])}
    rows: list[dict] = []
    print(TABLE_HEADER)
    for n in args.resolutions:  # every mesh at the first N before any at the next: a stopped run still has whole tables
        for name in args.meshes:
            gt = load_mesh(SHARED_MESHES / name)
            gt_area = surface_area(gt)
            gt_visible = visible_area(gt)
            for method in args.methods:
                row = {"mesh": name, "kind": "closed" if name in CLOSED else "open", "resolution": n, "method": method}
                try:
                    out, seconds = run_method(method, gt, n, blender)
                    metrics_start = time.perf_counter()
                    m = compute_metrics(gt, out, config)
                    row["metrics_seconds"] = time.perf_counter() - metrics_start
                    pieces, loops = topology(out)
                    row.update(CD=m["CD"], F1_0001=m["F1@0.001"], F1_001=m["F1@0.01"], area_ratio=surface_area(out) / gt_area,
                               area_vs_visible=surface_area(out) / gt_visible,
                               pieces=pieces, boundary_loops=loops, faces=out.num_faces, seconds=seconds)
                except Exception as exc:  # a failure is a row, never a silent skip
                    row["error"] = f"{type(exc).__name__}: {exc}"
                rows.append(row)
                print(format_row(row), f"(metrics {row.get('metrics_seconds', 0.0):.0f} s)", flush=True)
                write_tables(rows, args.out, meta)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
