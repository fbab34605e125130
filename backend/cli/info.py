"""`log3d info`: the LoG-VAE in use."""

from __future__ import annotations

import argparse
from pathlib import Path


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


def add_info_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="the LoG-VAE in use: preset, parameter count, device, attention backend")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", type=Path, default=None, help="weights to describe (default: the shipped ones)")
    src.add_argument("--preset", choices=("paper", "small", "tiny"), default=None, help="describe a preset instead")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=_cmd_info)
