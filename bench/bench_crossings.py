"""Open sheets that pass through each other, through VAE mode's extraction of their exact field
(issue 33): two squares crossing at several angles (a few hundredths off the grid's planes, as a real
asset is), and an open tube through a square (a teapot's
spout through its body), at several resolutions.

    .venv/bin/python bench/bench_crossings.py [--angles 20 35 50 70 90] [--resolutions 64 96 128]

Per case: the input's pieces and boundary loops, and for three extractions the pieces, loops, edges
of 3+ faces and area / input —
``contour (decoded rating)``: the field's dual contour (:func:`model.udf_contour.field_contour`)
with the judgements a decoded field gets (``FieldContourOptions()``: the rating before stop 50);
``contour (exact rating)``: the same with an exact field's (``FieldContourOptions.for_clean_field``);
``VAE mode``: the whole extraction the product runs on such a field (flood, clean-up with the
sheets contoured, settling). A case is met when pieces and loops are no more than the input's, no
edge has 3+ faces and the area is within 3 %. Prints a table; writes
bench/results/crossings.json and crossings.md.
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
import trimesh

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_cleanup import boundary_stats  # noqa: E402
from model.mesh import Mesh  # noqa: E402
from model.pipeline import RemeshOptions, extract_surface, mesh_to_field  # noqa: E402
from model.stages import Stages  # noqa: E402
from model.udf_contour import FieldContourOptions, field_contour  # noqa: E402
from tests.test_udf_contour import crossing_squares, tube_through_square  # noqa: E402

RESULTS = REPO / "bench" / "results"


def measure(vertices: np.ndarray, faces: np.ndarray, area_in_voxels: float, inp: dict) -> dict:
    stats = boundary_stats(Mesh(np.asarray(vertices, dtype=np.float64), np.asarray(faces, dtype=np.int64)))
    area = float(trimesh.Trimesh(vertices, faces, process=False).area) / area_in_voxels
    met = (stats["pieces"] <= inp["pieces"] and stats["loops"] <= inp["loops"] and stats["nonmanifold_edges"] == 0
           and abs(area - 1.0) <= 0.03)
    return {"pieces": stats["pieces"], "loops": stats["loops"], "nonmanifold_edges": stats["nonmanifold_edges"],
            "area_ratio": round(area, 4), "met": met}


def cell(r: dict) -> str:
    return f"{r['pieces']} / {r['loops']} / {r['nonmanifold_edges']} / {r['area_ratio']:.3f}{'' if r['met'] else ' ✗'}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--angles", nargs="+", type=float, default=[20, 35, 50, 70, 90])
    parser.add_argument("--resolutions", nargs="+", type=int, default=[64, 96, 128])
    parser.add_argument("--out", type=Path, default=RESULTS / "crossings.json")
    args = parser.parse_args()
    cases = [(f"{a:g}°", crossing_squares(a, 0.017)) for a in args.angles] + [("tube", tube_through_square())]
    rows = []
    for name, sheets in cases:
        inp = boundary_stats(Mesh(np.asarray(sheets.vertices, dtype=np.float64), np.asarray(sheets.faces, dtype=np.int64)))
        for n in args.resolutions:
            field, normalization = mesh_to_field(Mesh(np.asarray(sheets.vertices, dtype=np.float64),
                                                      np.asarray(sheets.faces, dtype=np.int64)), n)
            voxel_area = float(sheets.area) * (normalization.scale * n) ** 2
            row = {"case": name, "N": n, "input_pieces": inp["pieces"], "input_loops": inp["loops"]}
            for key, options in (("decoded_rating", FieldContourOptions()), ("exact_rating", FieldContourOptions.for_clean_field())):
                row[key] = measure(*field_contour(field, options), voxel_area, inp)
            surface = extract_surface(field, None, RemeshOptions(resolution=n, mode="vae"), Stages())
            row["vae_mode"] = measure(surface.vertices, surface.faces, voxel_area, inp)
            rows.append(row)
            print(f"{name} N={n}: {cell(row['decoded_rating'])} | {cell(row['exact_rating'])} | {cell(row['vae_mode'])}", flush=True)
    met = {key: sum(r[key]["met"] for r in rows) for key in ("decoded_rating", "exact_rating", "vae_mode")}
    meta = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d %H:%M"),
            "command": "python bench/bench_crossings.py " + " ".join(sys.argv[1:]), "met": met, "cases": len(rows)}
    lines = ["| case | N | input pieces / loops | contour (decoded rating) | contour (exact rating) | VAE mode |",
             "|---|---:|---:|---|---|---|"]
    lines += [f"| {r['case']} | {r['N']} | {r['input_pieces']} / {r['input_loops']} | {cell(r['decoded_rating'])} | "
              f"{cell(r['exact_rating'])} | {cell(r['vae_mode'])} |" for r in rows]
    lines.append(f"| met | | | {met['decoded_rating']} / {len(rows)} | {met['exact_rating']} / {len(rows)} | "
                 f"{met['vae_mode']} / {len(rows)} |")
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    args.out.with_suffix(".md").write_text(
        "# Open sheets through each other, exact field (bench/bench_crossings.py)\n\n"
        f"{meta}\n\nEach cell: pieces / boundary loops / edges of 3+ faces / area ÷ input's; ✗: more pieces or loops "
        "than the input, an edge of 3+ faces, or the area off by more than 3 %.\n\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
