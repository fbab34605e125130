"""Direct LoG3D round trip vs Blender's Voxel Remesh: time per stage, the whole process, peak memory
and the output's quality.

    .venv/bin/python bench/bench_pipeline.py [--meshes stanford-bunny.obj spot.obj ...]
        [--resolutions 256 512 1024] [--blender-max-resolution 1024] [--allocators tuned system]

By default every mesh of ../shared/meshes (open and small ones included) at N = 256, 512, 1024.
``process s`` is the whole ``log3d remesh IN OUT -n N`` command as a user runs it — interpreter
start-up, imports, kernel loading, reading, remeshing, writing — timed from outside, beside
Blender's whole worker process (start-up, importing bpy, the operator, handing the mesh back). The
quality columns are measured on the timed child's result after its clocks and peak memory are read:
CD against the input (the metrics' protocol, 50,000 outer-surface samples; up to
``--cd-max-resolution``, 512 by default), pieces, boundary loops and edges of three or more faces
(after welding) against the input's.

Every (method, mesh, N) runs in a fresh child process, so its peak resident memory is its own
(read with wait4). Blender runs at voxel size = longest extent / N, and only its remesh operator is
timed. Ours is timed twice: the pipeline alone (``LoG3D s``: the loaded mesh to the finished mesh,
stage by stage) and the whole job as a user runs it (``load→save s``: reading the file, the
pipeline, writing a binary PLY); the ratio is the whole job's against Blender's operator alone. The two methods alternate per case, so machine noise
hits both alike. ``--allocators``: LoG3D's memory policy (``model.memory``, ``LOG3D_ALLOCATOR``):
``tuned`` (what ``log3d`` applies: freed arrays reused, no huge pages) and/or ``system`` (the
platform's), one row each, beside the same Blender run. Prints a Markdown table; writes bench/results/pipeline.json and pipeline.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_MESHES = REPO.parent / "shared" / "meshes"
RESULTS = REPO / "bench" / "results"
MESH_SUFFIXES = (".obj", ".ply", ".stl", ".off", ".glb", ".gltf")


def default_meshes() -> list[str]:
    return sorted(p.name for p in SHARED_MESHES.iterdir() if p.suffix.lower() in MESH_SUFFIXES) if SHARED_MESHES.is_dir() else []


def _child_ours(path: str, resolution: int, cleanup: str, measure: str = "none") -> dict:
    import tempfile

    from model.cleanup import CleanupOptions
    from model.mesh import load_mesh, save_mesh
    from model.pipeline import RemeshOptions, remesh

    import resource

    options = CleanupOptions() if cleanup == "default" else CleanupOptions.none()
    remesh(load_mesh(path), RemeshOptions(resolution=64, cleanup=options))  # load the compiled kernels before timing
    cpu_start: dict[str, float] = {}
    stage_cpu: dict[str, float] = {}

    def cpu_clock(stage: str, fraction: float) -> None:  # CPU seconds of this process per stage
        usage = resource.getrusage(resource.RUSAGE_SELF)
        now = usage.ru_utime + usage.ru_stime
        if fraction == 0.0:
            cpu_start[stage] = now
        elif fraction == 1.0 and stage in cpu_start:
            stage_cpu[stage] = stage_cpu.get(stage, 0.0) + now - cpu_start.pop(stage)

    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        mesh = load_mesh(path)
        loaded = time.perf_counter()
        result = remesh(mesh, RemeshOptions(resolution=resolution, cleanup=options), progress=cpu_clock)
        remeshed = time.perf_counter()
        save_mesh(result.mesh, Path(folder) / "out.ply")
        saved = time.perf_counter()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # before any measuring of the result
    shape = quality(mesh, result.mesh, measure) if measure != "none" else {}
    return {"peak_rss_mb": peak_mb, "quality": shape, "seconds": remeshed - loaded, "load_seconds": loaded - start, "save_seconds": saved - remeshed,
            "total_seconds": saved - start, "stages": result.timings, "stage_cpu_seconds": stage_cpu,
            "cores_busy": {stage: stage_cpu[stage] / wall for stage, wall in result.timings.items() if wall > 0 and stage in stage_cpu},
            "faces": result.mesh.num_faces,
            "vertices": result.mesh.num_vertices, "blocks": result.num_blocks}


def _child_blender(path: str, resolution: int) -> dict:
    from backend.blender_voxel import voxel_remesh, voxel_size_for
    from model.mesh import load_mesh

    mesh = load_mesh(path)
    result = voxel_remesh(mesh, voxel_size_for(mesh, resolution))
    return {"seconds": result.remesh_seconds, "total_seconds": result.total_seconds, "faces": int(result.mesh.num_faces), "vertices": int(result.mesh.num_vertices),
            "worker_peak_rss_mb": result.peak_rss_bytes / 2**20}


def _run(cmd: list[str], timeout: float, allocator: str = "tuned") -> tuple[str, float] | str:
    """Run ``cmd`` from the repository: (its stdout, its wall seconds), or an error message."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO), "LOG3D_ALLOCATOR": allocator})
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return f"timed out after {timeout:.0f} s"
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        return (err.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
    return out, seconds


def run_case(method: str, path: Path, resolution: int, timeout: float, cleanup: str = "default",
             measure: str = "none", allocator: str = "tuned") -> dict:
    """Run one case in a child process; returns its result plus the child's peak RSS (and, for
    ours, the output's quality: ``measure`` full (CD and topology), topology, or none)."""
    done = _run([sys.executable, str(Path(__file__).resolve()), "--child", method, str(path), str(resolution), cleanup,
                 measure], timeout, allocator)
    if isinstance(done, str):
        return {"error": done}
    # communicate() has reaped the child; its rusage is folded into RUSAGE_CHILDREN, so the peak of
    # this child alone comes from the line it printed itself (ru_maxrss of its own process).
    return json.loads(done[0].strip().splitlines()[-1])


def run_process(path: Path, resolution: int, out: Path, timeout: float, cleanup: str, allocator: str = "tuned") -> dict:
    """The whole ``log3d remesh`` command, timed from outside."""
    cmd = [sys.executable, "-m", "backend.cli", "remesh", str(path), str(out), "-n", str(resolution), "-q"]
    done = _run(cmd + (["--raw"] if cleanup == "raw" else []), timeout, allocator)
    return {"error": done} if isinstance(done, str) else {"seconds": done[1]}


def topology(mesh) -> dict:
    """Pieces, boundary loops and edges of three or more faces, welded first (bench_cleanup's)."""
    sys.path.insert(0, str(REPO / "bench"))
    from bench_cleanup import boundary_stats

    stats = boundary_stats(mesh)
    return {"pieces": stats["pieces"], "loops": stats["loops"], "edges_3plus": stats["nonmanifold_edges"]}


def quality(gt, out, measure: str = "full") -> dict:
    """The output's topology and, for ``full``, its CD against the input (the metrics' protocol:
    outer-surface samples, 50,000 per mesh) and the same without the input's samples enclosed by
    another of its bodies (``CD_visible``): what the remesh did to the shape. Measured in the timed
    child after its clocks and peak memory are read (no second load of a large result)."""
    from dataclasses import replace

    import numpy as np

    from model.contour import InputTopology
    from model.metrics import MetricsConfig, VisibilityConfig, compute_metrics

    shape = topology(out)
    if measure == "full":
        config = MetricsConfig(num_samples=50_000, sharp_samples=10_000)
        shape["CD"] = compute_metrics(gt, out, config)["CD"]
        # the surface that can be seen: an input of several bodies is also scored without its samples
        # that have solid on both sides (the union has no walls there); for one body the column repeats
        # the protocol's CD (drop_enclosed can still move it where a body folds onto itself within a
        # pixel: cow 2.246e-5 against 2.295e-5 at 256, bench/results/union_quality_one_body.md)
        several = len(np.unique(InputTopology.of(gt.vertices, gt.faces).piece)) > 1
        shape["CD_visible"] = compute_metrics(gt, out, replace(config, visibility=VisibilityConfig(drop_enclosed=True)))["CD"] if several else shape["CD"]
    return shape


def child_main(method: str, path: str, resolution: int, cleanup: str, measure: str) -> None:
    import resource

    if method == "log3d":  # what the log3d command does first (LOG3D_ALLOCATOR picks the policy)
        from model.memory import configure_allocator

        configure_allocator()

    result = _child_ours(path, resolution, cleanup, measure) if method == "log3d" else _child_blender(path, resolution)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # Blender runs in its own worker process: its peak is the worker's, not this launcher's.
    result["peak_rss_mb"] = (result.pop("worker_peak_rss_mb", None) or result.get("peak_rss_mb")
                             or max(peak_kb, children_kb) / 1024.0)
    print(json.dumps(result))


def format_table(rows: list[dict]) -> str:
    lines = ["| mesh | N | allocator | process s | LoG3D load→save s | LoG3D s | extract | cleanup | LoG3D peak MB | LoG3D faces | "
             "Blender s | Blender process s | Blender peak MB | Blender faces | ratio (load→save) / Blender | ratio process / Blender process | "
             "CD ×1e3 | CD visible ×1e3 | pieces / input | loops / input | 3+-face edges / input |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    nan = float("nan")
    for r in rows:
        o, b, proc = r["log3d"], r.get("blender"), r.get("process", {})
        q, i = r.get("quality", {}), r.get("input", {})
        st = o.get("stages", {})
        process = f"{proc['seconds']:.2f}" if "seconds" in proc else proc.get("error", "")
        ours = (f"{o.get('total_seconds', nan):.2f} | {o['seconds']:.2f} | {st.get('extract', 0):.2f} | {st.get('cleanup', 0):.2f} | "
                f"{o['peak_rss_mb']:.0f} | {o['faces']:,}") if "error" not in o else f"error: {o['error']} | | | | |"
        if b is None:
            theirs = "not run | | | | | "
        elif "error" in b:
            theirs = f"error: {b['error']} | | | | | "
        else:
            ratio = o.get("total_seconds", nan) / b["seconds"] if "error" not in o else nan
            ratio_process = proc.get("seconds", nan) / b.get("total_seconds", nan)
            theirs = (f"{b['seconds']:.2f} | {b.get('total_seconds', nan):.2f} | {b['peak_rss_mb']:.0f} | {b['faces']:,} | "
                      f"{ratio:.2f} | {ratio_process:.2f}")
        if "pieces" in q:
            cd = " | ".join(f"{1e3 * q[key]:.4g}" if key in q else "—" for key in ("CD", "CD_visible"))
            shape = (f"{cd} | {q['pieces']} / {i.get('pieces', '?')} | {q['loops']} / {i.get('loops', '?')} | "
                     f"{q['edges_3plus']} / {i.get('edges_3plus', '?')}")
        else:
            shape = f"{q.get('error', 'not measured')} | | | |"
        lines.append(f"| {r['mesh']} | {r['resolution']} | {r.get('allocator', 'system')} | {process} | {ours} | {theirs} | {shape} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs=5, metavar=("METHOD", "PATH", "N", "CLEANUP", "MEASURE"), help=argparse.SUPPRESS)
    parser.add_argument("--cd-max-resolution", type=int, default=512,
                        help="measure CD up to this N (topology at every N): the metrics' visibility test "
                             "on a 1024³ result takes minutes on two cores")
    parser.add_argument("--cleanup", choices=("default", "raw"), default="default",
                        help="LoG3D with its default clean-up, or the seed's raw ε-surface")
    parser.add_argument("--meshes", nargs="+", default=None, help="file names in ../shared/meshes (or paths); default: all of them")
    parser.add_argument("--resolutions", nargs="+", type=int, default=[256, 512, 1024])
    parser.add_argument("--blender-max-resolution", type=int, default=1024,
                        help="skip Blender above this N (its 2048³ runs take minutes per mesh)")
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds per case")
    parser.add_argument("--allocators", nargs="+", choices=("tuned", "system"), default=["tuned"],
                        help="LoG3D's memory policies to run, a row each (model.memory; default: tuned, as log3d runs)")
    parser.add_argument("--out", type=Path, default=RESULTS / "pipeline.json")
    args = parser.parse_args()
    if args.child:
        child_main(args.child[0], args.child[1], int(args.child[2]), args.child[3], args.child[4])
        return 0

    import tempfile

    from model.mesh import load_mesh

    run_case("log3d", REPO / "examples" / "spot.obj", 64, args.timeout, args.cleanup, "full")  # compiles and caches the kernels
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.meshes or default_meshes():
            path = Path(name) if Path(name).exists() else SHARED_MESHES / name
            source = topology(load_mesh(path))
            for n in args.resolutions:
                measure = "full" if n <= args.cd_max_resolution else "topology"
                case = []
                for allocator in args.allocators:
                    row = {"mesh": path.name, "resolution": n, "cleanup": args.cleanup, "input": source,
                           "allocator": allocator,
                           "log3d": run_case("log3d", path, n, args.timeout, args.cleanup, measure, allocator)}
                    output = Path(scratch) / f"out-{n}.ply"
                    row["process"] = run_process(path, n, output, args.timeout, args.cleanup, allocator)
                    row["quality"] = row["log3d"].get("quality", {"error": "no output"})
                    output.unlink(missing_ok=True)
                    case.append(row)
                if n <= args.blender_max_resolution:
                    blender = run_case("blender", path, n, args.timeout)
                    for row in case:
                        row["blender"] = blender
                rows.extend(case)
                for line in format_table(case).splitlines()[2:]:
                    print(line, flush=True)
    table = format_table(rows)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores", "platform": platform.platform(),
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M"),
            "command": "python bench/bench_pipeline.py " + " ".join(sys.argv[1:])}
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    args.out.with_suffix(".md").write_text(f"# Direct round trip vs Blender Voxel Remesh\n\n{meta}\n\n{table}\n")
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
