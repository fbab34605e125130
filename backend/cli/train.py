"""`log3d train` and `log3d ship`: training runs and shipping their weights."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from backend.train import TrainConfig, ship_weights, train


def parse_arch(items: list[str] | None) -> dict[str, object]:
    """``--arch dec_stem=4 --arch dec_channels=64,24,8`` → {"dec_stem": 4, "dec_channels": (64, 24, 8)}:
    integers, floats, comma lists of them, or words."""
    out: dict[str, object] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--arch takes FIELD=VALUE, got {item!r}")

        def number(text: str) -> object:
            for kind in (int, float):
                try:
                    return kind(text)
                except ValueError:
                    pass
            return text

        out[key.strip()] = tuple(number(v) for v in value.split(",")) if "," in value else number(value.strip())
    return out


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        data=str(args.data), run_dir=str(args.out), preset=args.preset, max_steps=args.max_steps, lr=args.lr,
        weight_decay=args.weight_decay, huber_delta=args.huber_delta, kl_weight=args.kl_weight,
        objective=args.objective, surface_delta=args.surface_delta, slope_weight=args.slope_weight,
        decision_weight=args.decision_weight,
        max_skipped_steps=args.max_skipped_steps, arch_overrides=parse_arch(args.arch), init_partial=args.init_partial,
        init_fresh=tuple(args.init_fresh or ()), max_cpu_minutes=args.max_cpu_minutes,
        surface_weight=args.surface_weight, surface_band=args.surface_band,
        warmup_steps=args.warmup_steps, lr_schedule=args.lr_schedule, min_lr_ratio=args.min_lr_ratio,
        grad_clip=args.grad_clip, max_blocks=args.max_blocks,
        mixed_precision=args.mixed_precision, seed=args.seed, save_every=args.save_every,
        save_minutes=args.save_minutes,
        keep_checkpoints=args.keep_checkpoints, log_every=args.log_every, val_every=args.val_every,
        val_shapes=args.val_shapes, val_samples=args.val_samples, val_sampling=args.val_sampling, resume=args.resume,
        init=str(args.init) if args.init else None, device=args.device, threads=args.threads,
        chunk_size=args.chunk_size, grad_checkpoint=args.grad_checkpoint, cache_mb=args.cache_mb,
        verify_shards=not args.no_verify,
    )


def _cmd_train(args: argparse.Namespace) -> int:
    summary = train(config_from_args(args))
    if summary.get("main_process", True):
        print(json.dumps(summary))
    return 0


def add_train_command(sub: argparse._SubParsersAction) -> None:
    d = TrainConfig()
    p = sub.add_parser("train", help="train the LoG-VAE on a prepared cache (Accelerate: `accelerate launch -m backend.cli train ...`)")
    p.add_argument("--data", type=Path, required=True, help="cache folder written by `log3d prepare`")
    p.add_argument("--out", "--run-dir", dest="out", type=Path, required=True, help="run folder: checkpoints, metrics.csv, model.safetensors")
    p.add_argument("--preset", choices=("paper", "small", "tiny"), default=d.preset, help=f"network size (default {d.preset})")
    p.add_argument("--max-steps", type=int, default=d.max_steps, help=f"stop after this many steps in total (default {d.max_steps})")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR's last checkpoint (bit-for-bit)")
    p.add_argument("--init", type=Path, default=None, help="start from these weights (fine-tuning, e.g. 1024³ → 2048³)")
    p.add_argument("--init-partial", action="store_true",
                   help="with --init: load the tensors whose names and shapes match, initialise the rest (a new decoder)")
    p.add_argument("--init-fresh", action="append", metavar="MODULE",
                   help="with --init-partial: leave this module (e.g. dec_local) freshly initialised (repeatable)")
    p.add_argument("--max-cpu-minutes", type=float, default=0.0,
                   help="stop (with a checkpoint) after this much CPU time in training steps (0: no limit; the A/B budget)")
    p.add_argument("--arch", action="append", metavar="FIELD=VALUE",
                   help="an architecture field of the preset for a fresh model, e.g. dec_stem=4 (repeatable; docs/network.md)")
    g = p.add_argument_group("optimisation (defaults: the paper, A.6)")
    g.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the preset's recipe, RECIPES)")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay)
    g.add_argument("--huber-delta", type=float, default=d.huber_delta)
    g.add_argument("--kl-weight", type=float, default=d.kl_weight)
    g.add_argument("--objective", choices=("huber", "surface"), default=None,
                   help="huber (the paper's Huber, optionally weighted) or surface (L1 over the iso band + slope); "
                        "default: the preset's recipe")
    g.add_argument("--surface-delta", type=float, default=None,
                   help="surface objective: quadratic zone of its smooth L1 (default: the preset's recipe)")
    g.add_argument("--slope-weight", type=float, default=None,
                   help="surface objective: weight of the neighbour-difference term (default: the preset's recipe)")
    g.add_argument("--decision-weight", type=float, default=None,
                   help="surface objective: weight of the ε-decision hinge, averaged per side of ε "
                        "(default: the preset's recipe)")
    g.add_argument("--max-skipped-steps", type=int, default=d.max_skipped_steps,
                   help=f"stop after this many steps in a row with a non-finite loss or gradient (default {d.max_skipped_steps})")
    g.add_argument("--surface-weight", type=float, default=None,
                   help="extra loss weight near the iso-level (0: the paper's plain Huber; default: the preset's recipe)")
    g.add_argument("--surface-band", type=float, default=None,
                   help="width of that weighting in normalised UDF units (default: the preset's recipe; 0.5 = 2 voxels)")
    g.add_argument("--warmup-steps", type=int, default=None, help="linear lr warm-up (default: the preset's recipe)")
    g.add_argument("--lr-schedule", choices=("constant", "cosine"), default=None,
                   help="constant (the paper) or cosine decay to --min-lr-ratio × lr at --max-steps (default: the preset's recipe)")
    g.add_argument("--min-lr-ratio", type=float, default=d.min_lr_ratio, help=f"cosine floor (default {d.min_lr_ratio:g})")
    g.add_argument("--grad-clip", type=float, default=d.grad_clip, help="max gradient norm (0: off)")
    g.add_argument("--max-blocks", type=int, default=None, help="blocks per step, a contiguous ball of the shape (default 4096 CUDA, 512 CPU)")
    g.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default=None,
                   help="default fp16 on CUDA; on a CPU bf16 where it has AMX bf16, fp32 otherwise")
    g.add_argument("--seed", type=int, default=d.seed)
    g = p.add_argument_group("checkpoints, logs, validation")
    g.add_argument("--save-every", type=int, default=d.save_every, help=f"checkpoint every K steps (default {d.save_every})")
    g.add_argument("--save-minutes", type=float, default=d.save_minutes,
                   help=f"also checkpoint after this many minutes since the last one (default {d.save_minutes:g}; 0: off)")
    g.add_argument("--keep-checkpoints", type=int, default=d.keep_checkpoints)
    g.add_argument("--log-every", type=int, default=d.log_every)
    g.add_argument("--val-every", type=int, default=d.val_every, help="validate every K steps (0: never)")
    g.add_argument("--val-shapes", type=int, default=d.val_shapes, help="held-out source shapes")
    g.add_argument("--val-samples", type=int, default=d.val_samples, help="surface samples per mesh for CD/F1")
    g.add_argument("--val-sampling", choices=("outer", "uniform"), default=d.val_sampling,
                   help="outer surfaces (the evaluation protocol) or whole surfaces (faster)")
    g = p.add_argument_group("runtime")
    g.add_argument("--device", default="auto", help="auto, cpu or cuda (under `accelerate launch`, Accelerate decides)")
    g.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    g.add_argument("--chunk-size", type=int, default=None, help="blocks per local-conv chunk (memory)")
    g.add_argument("--grad-checkpoint", action="store_true", help="recompute activations in backward (memory)")
    g.add_argument("--cache-mb", type=int, default=d.cache_mb, help="decoded shapes kept in memory")
    g.add_argument("--no-verify", action="store_true", help="skip the sha256 check of shards")
    p.set_defaults(func=_cmd_train)


def _cmd_ship(args: argparse.Namespace) -> int:
    print(json.dumps(ship_weights(args.source, args.out, args.dtype)))
    return 0


def add_ship_command(sub: argparse._SubParsersAction) -> None:
    from model.autoencode import DEFAULT_CHECKPOINT

    p = sub.add_parser("ship", help="write a run's weights as the file remesh --mode vae loads (fp16 by default)")
    p.add_argument("source", type=Path, help="a run folder (its model.safetensors) or a checkpoint file")
    p.add_argument("--out", type=Path, default=DEFAULT_CHECKPOINT, help=f"default: {DEFAULT_CHECKPOINT}")
    p.add_argument("--dtype", choices=("float16", "bfloat16", "float32"), default="float16")
    p.set_defaults(func=_cmd_ship)
