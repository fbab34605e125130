"""The engines' kernels side by side on this CPU: numba against torch-on-CPU, kernel by kernel.

    .venv/bin/python bench/bench_engines.py [--meshes stanford-bunny.obj large_turbineblade_midsub1.ply]
        [--resolutions 256 512] [--repeats 3]

Why: the torch engine exists for GPUs; where torch on the CPU is as fast as numba for a kernel, the
project should keep one implementation of it (the issue "One pipeline over two engines"). Each
kernel is timed on the same input in one process, alternating engines per repeat so that machine
noise hits both alike; the best of ``--repeats`` is reported. Kernels:

* ``udf``: narrow-band UDF blocks of the mesh (torch in float64, which equals numba bit for bit on
  the CPU, and in float32, the CUDA setting);
* ``gather``: every active UBlock padded to 12³ (the encoder's input; the torch engine gathers it
  ``CHUNK_BLOCKS`` at a time);
* ``pad_average``: those chunks averaged back into the field.

Prints a Markdown table and writes bench/results/engines_cpu.json and .md.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED_MESHES = REPO.parent / "shared" / "meshes"
RESULTS = REPO / "bench" / "results"


def best_of(repeats: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(mesh_path: Path, resolution: int, repeats: int) -> list[dict]:
    import torch

    from model.engine import NumbaEngine
    from model.gpu.engine import TorchEngine
    from model.grid import CHUNK_BLOCKS, unit_margin
    from model.mesh import fit_unit_cube, load_mesh, used_vertices
    from model.ublocks import iter_chunks, pad_average

    mesh = load_mesh(mesh_path)
    unit = fit_unit_cube(used_vertices(mesh), unit_margin(resolution)).to_unit(mesh.vertices)
    engines = {"numba": NumbaEngine(), "torch-f64": TorchEngine("cpu", torch.float64),
               "torch-f32": TorchEngine("cpu", torch.float32)}
    rows = []
    fields = {}
    for name, engine in engines.items():
        with engine.session():
            seconds = best_of(repeats, lambda: fields.__setitem__(name, engine.udf(unit, mesh.faces, resolution, lambda f: None)))
        rows.append({"kernel": "udf", "engine": name, "seconds": seconds})
    for name in ("numba", "torch-f64"):
        engine, field = engines[name], fields[name]
        with engine.session():
            gathered = engine.all_ublocks(field, CHUNK_BLOCKS)
            gather = best_of(repeats, lambda: engine.all_ublocks(field, CHUNK_BLOCKS))
            average = best_of(repeats, lambda: pad_average(iter_chunks(gathered, CHUNK_BLOCKS), resolution,
                                                           gathered.coords, None, engine.assembler))
        rows.append({"kernel": "gather", "engine": name, "seconds": gather})
        rows.append({"kernel": "pad_average", "engine": name, "seconds": average})
    blocks = int(engines["numba"].active_coords(fields["numba"]).shape[0])
    for row in rows:
        row.update(mesh=mesh_path.name, resolution=resolution, faces=mesh.num_faces, ublocks=blocks)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| mesh | N | UBlocks | kernel | numba s | torch-f64 s | torch-f32 s | torch-f64 / numba |",
             "|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r["mesh"], r["resolution"], r["kernel"]) for r in rows}, key=lambda k: (k[0], k[1], ["udf", "gather", "pad_average"].index(k[2])))
    for mesh, n, kernel in keys:
        got = {r["engine"]: r for r in rows if (r["mesh"], r["resolution"], r["kernel"]) == (mesh, n, kernel)}
        f32 = f"{got['torch-f32']['seconds']:.3f}" if "torch-f32" in got else "—"
        lines.append(f"| {mesh} | {n} | {got['numba']['ublocks']} | {kernel} | {got['numba']['seconds']:.3f} | "
                     f"{got['torch-f64']['seconds']:.3f} | {f32} | {got['torch-f64']['seconds'] / got['numba']['seconds']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import os

    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meshes", nargs="+", default=["stanford-bunny.obj", "large_turbineblade_midsub1.ply"])
    parser.add_argument("--resolutions", nargs="+", type=int, default=[256, 512])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "engines_cpu.json")
    args = parser.parse_args(argv)

    from model.cpu import cpu_features

    measure(SHARED_MESHES / "spot.obj", 64, 1)  # compile the numba kernels before any clock runs
    rows = []
    for name in args.meshes:
        for n in args.resolutions:
            rows.extend(measure(SHARED_MESHES / name, n, args.repeats))
            print(table(rows), flush=True)
    meta = {"cpu": cpu_features(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "repeats": args.repeats,
            "command": "python bench/bench_engines.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    args.out.with_suffix(".md").write_text(f"# The engines' kernels on the CPU\n\n`{meta['command']}` on {meta['cpu']['model']} "
                                           f"({meta['cores']} cores, torch {meta['torch']} with {meta['torch_threads']} threads); "
                                           f"best of {args.repeats}.\n\n{table(rows)}\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
