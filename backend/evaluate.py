"""Evaluation harness: metrics of one prediction (``log3d eval``) and benchmark tables over a folder
of meshes, methods and resolutions (``log3d benchmark``).

Everything here is callable without argparse (:func:`run_eval`, :func:`run_benchmark`); the
commands' arguments live in :mod:`backend.cli.evaluate`.

A benchmark never skips a case silently: a method that raises, times out or returns an empty or
broken mesh gets a row with ``status = "failed"`` and the message, and the tables show it.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from model.mesh import SUPPORTED_EXTENSIONS, Mesh, load_mesh, validate_arrays
from model.metrics import MetricsConfig, compute_metrics

HEADLINE = ("CD", "F1@0.01", "F1@0.001", "NMSE", "SNE")
"""The five numbers every table reports, in this order."""


@dataclass(frozen=True)
class MethodOutput:
    """What a benchmarked method returns: its mesh (in the input's frame) and what it cost."""

    mesh: Mesh
    seconds: float
    """The method's own compute time (for Blender: the remesh call only)."""
    total_seconds: float
    """Wall time of the whole call, overheads included."""
    peak_rss_bytes: int | None = None
    extra: dict = field(default_factory=dict)


MethodFn = Callable[[Mesh, int], MethodOutput]
"""A method: ``(input mesh, resolution N) -> MethodOutput``; raise to report a failure."""


def _log3d_method(mode: str) -> MethodFn:
    def run(mesh: Mesh, resolution: int) -> MethodOutput:
        from model import RemeshOptions, remesh  # lazy: heavy, and written in parallel

        start = time.perf_counter()
        result = remesh(mesh, RemeshOptions(resolution=resolution, mode=mode))
        wall = time.perf_counter() - start
        timings = {str(k): float(v) for k, v in dict(getattr(result, "timings", {}) or {}).items()}
        return MethodOutput(
            mesh=result.mesh,
            seconds=wall,
            total_seconds=wall,
            extra={"num_blocks": int(getattr(result, "num_blocks", 0) or 0), "timings": timings},
        )

    return run


def _blender_voxel(timeout_s: float) -> MethodFn:
    def run(mesh: Mesh, resolution: int) -> MethodOutput:
        from backend.blender_voxel import voxel_remesh, voxel_size_for

        out = voxel_remesh(mesh, voxel_size_for(mesh, resolution), timeout_s=timeout_s)
        return MethodOutput(
            mesh=out.mesh,
            seconds=out.remesh_seconds,
            total_seconds=out.total_seconds,
            peak_rss_bytes=out.peak_rss_bytes,
            extra={"voxel_size": out.voxel_size, "blender_version": out.blender_version},
        )

    return run


def default_methods(timeout_s: float = 600.0) -> dict[str, MethodFn]:
    """The methods a benchmark can name: ``direct`` and ``vae`` (LoG3D's pipeline without / with
    the network) and ``blender-voxel`` (Blender's Voxel Remesh at voxel size = extent / N)."""
    return {
        "direct": _log3d_method("direct"),
        "vae": _log3d_method("vae"),
        "blender-voxel": _blender_voxel(timeout_s),
    }


# --------------------------------------------------------------------------------------------------
# One evaluation
# --------------------------------------------------------------------------------------------------


def _as_mesh(item: str | os.PathLike[str] | Mesh, name: str) -> Mesh:
    if isinstance(item, Mesh):
        return validate_arrays(item.vertices, item.faces, name=name)
    return load_mesh(item)


def run_eval(
    gt_path: str | os.PathLike[str] | Mesh,
    pred_path: str | os.PathLike[str] | Mesh,
    config: MetricsConfig | None = None,
) -> dict[str, float]:
    """Metrics of a predicted mesh against its ground truth (paths or :class:`Mesh` objects).

    Returns ``CD``, ``F1@0.01``, ``F1@0.001``, ``NMSE``, ``SNE`` and the extras of
    :func:`model.metrics.compute_metrics`. Raises ``model.mesh.MeshError`` for unreadable or empty
    meshes.
    """
    gt = _as_mesh(gt_path, "ground truth")
    pred = _as_mesh(pred_path, "prediction")
    return compute_metrics(gt, pred, config or MetricsConfig())


def format_eval(result: dict[str, float]) -> str:
    """A short human-readable block of the headline metrics."""
    lines = [f"{key:>9}: {_fmt(key, result.get(key, float('nan')))}" for key in HEADLINE]
    lines.append(f"{'points':>9}: {int(result.get('num_gt_points', 0))} GT, {int(result.get('num_pred_points', 0))} predicted,"
                 f" {int(result.get('num_sharp_points', 0))} near {int(result.get('sharp_edges', 0))} sharp edges")
    lines.append(f"{'time':>9}: {result.get('seconds', float('nan')):.1f} s")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Benchmark
# --------------------------------------------------------------------------------------------------


def list_meshes(mesh_dir: str | os.PathLike[str]) -> list[Path]:
    """Mesh files directly inside ``mesh_dir`` (supported extensions), sorted by name."""
    folder = Path(mesh_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"mesh folder not found: {folder}")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUPPORTED_EXTENSIONS)


