"""The perfect-network benchmark (issue 33): what VAE mode's extraction makes of the exact field, the
field a flawless encoder-decoder would give back, against direct mode in the same run.

    .venv/bin/python bench/bench_exact_field.py [--resolutions 256 512] [--meshes spot.obj ...] [--samples 100000]
        [--methods direct shell dual vae vae=runs/x/model.safetensors]

Per mesh of ``../shared/meshes`` and N: the exact UDF blocks are gathered into padded UBlocks and
Pad-Averaged (as a decode would deliver them), then extracted by each field extraction —
``shell`` (today's: outside flood, ε-surface, clean-up) and ``dual`` (:mod:`model.udf_contour`) —
and set beside direct mode's result of the same mesh: CD (×1e3, outer-surface samples, in units of
the input's longest side), F1@0.001, pieces, boundary loops, edges of 3+ faces, area / input area,
area / the input's exposed area (the share not enclosed by another of its bodies,
:func:`model.metrics.exposed_share`: parts of an assembly that pass through each other hide surface
that no remesh of the solid keeps), and the extraction's seconds (for direct mode: its whole
pipeline). Prints a Markdown table; writes bench/results/exact_field.json and exact_field.md after every row.

A method with ``:unsettled`` after it (``shell:unsettled``, ``dual:unsettled``, ``vae:unsettled``)
runs it without the last step, settling the vertices onto the zero set (:mod:`model.zero_set`):
the before/after of that step in one run. With ``:cut`` (``shell:cut``, ``vae:cut``) a decoded
field's slabs are cut to one layer as before stop 42 instead of dual-contoured from the field
(``CleanupOptions.contour_slabs``); with ``:nogaps`` (``shell:nogaps``, ``vae:nogaps``) the outside
flood stops at gaps narrower than it passes, as before stop 43 (``CleanupOptions.fill_gaps``).
``CD / exact`` compares VAE mode with the exact field's row of
the same suffixes.

``vae`` (the shipped weights) and ``vae=PATH`` (other weights, named by the file's folder and stem)
run VAE mode itself — encode, decode, Pad-Average and the default field extraction — so that the
network's share of the error sits beside the extraction's: their ``CD / exact`` column divides by
the ``shell`` row's CD, the same extraction on the exact field (issue 28's ratio).
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

from bench.bench_cleanup import DEFAULT_MESHES, SHARED_MESHES, boundary_stats, surface_area  # noqa: E402
from model.grid import voxel_to_unit  # noqa: E402
from model.mesh import Mesh, load_mesh, save_mesh  # noqa: E402
from model.cleanup import CleanupOptions  # noqa: E402
from model.metrics import MetricsConfig, compute_metrics, exposed_share  # noqa: E402
from model.pipeline import RemeshOptions, extract_surface, mesh_to_field, remesh  # noqa: E402
from model.stages import Stages  # noqa: E402
from model.ublocks import extract_ublocks, iter_chunks, pad_average  # noqa: E402

RESULTS = REPO / "bench" / "results"


def perfect_field(mesh: Mesh, n: int):
    """The exact field as a flawless network returns it: UBlocks gathered with their padding, then
    Pad-Averaged back into a field."""
    field_, normalization = mesh_to_field(mesh, n)
    blocks = extract_ublocks(field_)
    return pad_average(iter_chunks(blocks, 16384), n, blocks.coords), normalization


def row_of(name: str, method: str, n: int, gt: Mesh, out: Mesh, seconds: float, config: MetricsConfig, inp: dict) -> dict:
    m = compute_metrics(gt, out, config)
    s = boundary_stats(out)
    return {"mesh": name, "N": n, "method": method, "CD": m["CD"], "F1@0.001": m["F1@0.001"], "F1@0.01": m["F1@0.01"],
            "NMSE": m["NMSE"],
            "pieces": s["pieces"],
            "input_pieces": inp["pieces"], "loops": s["loops"], "input_loops": inp["loops"],
            "nonmanifold_edges": s["nonmanifold_edges"], "area_ratio": surface_area(out) / surface_area(gt),
            "area_exposed": surface_area(out) / (surface_area(gt) * inp["exposed"]),
            "seconds": seconds, "faces": out.num_faces}


UNSETTLED = ":unsettled"
CUT = ":cut"
NO_GAPS = ":nogaps"
SUFFIXES = (UNSETTLED, CUT, NO_GAPS)


def cleanup_of(method: str) -> CleanupOptions:
    """The clean-up a method runs: every step, or all but the settling (``…:unsettled``), or with
    the single-layer cut of slabs instead of their contour (``…:cut``), or with the outside flood
    stopping at gaps narrower than it passes (``…:nogaps``)."""
    return CleanupOptions(settle=UNSETTLED not in method, contour_slabs=CUT not in method,
                          fill_gaps=NO_GAPS not in method)


def base_method(method: str) -> str:
    """The method without its suffixes: ``shell:cut:unsettled`` → ``shell``."""
    for suffix in SUFFIXES:
        method = method.replace(suffix, "")
    return method


def vae_weights(method: str) -> str | None:
    """``vae`` → None (the shipped weights); ``vae=PATH`` → PATH."""
    method = base_method(method)
    return method.split("=", 1)[1] if "=" in method else None


def suffixes_of(method: str) -> str:
    """The method's suffixes in a fixed order: ``vae:unsettled:cut`` → ``:unsettled:cut``."""
    return "".join(suffix for suffix in SUFFIXES if suffix in method)


