"""The extraction and clean-up, per mesh: whole (pieces, boundary loops, boundary length and
watertightness against the input's), faithful (CD, F1, area) and fast (the clean-up's share of
the pipeline's time) — LoG3D direct and VAE, the paper's raw ε-surface and Blender's Voxel Remesh.

    .venv/bin/python bench/bench_cleanup.py [--meshes spot.obj woody.obj ...] [--resolutions 256 512]
        [--methods log3d log3d-vae log3d-keep-slabs log3d-raw blender-voxel]

A mesh is *closed* when its welded input has no boundary edge, else *open*. Per row: the input's
pieces / loops / boundary length beside the output's; ``bnd edges`` (0: watertight); ``blen``:
output boundary length / input's; area / input area (and / the part visible from outside, for
assemblies with hidden parts); ``clean-up %``: the pipeline's ``cleanup`` stage over the sum of its
stages; ``whole``: the issue's rule for the row's kind — closed: 0 boundary edges and pieces ≤ the
input's; open (direct): loops ≤ input's + max(2, 10 %), pieces ≤ input's, boundary length ≤ 1.5×,
area within 3 %. Writes bench/results/cleanup.json and .md (or --out PATH), after every row.
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
from model.contour import weld  # noqa: E402
from model.edges import edge_valence  # noqa: E402
from model.pipeline import RemeshOptions, remesh  # noqa: E402

SHARED_MESHES = REPO.parent / "shared" / "meshes"
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


def boundary_stats(mesh: Mesh) -> dict:
    """Pieces, boundary loops, boundary edges and boundary length of a mesh, welded first."""
    vertices, faces = weld(mesh.vertices, mesh.faces)
    welded = Mesh(vertices=vertices, faces=faces)
    pieces, loops = topology(welded)
    edges, counts = edge_valence(len(vertices), faces)
    border = edges[counts == 1]
    length = float(np.linalg.norm(vertices[border[:, 0]] - vertices[border[:, 1]], axis=1).sum())
    return {"pieces": int(pieces), "loops": int(loops), "boundary_edges": int(len(border)), "boundary_length": length,
            "nonmanifold_edges": int((counts > 2).sum())}


METHODS = {"log3d": ("direct", CleanupOptions()), "log3d-vae": ("vae", CleanupOptions()),
           "log3d-keep-slabs": ("direct", CleanupOptions(single_layer=False)), "log3d-raw": ("direct", CleanupOptions.none())}


def open_sheet() -> Mesh:
    """A small open mesh that takes every open-boundary step (to compile their kernels before
    anything is timed): a bowl with a fin through it (a junction) and a wall standing on a floor
    without sharing its edges (a boundary running through another sheet's cells: the detach)."""
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=3)
    bowl = sphere.submesh([np.flatnonzero(sphere.triangles_center[:, 2] < 0.3)], append=True)
    fin = trimesh.Trimesh([[-1.2, 0.0, -1.2], [1.2, 0.0, -1.2], [1.2, 0.0, 0.6], [-1.2, 0.0, 0.6]], [[0, 1, 2], [0, 2, 3]])
    floor = trimesh.Trimesh([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], [[0, 1, 2], [0, 2, 3]])
    wall = trimesh.Trimesh([[0.05, -0.6, 0.0], [0.05, 0.6, 0.0], [0.05, 0.6, 0.7], [0.05, -0.6, 0.7]], [[0, 1, 2], [0, 2, 3]])
    floor.apply_translation((3.0, 0.0, 0.0))
    wall.apply_translation((3.0, 0.0, 0.0))
    joined = trimesh.util.concatenate([bowl, fin.subdivide().subdivide(), floor.subdivide().subdivide(),
                                       wall.subdivide().subdivide()])
    return Mesh(vertices=np.asarray(joined.vertices, dtype=np.float64), faces=np.asarray(joined.faces, dtype=np.int64))


def run_method(name: str, mesh: Mesh, n: int, blender) -> tuple[Mesh, float, dict[str, float]]:
    start = time.perf_counter()
    if name == "blender-voxel":
        out = blender(mesh, n)
        return out.mesh, out.seconds, {}
    mode, cleanup = METHODS[name]
    result = remesh(mesh, RemeshOptions(resolution=n, mode=mode, cleanup=cleanup))
    return result.mesh, time.perf_counter() - start, result.timings