def _failure(row: dict, stage: str, exc: BaseException) -> dict:
    row.update(status="failed", stage=stage, error=f"{type(exc).__name__}: {exc}".strip())
    return row


def _evaluate_case(gt: Mesh, name: str, method: str, fn: MethodFn, resolution: int, config: MetricsConfig,
                   mesh_out_dir: Path | None) -> dict:
    row: dict = {"mesh": name, "method": method, "resolution": int(resolution), "status": "ok", "error": "",
                 "input_faces": gt.num_faces}
    try:
        out = fn(gt, resolution)
    except Exception as exc:  # every failure is a result, never a crash of the whole benchmark
        return _failure(row, "method", exc)
    row.update(method_seconds=float(out.seconds), total_seconds=float(out.total_seconds))
    if out.peak_rss_bytes is not None:
        row["peak_rss_mb"] = out.peak_rss_bytes / 2**20
    for key, value in out.extra.items():
        if isinstance(value, (int, float, str)):
            row[key] = value
    try:
        pred = validate_arrays(out.mesh.vertices, out.mesh.faces, name=f"{method} output")
    except Exception as exc:
        return _failure(row, "output", exc)
    row.update(faces=pred.num_faces, vertices=pred.num_vertices)
    if mesh_out_dir is not None:
        from model.mesh import save_mesh

        save_mesh(pred, mesh_out_dir / f"{Path(name).stem}_{method}_{resolution}.ply")
    try:
        metrics = compute_metrics(gt, pred, config)
    except Exception as exc:
        return _failure(row, "metrics", exc)
    row.update({k: float(v) for k, v in metrics.items() if k != "seconds"})
    row["eval_seconds"] = float(metrics["seconds"])
    return row


def summarize(rows: Sequence[dict]) -> list[dict]:
    """Per (method, resolution): counts, and the mean of every metric over the meshes where *all*
    methods succeeded at that resolution (so the means compare like with like), next to the mean
    over each method's own successes."""
    keys = ("CD", "F1@0.01", "F1@0.001", "NMSE", "SNE", "method_seconds", "total_seconds", "faces")
    groups: dict[tuple[str, int], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["method"], row["resolution"]), []).append(row)
    methods = sorted({r["method"] for r in rows})
    summary = []
    for (method, resolution), group in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        common = {
            r["mesh"]
            for r in rows
            if r["resolution"] == resolution
            and all(
                any(o["mesh"] == r["mesh"] and o["method"] == m and o["resolution"] == resolution and o["status"] == "ok"
                    for o in rows)
                for m in methods
            )
        }
        ok = [r for r in group if r["status"] == "ok"]
        entry: dict = {
            "method": method,
            "resolution": resolution,
            "meshes": len(group),
            "ok": len(ok),
            "failed": len(group) - len(ok),
            "common_meshes": len(common),
        }
        for key in keys:
            entry[f"mean_{key}"] = _nanmean(r.get(key) for r in ok if r["mesh"] in common)
            entry[f"own_mean_{key}"] = _nanmean(r.get(key) for r in ok)
        summary.append(entry)
    return summary


def _nanmean(values: Iterable[object]) -> float:
    nums = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(nums)) if nums else float("nan")


