"""`log3d encode` and `log3d decode`: meshes to latent files and back, a folder at a time."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable

from backend.batch import MESH_EXTENSIONS
from backend.cli import arguments
from backend.latents import FolderReport, decode_file, encode_file, process_device, run_folder, shard_from_env, spawn_workers


def _load(args: argparse.Namespace) -> Any:
    import torch

    from model.autoencode import load_vae

    if args.threads:
        torch.set_num_threads(args.threads)
    return load_vae(args.checkpoint, process_device(args.device))


def _finish(report: FolderReport, args: argparse.Namespace, verb: str) -> int:
    if args.report_json == "-":
        print(json.dumps({"done": report.done, "skipped": report.skipped, "failed": report.failed,
                          "bytes_in": report.bytes_in, "bytes_out": report.bytes_out, "seconds": report.seconds}))
    else:
        print(report.summary(verb))
    return 1 if report.failed else 0


def _argv_without_workers(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--workers":
            skip = True
            continue
        if a.startswith("--workers="):
            continue
        out.append(a)
    return out


def _folder(args: argparse.Namespace, work: Callable[[Any, Path, Path], int], decode: bool, fmt: str, verb: str) -> int:
    """A folder run: this process's shard, or ``--workers`` child processes that split it."""
    if args.workers > 1:
        return _finish(spawn_workers(_argv_without_workers(args.argv), args.workers), args, verb)
    rank, world = shard_from_env(args.shard)
    vae = _load(args)
    report = run_folder(args.input, args.output, lambda s, d: work(vae, s, d), decode=decode, fmt=fmt, rank=rank,
                        world=world, show_progress=not args.quiet)
    return _finish(report, args, verb)


def _cmd_encode(args: argparse.Namespace) -> int:
    if args.input.is_dir():
        return _folder(args, lambda vae, s, d: encode_file(s, d, args.resolution, vae, args.dtype, args.chunk_blocks,
                                                           refine_steps=args.refine_steps),
                       decode=False, fmt="", verb="encoded")
    vae = _load(args)
    size = encode_file(args.input, args.output, args.resolution, vae, args.dtype, args.chunk_blocks,
                       refine_steps=args.refine_steps)
    from model.latent_file import load_latent_file

    item = load_latent_file(args.output)
    print(f"{args.input} -> {args.output}: N={args.resolution}, {item.latents.coords.shape[0]:,} latents "
          f"[{item.latents.coords.shape[0]}, {item.latents.latents.shape[1]}] {args.dtype}, {size / 1024:.1f} KiB "
          f"(input {args.input.stat().st_size / 1024:.1f} KiB)")
    return 0


def _cmd_decode(args: argparse.Namespace) -> int:

    cleanup = arguments.cleanup_from_args(args)
    if args.input.is_dir():
        return _folder(args, lambda vae, s, d: decode_file(s, d, vae, cleanup, args.chunk_blocks),
                       decode=True, fmt=args.format, verb="decoded")
    vae = _load(args)
    size = decode_file(args.input, args.output, vae, cleanup, args.chunk_blocks)
    print(f"{args.input} -> {args.output}: {size / 1024:.1f} KiB")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    arguments.add_network_arguments(p, "cpu, cuda or auto (under torchrun/accelerate: cuda:LOCAL_RANK)",
                          "LoG-VAE weights (default: the shipped ones)")
    arguments.add_chunk_argument(p)
    p.add_argument("--workers", type=int, default=1, help="processes on this machine for a folder (each takes a share)")
    p.add_argument("--shard", default=None, help="RANK/WORLD: this process's share of a folder "
                                                 "(default: RANK and WORLD_SIZE from torchrun/accelerate, else 0/1)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--report-json", default=None, help=argparse.SUPPRESS)
    arguments.add_quiet_argument(p, "no progress bar")


def add_latent_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("encode", help="meshes to LoG-VAE latent files (safetensors, docs/latents.md); a file or a folder")
    p.add_argument("input", type=Path, help=f"a mesh file or a folder of them ({', '.join(MESH_EXTENSIONS)})")
    p.add_argument("output", type=Path, help="a .safetensors file, or a folder for a folder")
    arguments.add_grid_arguments(p, mode=False)
    arguments.add_refine_argument(p)
    p.add_argument("--dtype", choices=("float16", "float32"), default="float16",
                   help="latent storage (float32: bit-exact with an in-process remesh --mode vae)")
    _common(p)
    p.set_defaults(func=_cmd_encode)

    p = sub.add_parser("decode", help="LoG-VAE latent files back to meshes; a file or a folder")
    p.add_argument("input", type=Path, help="a latent file (.safetensors) or a folder of them")
    p.add_argument("output", type=Path, help="a mesh file (format from the extension), or a folder")
    p.add_argument("--format", choices=("ply", "obj", "stl", "off", "glb"), default="ply", help="output format for a folder")
    _common(p)

    arguments.add_cleanup_arguments(p)
    p.set_defaults(func=_cmd_decode)
