"""The `log3d` command. Each sub-command parses its arguments here and calls one function of
``model`` or ``backend``; no pipeline logic lives in this file."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from backend.arguments import StageBars, add_cleanup_arguments, cleanup_from_args
from backend.batch import add_batch_command
from backend.latents import add_latent_commands
from backend.prepare import add_prepare_command
from backend.server import add_serve_command
from backend.synthetic import add_synth_command
from backend.train import add_ship_command, add_train_command
from model.grid import CHUNK_BLOCKS, ResolutionError
from model.mesh import MeshError


def _cmd_remesh(args: argparse.Namespace) -> int:
    from model import RemeshOptions, load_mesh, remesh, save_mesh

    options = RemeshOptions(resolution=args.resolution, mode=args.mode, chunk_blocks=args.chunk_blocks,
                            device=args.device, checkpoint=args.checkpoint, cleanup=cleanup_from_args(args),
                            engine=args.engine).validate()
    start = time.perf_counter()
    mesh = load_mesh(args.input)
    load_s = time.perf_counter() - start
    bars = StageBars(enabled=not args.quiet)
    try:
        result = remesh(mesh, options, progress=bars)
    finally:
        bars.close()
    start = time.perf_counter()
    save_mesh(result.mesh, args.output)
    save_s = time.perf_counter() - start
    timings = {"load": load_s, **result.timings, "save": save_s}
    print(f"{args.input} -> {args.output}: N={options.resolution} mode={options.mode} "
          f"blocks={result.num_blocks} faces {mesh.num_faces} -> {result.mesh.num_faces}")
    for stage, seconds in timings.items():
        print(f"  {stage:<12} {seconds:8.3f} s")
    print(f"  {'total':<12} {sum(timings.values()):8.3f} s")
    if result.peak_gpu_bytes is not None:
        print(f"  {'peak GPU':<12} {result.peak_gpu_bytes / 2**30:8.2f} GiB")
    return 0


def _add_remesh(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("remesh", help="remesh one file through the LoG3D representation")
    p.add_argument("input", type=Path, help="mesh file (obj, ply, stl, off, glb)")
    p.add_argument("output", type=Path, help="output mesh file; the format follows the extension")
    p.add_argument("--resolution", "-n", type=int, default=256, help="grid resolution N (multiple of 8, 64..2048; default 256)")
    p.add_argument("--mode", choices=("direct", "vae"), default="direct",
                   help="direct: exact UDF blocks; vae: round trip through the LoG-VAE (default: direct)")
    p.add_argument("--chunk-blocks", type=int, default=CHUNK_BLOCKS, help="UBlocks processed per chunk (bounds memory)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (the network's device, and the stages' with the torch engine)")
    p.add_argument("--engine", choices=("auto", "numba", "torch"), default="auto",
                   help="numba: geometry stages on the CPU; torch: every stage on --device; auto: torch when --device resolves to CUDA")
    p.add_argument("--checkpoint", type=Path, default=None, help="LoG-VAE weights (for --mode vae)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    add_cleanup_arguments(p)
    p.set_defaults(func=_cmd_remesh)


def _cmd_info(args: argparse.Namespace) -> int:
    import json

    from model import __version__
    from model.autoencode import DEFAULT_CHECKPOINT, checkpoint_path, resolve_device
    from model.vae import LogVAE, describe, load_model, preset

    device = resolve_device(args.device)
    if args.preset:
        model, source = LogVAE(preset(args.preset)).to(device), f"preset '{args.preset}' (untrained weights)"
    elif args.checkpoint or DEFAULT_CHECKPOINT.is_file():
        path = checkpoint_path(args.checkpoint)
        model, source = load_model(path, device), str(path)
    else:
        model, source = LogVAE(preset("paper")).to(device), "preset 'paper' (no weights shipped yet)"
    info = {"version": __version__, "weights": source, **describe(model, device)}
    if args.json:
        print(json.dumps(info))
    else:
        for key, value in info.items():
            print(f"{key:<20} {value:,}" if isinstance(value, int) else f"{key:<20} {value}")
    return 0


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="the LoG-VAE in use: preset, parameter count, device, attention backend")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", type=Path, default=None, help="weights to describe (default: the shipped ones)")
    src.add_argument("--preset", choices=("paper", "small", "tiny"), default=None, help="describe a preset instead")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=_cmd_info)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    from backend.evaluate import add_eval_arguments, eval_from_args

    p = sub.add_parser("eval", help="metrics of one predicted mesh against its ground truth")
    add_eval_arguments(p)
    p.set_defaults(func=lambda args: (eval_from_args(args), 0)[1])


def _add_benchmark(sub: argparse._SubParsersAction) -> None:
    from backend.evaluate import add_benchmark_arguments, benchmark_from_args

    p = sub.add_parser("benchmark", help="methods × meshes × resolutions: metrics, times, failures (md/json/csv)")
    add_benchmark_arguments(p)
    p.set_defaults(func=lambda args: (benchmark_from_args(args), 0)[1])


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_remesh, _add_info, _add_eval, _add_benchmark,
                                                              add_serve_command, add_batch_command,
                                                              add_prepare_command, add_train_command, add_ship_command,
                                                              add_synth_command, add_latent_commands]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="log3d", description="LoG3D Studio: ultra-high-resolution remeshing")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # commands that re-launch themselves (log3d encode --workers) need their own line
    try:
        return int(args.func(args) or 0)
    except (MeshError, ResolutionError, ValueError) as exc:
        print(f"log3d {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # e.g. a mode this installation cannot run
        print(f"log3d {args.command}: error: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