def whole(row: dict, inp: dict) -> bool:
    """The issue's rule for the row's kind (see the module's docstring)."""
    if row["kind"] == "closed":
        return row["boundary_edges"] == 0 and row["pieces"] <= inp["pieces"]
    return (row["boundary_loops"] <= inp["loops"] + max(2, int(0.1 * inp["loops"])) and row["pieces"] <= inp["pieces"]
            and row["boundary_length_ratio"] <= 1.5 and abs(row["area_ratio"] - 1.0) <= 0.03)


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
        return f"{head} failed: {r['error'][:80]} |" + " |" * 12
    ratio = f"{r['CD_vs_blender']:.2f}" if "CD_vs_blender" in r else ""
    share = f"{100 * r['cleanup_share']:.0f}" if "cleanup_share" in r else ""
    blen = f"{r['boundary_length_ratio']:.2f}" if r.get("boundary_length_ratio") is not None else ""
    verdict = "" if r["method"] == "blender-voxel" or (r["kind"] == "open" and r["method"] != "log3d") else ("yes" if r["whole"] else "**no**")
    return (f"{head} {1e3 * r['CD']:.4g} | {ratio} | {r['F1_0001']:.4f} | {r['area_ratio']:.3f} | {r['area_vs_visible']:.3f} | "
            f"{r['pieces']} / {r['input_pieces']} | {r['boundary_loops']} / {r['input_loops']} | {r['boundary_edges']} | "
            f"{r['nonmanifold_edges']} | {blen} | "
            f"{verdict} | {share} | {r['seconds']:.1f} |")


TABLE_HEADER = ("| mesh | kind | N | method | CD ×1e3 | CD / Blender | F1@0.001 | area / input | area / visible input | "
                "pieces / input's | loops / input's | bnd edges | 3+-face edges | blen | whole | clean-up % | seconds |\n"
                "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|")


def write_tables(rows: list[dict], out: Path, meta: dict) -> None:
    """JSON and Markdown of the rows so far (rewritten after every row: a stopped run keeps them)."""
    add_blender_ratios(rows)
    table = "\n".join([TABLE_HEADER] + [format_row(r) for r in rows])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    out.with_suffix(".md").write_text(f"# Extraction and clean-up: whole, faithful, fast\n\n{meta}\n\n{table}\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meshes", nargs="+", default=DEFAULT_MESHES)
    parser.add_argument("--resolutions", nargs="+", type=int, default=[512])
    parser.add_argument("--samples", type=int, default=300_000, help="surface samples per mesh for the metrics")
    parser.add_argument("--methods", nargs="+", default=["log3d", "log3d-vae", "blender-voxel"],
                        choices=[*METHODS, "blender-voxel"])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "cleanup.json")
    args = parser.parse_args()
    blender = default_methods()["blender-voxel"]
    config = MetricsConfig(num_samples=args.samples, sharp_samples=args.samples // 5)
    for mode in {METHODS[m][0] for m in args.methods if m in METHODS}:  # compile the kernels, load the network
        remesh(load_mesh(REPO / "examples" / "spot.obj"), RemeshOptions(resolution=64, mode=mode))
        remesh(open_sheet(), RemeshOptions(resolution=64, mode=mode))  # and the open-boundary steps' kernels
    meta = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d %H:%M"),
            "metrics": f"model.metrics, {args.samples} outer-surface samples, point-to-surface",
            "command": "python bench/bench_cleanup.py " + " ".join(sys.argv[1:])}
    rows: list[dict] = []
    print(TABLE_HEADER)
    for n in args.resolutions:  # every mesh at the first N before any at the next: a stopped run still has whole tables
        for name in args.meshes:
            gt = load_mesh(SHARED_MESHES / name)
            inp = boundary_stats(gt)
            gt_area = surface_area(gt)
            gt_visible = visible_area(gt)
            for method in args.methods:
                row = {"mesh": name, "kind": "closed" if inp["boundary_edges"] == 0 else "open", "resolution": n,
                       "method": method, "input_pieces": inp["pieces"], "input_loops": inp["loops"],
                       "input_boundary_length": inp["boundary_length"]}
                try:
                    out, seconds, timings = run_method(method, gt, n, blender)
                    metrics_start = time.perf_counter()
                    m = compute_metrics(gt, out, config)
                    row["metrics_seconds"] = time.perf_counter() - metrics_start
                    stats = boundary_stats(out)
                    row.update(CD=m["CD"], F1_0001=m["F1@0.001"], F1_001=m["F1@0.01"], area_ratio=surface_area(out) / gt_area,
                               area_vs_visible=surface_area(out) / gt_visible, pieces=stats["pieces"],
                               boundary_loops=stats["loops"], boundary_edges=stats["boundary_edges"],
                               boundary_length_ratio=(stats["boundary_length"] / inp["boundary_length"]
                                                      if inp["boundary_length"] > 0 else None),
                               nonmanifold_edges=stats["nonmanifold_edges"], faces=out.num_faces, seconds=seconds,
                               timings=timings)
                    if timings:
                        row["cleanup_share"] = timings.get("cleanup", 0.0) / max(sum(timings.values()), 1e-9)
                    row["whole"] = whole(row, inp)
                except Exception as exc:  # a failure is a row, never a silent skip
                    row["error"] = f"{type(exc).__name__}: {exc}"
                rows.append(row)
                print(format_row(row), f"(metrics {row.get('metrics_seconds', 0.0):.0f} s)", flush=True)
                write_tables(rows, args.out, meta)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
