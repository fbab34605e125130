"""`log3d remesh`: one file through the pipeline, with a clock per stage."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from backend.cli import arguments
from model.engine import ENGINES


def _cmd_remesh(args: argparse.Namespace) -> int:
    from model import RemeshOptions, load_mesh, remesh, save_mesh

    options = RemeshOptions(resolution=args.resolution, mode=args.mode, chunk_blocks=args.chunk_blocks,
                            device=args.device, checkpoint=args.checkpoint, cleanup=arguments.cleanup_from_args(args),
                            engine=args.engine, voxel_size=args.voxel_size, refine_steps=args.refine_steps,
                            polygons="triangles" if args.triangles else "quads").validate()
    start = time.perf_counter()
    mesh = load_mesh(args.input)
    load_s = time.perf_counter() - start
    bars = arguments.StageBars(enabled=not args.quiet)
    try:
        result = remesh(mesh, options, progress=bars)
    finally:
        bars.close()
    start = time.perf_counter()
    save_mesh(result.mesh, args.output)
    save_s = time.perf_counter() - start
    timings = {"load": load_s, **result.timings, "save": save_s}
    blocks = f"blocks={result.num_blocks} " if result.num_blocks else ""  # no field: the input was contoured
    quads = result.mesh.num_quads
    shape = f"{quads} quads + {result.mesh.num_faces - 2 * quads} triangles" if quads else f"{result.mesh.num_faces} triangles"
    print(f"{args.input} -> {args.output}: N={result.resolution} mode={options.mode} "
          f"{blocks}faces {mesh.num_faces} -> {shape}")
    for stage, seconds in timings.items():
        print(f"  {stage:<12} {seconds:8.3f} s")
    print(f"  {'total':<12} {sum(timings.values()):8.3f} s")
    if result.peak_gpu_bytes is not None:
        print(f"  {'peak GPU':<12} {result.peak_gpu_bytes / 2**30:8.2f} GiB")
    return 0


def add_remesh_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("remesh", help="remesh one file through the LoG3D representation")
    p.add_argument("input", type=Path, help="mesh file (obj, ply, stl, off, glb)")
    p.add_argument("output", type=Path, help="output mesh file; the format follows the extension")
    arguments.add_grid_arguments(p)
    arguments.add_refine_argument(p)
    arguments.add_surface_arguments(p)
    arguments.add_chunk_argument(p)
    arguments.add_network_arguments(p, "cpu, cuda or auto (the network's device, and the stages' with the torch engine)",
                          "LoG-VAE weights (for --mode vae)")
    p.add_argument("--engine", choices=ENGINES, default="auto",
                   help="numba: geometry stages on the CPU; torch: every stage on --device; auto: torch when --device resolves to CUDA")
    arguments.add_quiet_argument(p)
    arguments.add_cleanup_arguments(p)
    p.set_defaults(func=_cmd_remesh)
