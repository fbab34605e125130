"""Side-by-side renders: input / direct / VAE / Blender Voxel Remesh (or any columns), one row per mesh.

A picture catches what a metric averages away (holes, a block lattice, crumbs). Every mesh of a row is
placed in the same frame (the input's bounding box scaled to the unit cube), lit and seen from the
same camera, and rendered headless with Cycles on the CPU (bpy); the tiles are then laid out in one
PNG with matplotlib.

    python bench/render_compare.py OUT.png \\
        --row spot examples/spot.obj out/spot_direct.ply out/spot_vae.ply out/spot_blender.ply \\
        --columns input direct VAE "Blender voxel" [--size 320] [--samples 16]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _frame(vertices: np.ndarray) -> tuple[np.ndarray, float]:
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    return (lo + hi) / 2.0, float((hi - lo).max())


def render_tile(path: Path, center: np.ndarray, extent: float, out_png: Path, size: int, samples: int) -> None:
    """Render one mesh (placed by the row's input frame) to ``out_png``."""
    import bpy

    from model.mesh import load_mesh

    mesh = load_mesh(path)
    verts = ((mesh.vertices - center) / extent).astype(np.float32)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    data = bpy.data.meshes.new("m")
    data.vertices.add(len(verts))
    data.vertices.foreach_set("co", verts.ravel())
    faces = mesh.faces.astype(np.int32)
    data.loops.add(faces.size)
    data.loops.foreach_set("vertex_index", faces.ravel())
    data.polygons.add(len(faces))
    data.polygons.foreach_set("loop_start", np.arange(0, faces.size, 3, dtype=np.int32))
    data.update(calc_edges=True)
    obj = bpy.data.objects.new("m", data)
    scene = bpy.context.scene
    scene.collection.objects.link(obj)
    mat = bpy.data.materials.new("clay")
    mat.use_nodes = True
    bsdf = mat.node_tree.nodes.get("Principled BSDF")
    if bsdf is not None:
        bsdf.inputs["Base Color"].default_value = (0.72, 0.72, 0.75, 1.0)
        bsdf.inputs["Roughness"].default_value = 0.6
    data.materials.append(mat)
    cam_data = bpy.data.cameras.new("cam")
    cam_data.lens = 50
    cam = bpy.data.objects.new("cam", cam_data)
    direction = np.array([1.0, -1.4, 0.8])
    direction /= np.linalg.norm(direction)
    cam.location = tuple(direction * 2.6)
    cam.rotation_mode = "QUATERNION"
    from mathutils import Vector

    cam.rotation_quaternion = (-Vector(tuple(direction))).to_track_quat("-Z", "Y")
    scene.collection.objects.link(cam)
    scene.camera = cam
    for rot, energy in (((math.radians(40), 0, math.radians(30)), 4.0), ((math.radians(-60), 0, math.radians(200)), 1.0)):
        sun = bpy.data.objects.new("sun", bpy.data.lights.new("sun", "SUN"))
        sun.data.energy = energy
        sun.rotation_euler = rot
        scene.collection.objects.link(sun)
    world = bpy.data.worlds.new("w")
    world.use_nodes = True
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.9, 0.9, 0.92, 1.0)
    world.node_tree.nodes["Background"].inputs["Strength"].default_value = 0.3
    scene.world = world
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = False
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.render.film_transparent = False
    scene.render.image_settings.file_format = "PNG"
    scene.render.filepath = str(out_png)
    bpy.ops.render.render(write_still=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--row", nargs="+", action="append", required=True, metavar="NAME MESH...",
                    help="a row: its name, then one mesh per column (the first is the input: it sets the frame)")
    ap.add_argument("--columns", nargs="+", required=True)
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--samples", type=int, default=16)
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from model.mesh import load_mesh

    tmp = Path(tempfile.mkdtemp(prefix="render-"))
    rows = []
    for row in args.row:
        name, paths = row[0], [Path(p) for p in row[1:]]
        if len(paths) != len(args.columns):
            raise SystemExit(f"row {name}: {len(paths)} meshes for {len(args.columns)} columns")
        center, extent = _frame(load_mesh(paths[0]).vertices)
        tiles = []
        for k, p in enumerate(paths):
            png = tmp / f"{name}_{k}.png"
            if p.is_file():
                render_tile(p, center, extent, png, args.size, args.samples)
                tiles.append(png)
            else:
                tiles.append(None)
        rows.append((name, tiles))
    fig, axes = plt.subplots(len(rows), len(args.columns), figsize=(2.6 * len(args.columns), 2.6 * len(rows)),
                             squeeze=False)
    for i, (name, tiles) in enumerate(rows):
        for j, tile in enumerate(tiles):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if tile is not None:
                ax.imshow(plt.imread(tile))
            else:
                ax.text(0.5, 0.5, "no output", ha="center", va="center")
            if i == 0:
                ax.set_title(args.columns[j], fontsize=11)
            if j == 0:
                ax.set_ylabel(name, fontsize=11)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
