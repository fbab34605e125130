"""How long the Blender add-on takes to turn a 1M-triangle remesh result into a Blender object.

A result arrives as numpy arrays (float32 vertices [V, 3] in world space, int32 triangles [F, 3]);
the network thread checks them and derives the edges (``mesh_arrays.MeshArrays.of``). The main
thread moves them into the original's frame (``mesh_io.to_local``), builds the mesh with bulk
copies (``mesh_io.mesh_build_steps``) and places the object next to its original with the same
transform, parent, collections and materials (``results.result_steps``), a step per UI tick; the
longest step is what the UI feels. This times that path on a
closed 1,000,000-triangle torus (500,000 vertices, a remesh result's V ≈ F/2), plus the first
depsgraph evaluation of the new object, and for comparison the plain ``loops.foreach_set
("vertex_index")`` route that ``new_mesh`` avoids. Target: under 2 s on the 2-core CPU.

    .venv/bin/python bench/bench_blender_import.py [--repeats 3] [--triangles 1000000]

Needs bpy (``pip install bpy==5.0.1``, Python 3.11); no torch. Writes bench/results/blender_import.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import bpy  # noqa: E402
import numpy as np  # noqa: E402

from blender_addon import mesh_io, results  # noqa: E402
from blender_addon.mesh_arrays import MeshArrays  # noqa: E402

TARGET_S = 2.0


def torus(triangles: int) -> tuple[np.ndarray, np.ndarray]:
    """A closed torus grid with about ``triangles`` triangles (2 per quad, rings twice the tubes)."""
    tubes = max(3, int(round(math.sqrt(triangles / 4))))
    rings = max(3, int(round(triangles / (2 * tubes))))
    u = np.linspace(0, 2 * np.pi, rings, endpoint=False)
    v = np.linspace(0, 2 * np.pi, tubes, endpoint=False)
    uu, vv = np.meshgrid(u, v, indexing="ij")
    r = 1.0 + 0.35 * np.cos(vv)
    vertices = np.stack([r * np.cos(uu), r * np.sin(uu), 0.35 * np.sin(vv)], -1).reshape(-1, 3).astype(np.float32)
    i, j = np.meshgrid(np.arange(rings), np.arange(tubes), indexing="ij")
    a = i * tubes + j
    b = ((i + 1) % rings) * tubes + j
    c = ((i + 1) % rings) * tubes + (j + 1) % tubes
    d = i * tubes + (j + 1) % tubes
    faces = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    return vertices, faces.astype(np.int32)


def original_object() -> bpy.types.Object:
    """A stand-in for the object that was remeshed: a transform, a parent, two materials."""
    parent = bpy.data.objects.new("Rig", None)
    bpy.context.scene.collection.objects.link(parent)
    parent.location = (1.0, 2.0, 3.0)
    mesh = bpy.data.meshes.new("Source")
    mesh.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [], [(0, 1, 2)])
    for name in ("Red", "Blue"):
        mesh.materials.append(bpy.data.materials.new(name))
    obj = bpy.data.objects.new("Source", mesh)
    bpy.context.scene.collection.objects.link(obj)
    obj.parent = parent
    obj.rotation_euler = (0.3, 0.2, 0.1)
    obj.scale = (1.5, 1.0, 0.8)
    bpy.context.view_layer.update()
    return obj


def clean() -> None:
    for obj in [o for o in bpy.data.objects if o.name.startswith("Source_log3d")]:
        bpy.data.objects.remove(obj)
    for mesh in [m for m in bpy.data.meshes if m.users == 0]:
        bpy.data.meshes.remove(mesh)


def plain_foreach(name: str, vertices: np.ndarray, faces: np.ndarray) -> bpy.types.Mesh:
    """The textbook foreach_set route (corner indices through ``loops``), for comparison."""
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(len(vertices))
    mesh.vertices.foreach_set("co", vertices.ravel())
    mesh.loops.add(faces.size)
    mesh.loops.foreach_set("vertex_index", faces.ravel())
    mesh.polygons.add(len(faces))
    mesh.polygons.foreach_set("loop_start", np.arange(0, faces.size, 3, dtype=np.int32))
    mesh.update(calc_edges=True)
    return mesh


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--triangles", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "blender_import.json")
    args = parser.parse_args()

    world, faces = torus(args.triangles)
    source = original_object()
    snapshot = results.Snapshot.of(source)
    runs: dict[str, list[float]] = {"mesh_arrays": [], "to_local": [], "new_mesh": [], "place_result": [],
                                    "longest_step": [], "first_evaluation": [], "plain_foreach_new_mesh": []}
    for _ in range(args.repeats):
        clean()
        seconds, arrays = timed(lambda: MeshArrays.of(world, faces))
        runs["mesh_arrays"].append(seconds)
        runs["to_local"].append(timed(lambda: mesh_io.to_local(world, snapshot.matrix_world))[0])
        seconds, mesh = timed(lambda: mesh_io.new_mesh("probe", world, faces))
        runs["new_mesh"].append(seconds)
        bpy.data.meshes.remove(mesh)
        steps, start, obj = [], time.perf_counter(), None
        for obj in results.result_steps(snapshot, arrays, False, bpy.context.scene):
            steps.append(time.perf_counter() - start)
            start = time.perf_counter()
        runs["place_result"].append(sum(steps))
        runs["longest_step"].append(max(steps))
        runs["first_evaluation"].append(timed(bpy.context.view_layer.update)[0])
        assert len(obj.data.polygons) == len(faces) and len(obj.data.vertices) == len(world)
        np.testing.assert_allclose(np.array(obj.matrix_world), np.array(source.matrix_world), atol=1e-6)
        seconds, mesh = timed(lambda: plain_foreach("plain", world, faces))
        runs["plain_foreach_new_mesh"].append(seconds)
        bpy.data.meshes.remove(mesh)

    best = {k: min(v) for k, v in runs.items()}
    median = {k: statistics.median(v) for k, v in runs.items()}
    total = median["place_result"] + median["first_evaluation"]
    print(f"Blender {bpy.app.version_string}, {len(faces):,} triangles, {len(world):,} vertices, "
          f"{os.cpu_count()} CPU cores; best / median of {args.repeats}")
    print(f"{'step':<28}{'best s':>10}{'median s':>10}")
    labels = {"mesh_arrays": "edges (network thread)", "to_local": "world -> local (numpy)",
              "new_mesh": "mesh_io.new_mesh (with edges)", "place_result": "results.result_steps (main thread)",
              "longest_step": "longest step (one UI tick)", "first_evaluation": "first depsgraph evaluation",
              "plain_foreach_new_mesh": "plain loops.foreach_set"}
    for key, label in labels.items():
        print(f"{label:<28}{best[key]:>10.3f}{median[key]:>10.3f}")
    print(f"{'import total (median)':<28}{'':>10}{total:>10.3f}   target < {TARGET_S:g} s: "
          f"{'PASS' if total < TARGET_S else 'FAIL'}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "bench/bench_blender_import.py",
        "what": "1M-triangle remesh result -> Blender object next to its original (edges derived off the "
                "main thread; results.result_steps: world->local, mesh build in steps, object, parent/transform, "
                "materials, collections) + first depsgraph evaluation",
        "blender": bpy.app.version_string, "python": platform.python_version(), "machine": platform.machine(),
        "cpu_count": os.cpu_count(), "triangles": int(len(faces)), "vertices": int(len(world)),
        "repeats": args.repeats, "seconds": runs, "best_s": best, "median_s": median,
        "import_total_median_s": total, "target_s": TARGET_S, "pass": total < TARGET_S,
    }, indent=1) + "\n")
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0 if total < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
