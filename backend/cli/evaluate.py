"""`log3d eval` and `log3d benchmark`: the metric options they share and the runs they start."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from backend.evaluate import HEADLINE, default_methods, format_eval, json_safe, run_benchmark, run_eval
from model.metrics import MetricsConfig, VisibilityConfig


def add_eval_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="metrics of one predicted mesh against its ground truth")
    add_eval_arguments(p)
    p.set_defaults(func=lambda args: (eval_from_args(args), 0)[1])


def add_benchmark_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("benchmark", help="methods × meshes × resolutions: metrics, times, failures (md/json/csv)")
    add_benchmark_arguments(p)
    p.set_defaults(func=lambda args: (benchmark_from_args(args), 0)[1])


def _add_metric_options(parser: argparse.ArgumentParser) -> None:
    defaults = MetricsConfig()
    group = parser.add_argument_group("metric options (see docs/metrics.md)")
    group.add_argument("--samples", type=int, default=defaults.num_samples,
                       help=f"points sampled per mesh (default {defaults.num_samples:,})")
    group.add_argument("--sharp-samples", type=int, default=defaults.sharp_samples,
                       help=f"GT points near sharp edges for SNE (default {defaults.sharp_samples:,})")
    group.add_argument("--seed", type=int, default=defaults.seed, help="random seed (default 0)")
    group.add_argument("--sampling", choices=("outer", "uniform"), default=defaults.sampling,
                       help="sample the outer (visible) surface, TRELLIS-style, or the whole surface uniformly")
    group.add_argument("--distance", choices=("point_to_surface", "point_to_point"), default=defaults.distance,
                       help="distance from a sample to the other mesh's surface (default) or to its samples")
    group.add_argument("--sharp-angle", type=float, default=defaults.sharp_angle_deg,
                       help=f"dihedral angle (degrees) above which an edge is sharp (default {defaults.sharp_angle_deg:g})")
    group.add_argument("--sharp-band", type=float, default=defaults.sharp_band,
                       help=f"SNE band half-width around sharp edges, unit cube (default {defaults.sharp_band:g})")
    group.add_argument("--views", type=int, default=defaults.visibility.views,
                       help=f"views for outer-surface visibility (default {defaults.visibility.views})")
    group.add_argument("--view-resolution", type=int, default=defaults.visibility.resolution,
                       help=f"pixels per side of each visibility render (default {defaults.visibility.resolution})")


def config_from_args(args: argparse.Namespace) -> MetricsConfig:
    """The :class:`MetricsConfig` that the metric options of ``args`` describe."""
    defaults = MetricsConfig()
    return MetricsConfig(
        num_samples=args.samples,
        sharp_samples=args.sharp_samples,
        seed=args.seed,
        sampling=args.sampling,
        distance=args.distance,
        fscore_thresholds=defaults.fscore_thresholds,
        sharp_angle_deg=args.sharp_angle,
        sharp_band=args.sharp_band,
        visibility=VisibilityConfig(
            views=args.views,
            resolution=args.view_resolution,
            tolerance=defaults.visibility.tolerance,
            max_view_angle_deg=defaults.visibility.max_view_angle_deg,
        ),
    )


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``log3d eval GT PRED``."""
    parser.add_argument("gt", help="ground-truth mesh (obj/ply/stl/off/glb)")
    parser.add_argument("pred", help="predicted mesh to score against it")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object (CD, F1@0.01, F1@0.001, NMSE, SNE) instead of the table")
    parser.add_argument("--out", dest="json_out", default=None, help="also write every number to this JSON file")
    _add_metric_options(parser)


def eval_from_args(args: argparse.Namespace) -> dict[str, float]:
    """Run ``log3d eval`` from parsed arguments: prints the metrics, writes ``--json`` if asked."""
    result = run_eval(args.gt, args.pred, config_from_args(args))
    if args.json:
        print(json.dumps(json_safe({key: result[key] for key in HEADLINE})))
    else:
        print(format_eval(result))
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(json_safe(result), indent=2) + "\n")
    return result


def add_benchmark_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``log3d benchmark``."""
    parser.add_argument("mesh_dir", help="folder of ground-truth meshes")
    parser.add_argument("--resolutions", "--resolution", type=int, nargs="+", default=[256, 512],
                        help="resolutions N (default 256 512)")
    parser.add_argument("--methods", "--method", nargs="+", default=["direct", "blender-voxel"],
                        choices=sorted(default_methods()), help="methods to compare (default: direct blender-voxel)")
    parser.add_argument("--out-dir", default="bench/results", help="where the tables go (default bench/results)")
    parser.add_argument("--stem", default="metrics_benchmark", help="file name stem of the tables")
    parser.add_argument("--plot", action="store_true", help="also write a PNG of metric vs resolution")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds allowed per Blender remesh")
    parser.add_argument("--save-meshes", action="store_true", help="keep every output mesh next to the tables")
    _add_metric_options(parser)


def benchmark_from_args(args: argparse.Namespace) -> list[dict]:
    """Run ``log3d benchmark`` from parsed arguments."""
    return run_benchmark(
        args.mesh_dir,
        args.resolutions,
        args.methods,
        args.out_dir,
        plot=args.plot,
        config=config_from_args(args),
        timeout_s=args.timeout,
        stem=args.stem,
        save_meshes=args.save_meshes,
    )
