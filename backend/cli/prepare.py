"""`log3d prepare`: the training cache of UBlocks."""

from __future__ import annotations

import argparse
from pathlib import Path

from backend.prepare import AUGMENTATIONS, PrepareOptions, prepare


def _resolutions(values: list[str]) -> tuple[int, ...]:
    out: list[int] = []
    for v in values:
        out.extend(int(x) for x in str(v).split(",") if x.strip())
    return tuple(dict.fromkeys(out))


def _cmd_prepare(args: argparse.Namespace) -> int:
    mesh_dir = args.mesh_dir
    cache_dir = args.out_dir
    if cache_dir is None:  # `log3d prepare --synthetic K OUT` : the only positional is the output
        mesh_dir, cache_dir = None, mesh_dir
    if cache_dir is None:
        raise ValueError("give an output folder")
    options = PrepareOptions(
        resolutions=_resolutions(args.resolution or ["256"]), augment=tuple(args.augment or ()),
        copies=args.copies, keep_original=not args.no_original, scale_range=(args.scale_range[0], args.scale_range[1]), seed=args.seed,
        workers=args.workers, synthetic=args.synthetic, retry_failed=args.retry_failed,
    )
    report = prepare(mesh_dir, cache_dir, options, progress=not args.quiet)
    print(f"{cache_dir}: {report.written} shapes written, {report.skipped} already done, "
          f"{len(report.failures)} failed; {report.total_entries} shapes in the cache ({report.seconds:.1f} s)")
    if report.failures:
        print("failed:")
        for f in report.failures:
            print(f"  {f.source} ({f.id}): {f.error}")
    return 0


def add_prepare_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="turn a folder of meshes into a training cache of UBlocks")
    p.add_argument("mesh_dir", type=Path, help="folder of meshes (searched recursively); with --synthetic alone, the output folder")
    p.add_argument("out_dir", type=Path, nargs="?", default=None, help="cache folder (created; re-running resumes)")
    p.add_argument("--resolution", "-n", action="append", metavar="N[,N...]",
                   help="grid resolution(s); repeat or comma-separate for several per shape (default 256)")
    p.add_argument("--augment", nargs="*", choices=AUGMENTATIONS, default=[],
                   help="augmented copies: random rotation and/or scale")
    p.add_argument("--copies", type=int, default=1, help="augmented copies per shape and resolution, besides the original (default 1)")
    p.add_argument("--no-original", action="store_true", help="with --augment: keep only the augmented copies")
    p.add_argument("--scale-range", type=float, nargs=2, default=(0.6, 1.0), metavar=("MIN", "MAX"),
                   help="scale augmentation: longest side as a fraction of the cube (default 0.6 1.0)")
    p.add_argument("--synthetic", type=int, default=0, metavar="K", help="also add K generated shapes (backend.synthetic)")
    p.add_argument("--seed", type=int, default=0, help="seed of the augmentations and generated shapes")
    p.add_argument("--workers", "-j", type=int, default=0, help="worker processes (default: one per core; 1: in-process)")
    p.add_argument("--retry-failed", action="store_true", help="run again the tasks that failed last time")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_prepare)