def run_benchmark(
    mesh_dir: str | os.PathLike[str],
    resolutions: Sequence[int],
    methods: Sequence[str],
    out_dir: str | os.PathLike[str],
    plot: bool = False,
    config: MetricsConfig | None = None,
    method_registry: dict[str, MethodFn] | None = None,
    timeout_s: float = 600.0,
    stem: str = "metrics_benchmark",
    save_meshes: bool = False,
    log: Callable[[str], None] | None = print,
) -> list[dict]:
    """Run ``methods`` at each resolution on every mesh of ``mesh_dir`` and write
    ``<stem>.md``, ``<stem>.json`` and ``<stem>.csv`` (and ``<stem>.png`` with ``plot``) into
    ``out_dir``. Files are rewritten after every case, so an interrupted run keeps what it measured.

    Returns one row per (mesh, method, resolution): the metrics, timings, face counts and, for
    failures, ``status = "failed"`` with the stage (``load``, ``method``, ``output``, ``metrics``)
    and the message.
    """
    config = config or MetricsConfig()
    registry = method_registry if method_registry is not None else default_methods(timeout_s)
    unknown = [m for m in methods if m not in registry]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; available: {sorted(registry)}")
    if not resolutions:
        raise ValueError("give at least one resolution")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mesh_out_dir = out / f"{stem}_meshes" if save_meshes else None
    if mesh_out_dir is not None:
        mesh_out_dir.mkdir(parents=True, exist_ok=True)
    files = list_meshes(mesh_dir)
    if not files:
        raise FileNotFoundError(f"no mesh files ({', '.join(SUPPORTED_EXTENSIONS)}) in {mesh_dir}")
    rows: list[dict] = []
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    environment = _environment()
    for path in files:
        try:
            gt = load_mesh(path)
        except Exception as exc:
            for resolution in resolutions:
                for method in methods:
                    rows.append(_failure({"mesh": path.name, "method": method, "resolution": int(resolution),
                                          "status": "ok", "error": ""}, "load", exc))
            write_tables(rows, out, stem, config, started, plot=False, environment=environment)
            continue
        for resolution in resolutions:
            for method in methods:
                row = _evaluate_case(gt, path.name, method, registry[method], int(resolution), config, mesh_out_dir)
                rows.append(row)
                if log is not None:
                    log(_row_line(row))
                write_tables(rows, out, stem, config, started, plot=False, environment=environment)
    write_tables(rows, out, stem, config, started, plot=plot, environment=environment)
    return rows


def _row_line(row: dict) -> str:
    head = f"{row['mesh']:<32} {row['method']:<14} N={row['resolution']:<5}"
    if row["status"] != "ok":
        return f"{head} FAILED ({row.get('stage')}): {row['error']}"
    return (f"{head} CD={row['CD']:.3e} F1@0.01={row['F1@0.01']:.4f} F1@0.001={row['F1@0.001']:.4f} "
            f"NMSE={row['NMSE']:.4f} SNE={row['SNE']:.4f} faces={row['faces']} t={row['method_seconds']:.1f}s")


# --------------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------------


def _fmt(key: str, value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if key.startswith("F1") or key.startswith("mean_F1") or key.startswith("own_mean_F1"):
        return f"{100.0 * float(value):.2f} %"
    if key in ("CD", "mean_CD", "own_mean_CD"):
        return f"{float(value):.3e}"
    if "seconds" in key:
        return f"{float(value):.2f}"
    if key in ("faces", "mean_faces", "own_mean_faces", "input_faces"):
        return f"{int(round(float(value))):,}"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _environment() -> dict:
    """Where the numbers were measured: interpreter, machine and the repository's commit."""
    import subprocess

    env: dict = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
                 "platform": platform.platform()}
    root = Path(__file__).resolve().parents[1]
    try:
        env["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                           text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        env["git_dirty"] = bool(dirty)
    except (OSError, subprocess.SubprocessError):
        pass
    return env


def write_tables(rows: Sequence[dict], out_dir: Path, stem: str, config: MetricsConfig, started: str,
                 plot: bool = False, environment: dict | None = None) -> dict[str, Path]:
    """Write the Markdown, JSON and CSV tables (and the PNG plot) for ``rows``; returns the paths."""
    out_dir = Path(out_dir)
    summary = summarize(rows)
    paths = {
        "json": out_dir / f"{stem}.json",
        "csv": out_dir / f"{stem}.csv",
        "md": out_dir / f"{stem}.md",
    }
    payload = {"started": started, "config": asdict(config), "environment": environment or _environment(),
               "summary": summary, "rows": list(rows)}
    paths["json"].write_text(json.dumps(json_safe(payload), indent=2, default=_json_default, allow_nan=False) + "\n")
    columns = _csv_columns(rows)
    with paths["csv"].open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in columns})
    paths["md"].write_text(markdown_report(rows, summary, config, started, payload["environment"]))
    if plot:
        paths["png"] = plot_benchmark(rows, out_dir / f"{stem}.png")
    return paths


