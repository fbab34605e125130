"""The `log3d` command: one module per sub-command in this package, the switches several commands
share in :mod:`backend.cli.arguments`. Each module parses its arguments and calls one function of
``model`` or ``backend``; no pipeline logic lives here."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from backend.cli import batch, evaluate, info, latents, prepare, remesh, serve, synth, train
from model.grid import ResolutionError
from model.mesh import MeshError

COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    remesh.add_remesh_command, info.add_info_command, evaluate.add_eval_command, evaluate.add_benchmark_command,
    serve.add_serve_command, batch.add_batch_command, prepare.add_prepare_command, train.add_train_command,
    train.add_ship_command, synth.add_synth_command, latents.add_latent_commands,
]


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


def entry() -> int:
    """The ``log3d`` command (and ``python -m backend.cli``): the process's memory policy
    (``model.memory``: freed arrays reused, no huge pages; ``LOG3D_ALLOCATOR=system`` keeps the
    platform's), then :func:`main`. Tests call ``main`` and leave their own process as it is."""
    from model.memory import configure_allocator

    try:
        configure_allocator()
    except ValueError as exc:
        print(f"log3d: error: {exc}", file=sys.stderr)
        return 2
    return main()


__all__ = ["COMMANDS", "build_parser", "entry", "main"]