def vae_label(method: str) -> str:
    weights = vae_weights(method)
    suffix = suffixes_of(method)
    return ("vae" if weights is None else f"vae:{Path(weights).parent.name}/{Path(weights).stem}") + suffix


def table(rows: list[dict]) -> str:
    direct = {(r["mesh"], r["N"]): r["CD"] for r in rows if r["method"] == "direct" and "CD" in r}
    exact = {(r["mesh"], r["N"], suffixes_of(r["method"])): r["CD"] for r in rows
             if "CD" in r and base_method(r["method"]) == "shell"}
    lines = ["| mesh | N | method | CD ×1e3 | CD / direct | CD / exact | F1@0.01 | F1@0.001 | NMSE | pieces / input | loops / input | "
             "3+-face edges | area / input | area / exposed input | seconds |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['mesh']} | {r['N']} | {r['method']} | failed: {r['error'][:60]} |" + " |" * 11)
            continue
        ref = direct.get((r["mesh"], r["N"]))
        ref_exact = exact.get((r["mesh"], r["N"], suffixes_of(r["method"])))
        ratio = f"{r['CD'] / ref:.2f}" if ref else ""
        ratio_exact = f"{r['CD'] / ref_exact:.2f}" if ref_exact and r["method"].startswith("vae") else ""
        lines.append(f"| {r['mesh']} | {r['N']} | {r['method']} | {1e3 * r['CD']:.4g} | {ratio} | {ratio_exact} | "
                     f"{r.get('F1@0.01', float('nan')):.4f} | {r['F1@0.001']:.4f} | {r.get('NMSE', float('nan')):.4f} | "
                     f"{r['pieces']} / {r['input_pieces']} | {r['loops']} / {r['input_loops']} | {r['nonmanifold_edges']} | "
                     f"{r['area_ratio']:.3f} | {r.get('area_exposed', float('nan')):.3f} | {r['seconds']:.1f} |")
    return "\n".join(lines)


