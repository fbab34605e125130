"""`log3d synth`: the procedural training shapes."""

from __future__ import annotations

import argparse
from pathlib import Path

from backend.synthetic import FAMILIES, make_shape, shape_family


def _cmd_synth(args: argparse.Namespace) -> int:
    from collections import Counter

    from model.mesh import save_mesh

    if args.count < 0 or args.start < 0:
        raise ValueError("--count and --start must be >= 0")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    counts: Counter[str] = Counter()
    index, written = args.start, 0
    while written < args.count:
        if args.family is None or shape_family(args.seed, index) == args.family:
            name, mesh = make_shape(args.seed, index)
            save_mesh(mesh, args.out_dir / f"{name}.{args.format}")
            counts[shape_family(args.seed, index)] += 1
            written += 1
            if not args.quiet:
                print(f"{name}\t{mesh.num_faces} faces", flush=True)
        index += 1
    print("families: " + ", ".join(f"{f} {counts[f]}" for f in FAMILIES if counts[f]), flush=True)
    return 0


def add_synth_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write procedural training shapes as mesh files (for inspection)")
    p.add_argument("out_dir", type=Path, help="folder for the shapes (created)")
    p.add_argument("--count", "-k", type=int, default=20, help="how many shapes (default 20)")
    p.add_argument("--seed", "-s", type=int, default=0, help="run seed (default 0)")
    p.add_argument("--start", type=int, default=0, help="first shape index (default 0)")
    p.add_argument("--family", choices=FAMILIES, default=None,
                   help="only shapes of this family (the run's own shapes, indices skipped, not redrawn)")
    p.add_argument("--format", choices=("ply", "obj", "stl", "off", "glb"), default="ply", help="file format")
    p.add_argument("--quiet", "-q", action="store_true", help="only the family summary")
    p.set_defaults(func=_cmd_synth)
