"""`log3d batch`: a folder of meshes through `log3d serve` (resumable)."""

from __future__ import annotations

import argparse
from pathlib import Path

from backend.batch import BatchConfig, run_batch
from backend.cli import arguments


def _cmd_batch(args: argparse.Namespace) -> int:
    import dataclasses


    config = BatchConfig(cleanup=dataclasses.asdict(arguments.cleanup_from_args(args)), in_dir=args.in_dir, out_dir=args.out_dir, resolution=args.resolution, mode=args.mode,
                         voxel_size=args.voxel_size, polygons="triangles" if args.triangles else "quads",
                         refine_steps=args.refine_steps,
                         fmt=args.format, host=args.host, port=args.port, connection_file=args.connection_file,
                         device=args.device, checkpoint=args.checkpoint, show_progress=not args.quiet)
    report = run_batch(config)
    print(report.summary())
    return 1 if report.failed else 0


def add_batch_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("batch", help="remesh every mesh of a folder through `log3d serve` (resumable)")
    p.add_argument("in_dir", type=Path, help="folder of meshes (obj, ply, stl, off, glb, gltf; not recursive)")
    p.add_argument("out_dir", type=Path, help="folder for the results; existing outputs are skipped")
    arguments.add_grid_arguments(p)
    arguments.add_refine_argument(p)
    arguments.add_surface_arguments(p)
    p.add_argument("--format", choices=("ply", "obj", "stl", "off", "glb"), default="ply", help="output format")
    arguments.add_server_arguments(p, "server address (default 127.0.0.1)", "server port (default {port})",
                         "the server's connection file (default: the one `log3d serve` wrote for --port)")
    arguments.add_network_arguments(p, "device for a server this command starts", "LoG-VAE weights for a server this command starts")
    arguments.add_quiet_argument(p, "no progress bar")

    arguments.add_cleanup_arguments(p)
    p.set_defaults(func=_cmd_batch)