def run_method(method: str, gt: Mesh, n: int, exact: tuple | None) -> tuple[Mesh, float]:
    """One method's output for ``gt`` at ``n`` and its seconds: direct and VAE mode from the mesh,
    the others from ``exact`` (:func:`perfect_field`: the field and its normalization; its making is
    not timed)."""
    start = time.perf_counter()
    if method == "direct":
        out = remesh(gt, RemeshOptions(resolution=n)).mesh
    elif method.startswith("vae"):
        out = remesh(gt, RemeshOptions(resolution=n, mode="vae", checkpoint=vae_weights(method),
                                       cleanup=cleanup_of(method))).mesh
    else:
        assert exact is not None
        field_, normalization = exact
        options = RemeshOptions(resolution=n, mode="vae", cleanup=cleanup_of(method), field_extraction=base_method(method))
        start = time.perf_counter()
        surface = extract_surface(field_, None, options, Stages())
        out = Mesh(normalization.from_unit(voxel_to_unit(surface.vertices, n)), surface.faces)
    return out, time.perf_counter() - start


def warm_up(methods: list[str], n: int = 64) -> None:
    """Every method once, untimed, on a small sphere with an open sheet through it: numba compiles
    each kernel on its first call (seconds each), which the first timed rows would otherwise carry
    (the armchair at 256, first in the table, read 13.7 s against 2.9 s warm)."""
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=3)
    square = np.array([(-1.6, -1.6, 0.01), (1.6, -1.6, 0.01), (1.6, 1.6, 0.01), (-1.6, 1.6, 0.01)])
    warm = Mesh(np.concatenate([np.asarray(sphere.vertices, dtype=np.float64), square]),
                np.concatenate([np.asarray(sphere.faces, dtype=np.int64), len(sphere.vertices) + np.array([[0, 1, 2], [0, 2, 3]])]))
    exact = perfect_field(warm, n)
    for method in methods:
        run_method(method, warm, n, exact)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolutions", nargs="+", type=int, default=[256, 512])
    parser.add_argument("--meshes", nargs="+", default=DEFAULT_MESHES)
    parser.add_argument("--methods", nargs="+", default=["direct", "shell", "dual"],
                        help="direct, shell, dual (extractions of the exact field), vae (shipped weights), vae=PATH; "
                             "any but direct with ':unsettled' after it: without settling onto the zero set; "
                             "with ':cut': slabs cut to one layer instead of contoured")
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=RESULTS / "exact_field.json")
    parser.add_argument("--save", type=Path, default=None,
                        help="also write each output as SAVE/<mesh>.<method>.<N>.ply (for bench/render_compare.py)")
    args = parser.parse_args()
    from model.memory import configure_allocator

    configure_allocator()  # as `log3d` runs (model/memory.py): freed memory kept for the next mesh
    config = MetricsConfig(num_samples=args.samples, sharp_samples=args.samples // 5)
    meta = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d %H:%M"),
            "command": "python bench/bench_exact_field.py " + " ".join(sys.argv[1:])}
    rows: list[dict] = []
    warm_up(args.methods)
    for n in args.resolutions:
        for name in args.meshes:
            gt = load_mesh(SHARED_MESHES / name)
            inp = {**boundary_stats(gt), "exposed": exposed_share(gt)}
            field_ = None
            for method in args.methods:
                label = vae_label(method) if method.startswith("vae") else method
                try:
                    if field_ is None and method != "direct" and not method.startswith("vae"):
                        field_ = perfect_field(gt, n)
                    out, seconds = run_method(method, gt, n, field_)
                    rows.append(row_of(name, label, n, gt, out, seconds, config, inp))
                    if args.save is not None:
                        args.save.mkdir(parents=True, exist_ok=True)
                        save_mesh(out, args.save / f"{Path(name).stem}.{label.replace('/', '_')}.{n}.ply")
                except Exception as exc:  # a failure is a row
                    rows.append({"mesh": name, "N": n, "method": label, "error": f"{type(exc).__name__}: {exc}"})
                print(table(rows).splitlines()[-1], flush=True)
                args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
                args.out.with_suffix(".md").write_text(
                    f"# The perfect network: VAE mode's extraction on the exact field (bench/bench_exact_field.py)\n\n"
                    f"{meta}\n\n{table(rows)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
