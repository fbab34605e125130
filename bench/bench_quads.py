"""Quads in direct mode beside Blender's Voxel Remesh at the same voxel size (issue 31).

    .venv/bin/python bench/bench_quads.py [--resolution 512] [--samples 200000] [--meshes spot.obj ...]

On every closed mesh of ../shared/meshes (MANIFEST: no boundary): direct mode at N with quads (the
default) and with ``polygons="triangles"``, and Blender's Voxel Remesh (bpy, OpenVDB) at our voxel
size (the longest side over N − 10: the grid keeps five voxels of margin on each side). Per mesh:
polygons, quads, quad share (quads / polygons) and triangles, the Chamfer distance of each against
the input (the same samples protocol for all: ``model.metrics``, ``--samples`` points), and the
seconds. The quad and the triangle outputs are the same triangles grouped differently, so their CDs
differ only by where the samples fall. Prints a table; writes bench/results/quads_<N>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backend.blender_voxel import BlenderRemeshError, BlenderUnavailableError, voxel_remesh  # noqa: E402
from model import RemeshOptions, load_mesh, remesh  # noqa: E402
from model.grid import TRUNCATION_VOXELS  # noqa: E402
from model.mesh import used_vertices  # noqa: E402
from model.metrics import MetricsConfig, compute_metrics  # noqa: E402

MESHES = REPO.parent / "shared" / "meshes"
RESULTS = REPO / "bench" / "results"


def closed_meshes() -> list[str]:
    """The MANIFEST's meshes with no boundary (closed; some are non-manifold)."""
    rows = [line.split("\t") for line in (MESHES / "MANIFEST.tsv").read_text().splitlines()[1:] if line.strip()]
    closed = []
    for name, _, _, kind, *_ in rows:
        kind = kind.lower()
        if "boundary=0" in kind or (kind.startswith("closed") or ", closed" in kind) and "open" not in kind:
            closed.append(name)
    return closed


def row_for(name: str, n: int, samples: int) -> list[dict]:
    mesh = load_mesh(MESHES / name)
    used = used_vertices(mesh)
    voxel = float((used.max(axis=0) - used.min(axis=0)).max()) / (n - 2 * (TRUNCATION_VOXELS + 1))
    config = MetricsConfig(num_samples=samples, sharp_samples=0)
    rows = []
    for polygons in ("quads", "triangles"):
        start = time.perf_counter()
        out = remesh(mesh, RemeshOptions(resolution=n, polygons=polygons)).mesh
        seconds = time.perf_counter() - start
        quads, triangles = out.num_quads, len(out.faces) - 2 * out.num_quads
        cd = compute_metrics(mesh, out, config)["CD"]
        rows.append({"mesh": name, "method": f"log3d direct ({polygons})", "voxel_size": voxel, "polygons": quads + triangles,
                     "quads": quads, "triangles": triangles, "quad_share": quads / (quads + triangles), "CD": cd,
                     "seconds": round(seconds, 2)})
    try:
        blender = voxel_remesh(mesh, voxel)
        cd = compute_metrics(mesh, blender.mesh, config)["CD"]
        rows.append({"mesh": name, "method": f"Blender {blender.blender_version} Voxel Remesh", "voxel_size": voxel,
                     "polygons": blender.num_polygons, "quads": blender.num_quads,
                     "triangles": blender.num_polygons - blender.num_quads,
                     "quad_share": blender.num_quads / max(1, blender.num_polygons), "CD": cd,
                     "seconds": round(blender.remesh_seconds, 2)})
    except (BlenderUnavailableError, BlenderRemeshError) as exc:
        rows.append({"mesh": name, "method": "Blender Voxel Remesh", "error": str(exc)})
    quads_cd, tris_cd = rows[0]["CD"], rows[1]["CD"]
    rows[0]["CD_vs_triangles"] = quads_cd / tris_cd
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| mesh | method | polygons | quads | quad share | triangles | CD ×1e6 | CD quads / triangles | seconds |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['mesh']} | {r['method']} | {r['error']} | | | | | | |")
            continue
        ratio = f"{r['CD_vs_triangles']:.3f}" if "CD_vs_triangles" in r else ""
        lines.append(f"| {r['mesh']} | {r['method']} | {r['polygons']:,} | {r['quads']:,} | {r['quad_share']:.3f} | "
                     f"{r['triangles']:,} | {r['CD'] * 1e6:.3f} | {ratio} | {r['seconds']} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--samples", type=int, default=200_000)
    parser.add_argument("--meshes", nargs="+", default=None)
    args = parser.parse_args()
    rows: list[dict] = []
    for name in args.meshes or closed_meshes():
        mesh_rows = row_for(name, args.resolution, args.samples)
        rows += mesh_rows
        print("\n".join(table(mesh_rows).splitlines()[2:]), flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    head = (f"# Quads: direct mode at N={args.resolution} beside Blender's Voxel Remesh at the same voxel size "
            f"(bench/bench_quads.py)\n\n{os.cpu_count()} cores, commit {commit}, {time.strftime('%Y-%m-%d %H:%M')}; "
            f"CD against the input, {args.samples:,} samples (model.metrics); closed meshes of ../shared/meshes; "
            "voxel size = longest side / (N − 10). Quad share = quads / polygons.\n\n")
    text = head + table(rows) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"quads_{args.resolution}.md").write_text(text)
    (RESULTS / f"quads_{args.resolution}.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