def json_safe(value: object) -> object:
    """``value`` with every NaN or infinite float replaced by ``None`` (JSON ``null``): strict JSON
    has no NaN, and SNE is NaN for a mesh without sharp edges."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)) and not math.isfinite(float(value)):
        return None
    return value


def _json_default(value: object) -> object:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, tuple):
        return list(value)
    return str(value)


def _csv_columns(rows: Sequence[dict]) -> list[str]:
    first = ["mesh", "method", "resolution", "status", "stage", "error", *HEADLINE, "faces", "vertices",
             "input_faces", "method_seconds", "total_seconds", "eval_seconds", "peak_rss_mb"]
    rest = sorted({k for r in rows for k in r} - set(first))
    return first + rest


def markdown_report(rows: Sequence[dict], summary: Sequence[dict], config: MetricsConfig, started: str,
                    environment: dict | None = None) -> str:
    """The benchmark as Markdown: means per method and resolution, then every case, then failures."""
    code = ""
    if environment and environment.get("git_commit"):
        code = f" Code: commit `{environment['git_commit'][:10]}`{' with uncommitted changes' if environment.get('git_dirty') else ''}."
    lines = [
        "# Reconstruction benchmark",
        "",
        f"Started {started}. Metrics as defined in docs/metrics.md: {config.num_samples:,} points per mesh, "
        f"`{config.sampling}` sampling, `{config.distance}` distances, sharp edges above "
        f"{config.sharp_angle_deg:g}° with a {config.sharp_band:g} band, seed {config.seed}. "
        "Both meshes are in the GT's unit cube; F-scores in percent; times in seconds on this machine "
        f"({os.cpu_count()} CPUs). `time` is the method's own compute (for Blender: the remesh call only).{code}",
        "",
        "## Means",
        "",
        "Means over the meshes on which every method succeeded at that resolution (`common`).",
        "",
        "| N | method | ok / meshes | common | CD | F1@0.01 | F1@0.001 | NMSE | SNE | faces | time |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        lines.append(
            f"| {s['resolution']} | {s['method']} | {s['ok']} / {s['meshes']} | {s['common_meshes']} | "
            + " | ".join(_fmt(k, s[f"mean_{k}"]) for k in HEADLINE)
            + f" | {_fmt('faces', s['mean_faces'])} | {_fmt('seconds', s['mean_method_seconds'])} |"
        )
    lines += [
        "",
        "## Every case",
        "",
        "| mesh | N | method | CD | F1@0.01 | F1@0.001 | NMSE | SNE | faces | time | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ok = r["status"] == "ok"
        metrics = " | ".join(_fmt(k, r.get(k)) if ok else "—" for k in HEADLINE)
        faces = _fmt("faces", r["faces"]) if "faces" in r else "—"
        seconds = _fmt("seconds", r["method_seconds"]) if "method_seconds" in r else "—"
        status = "ok" if ok else f"**failed** ({r.get('stage')})"
        lines.append(f"| {r['mesh']} | {r['resolution']} | {r['method']} | {metrics} | {faces} | {seconds} | {status} |")
    if environment and environment.get("note"):
        lines += ["", "## Notes", "", str(environment["note"])]
    failures = [r for r in rows if r["status"] != "ok"]
    lines += ["", "## Failures", ""]
    if failures:
        for r in failures:
            lines.append(f"- {r['mesh']}, {r['method']}, N={r['resolution']} ({r.get('stage')}): {r['error']}")
    else:
        lines.append("None.")
    return "\n".join(lines) + "\n"


def plot_benchmark(rows: Sequence[dict], path: Path) -> Path:
    """Metric vs resolution, one line per method (means over the common meshes), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarize(rows)
    panels = [("CD", "CD (unit cube)", True), ("F1@0.01", "F1@0.01", False), ("F1@0.001", "F1@0.001", False),
              ("NMSE", "NMSE", True), ("SNE", "SNE", True), ("method_seconds", "time (s)", True)]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5))
    for ax, (key, label, log_scale) in zip(axes.ravel(), panels):
        for method in sorted({s["method"] for s in summary}):
            mine = [s for s in summary if s["method"] == method]
            # Like-for-like means when there are any; otherwise the method's own successes, dashed.
            prefix, style, legend = "mean_", "-", method
            if all(math.isnan(s[f"mean_{key}"]) for s in mine):
                prefix, style, legend = "own_mean_", "--", f"{method} (own successes)"
            pts = sorted((s["resolution"], s[f"{prefix}{key}"]) for s in mine)
            pts = [(x, y) for x, y in pts if not math.isnan(y)]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", label=legend)
        ax.set_xscale("log", base=2)
        if log_scale:
            ax.set_yscale("log")
        ax.set_xlabel("resolution N")
        ax.set_title(label)
        ax.grid(True, alpha=0.3)
    if axes[0, 0].get_legend_handles_labels()[0]:
        axes[0, 0].legend()
    fig.suptitle("Reconstruction quality vs resolution (means over meshes where every method succeeded)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = [
    "HEADLINE",
    "MethodFn",
    "MethodOutput",
    "default_methods",
    "format_eval",
    "json_safe",
    "list_meshes",
    "markdown_report",
    "plot_benchmark",
    "run_benchmark",
    "run_eval",
    "summarize",
    "write_tables",
]
