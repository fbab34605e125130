"""`log3d encode` / `log3d decode`: meshes to latent files and back, one file or whole folders.

A folder run is what a researcher needs to turn a dataset into latents (to train a generator on)
and a generator's samples back into meshes:

* **resumable**, like `log3d batch`: an output that exists is skipped; every output is written
  under a temporary name and renamed, so nothing half-written ever carries a real name;
* **failures listed** at the end (and exit code 1), never stopping the others;
* **sharded**: process ``rank`` of ``world`` takes every world-th file of the sorted list, so any
  number of processes — ``--workers J`` on one machine, ``torchrun`` / ``accelerate launch`` on
  several GPUs or machines (``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` from the environment) —
  split a folder with no coordination and no overlap. Outputs do not depend on the sharding.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from model.grid import CHUNK_BLOCKS

from .batch import find_inputs, output_paths

LATENT_SUFFIX = ".safetensors"


@dataclass
class FolderReport:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0

    def merge(self, other: "FolderReport") -> None:
        self.done += other.done
        self.skipped += other.skipped
        self.failed += other.failed
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out
        self.seconds = max(self.seconds, other.seconds)

    def summary(self, verb: str) -> str:
        lines = [f"{len(self.done)} {verb}, {len(self.skipped)} skipped (output exists), {len(self.failed)} failed"]
        if self.done:
            lines.append(f"  {self.bytes_in / len(self.done) / 1024:.1f} KiB in, {self.bytes_out / len(self.done) / 1024:.1f} "
                         f"KiB out per shape on average")
        lines += [f"  FAILED {name}: {reason}" for name, reason in sorted(self.failed)]
        return "\n".join(lines)


def shard_from_env(spec: str | None) -> tuple[int, int]:
    """(rank, world) from ``--shard RANK/WORLD``, else from torchrun/Accelerate's environment, else (0, 1)."""
    if spec:
        try:
            rank, world = (int(x) for x in spec.split("/"))
        except ValueError:
            raise ValueError(f"--shard must be RANK/WORLD (e.g. 0/4), got {spec!r}") from None
    else:
        rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"shard {rank}/{world}: need 0 <= RANK < WORLD")
    return rank, world


def process_device(device: str) -> str:
    """Under a multi-GPU launcher each process takes its own GPU (LOCAL_RANK)."""
    local = os.environ.get("LOCAL_RANK")
    if device in ("auto", "cuda") and local is not None:
        import torch

        if torch.cuda.is_available():
            return f"cuda:{int(local) % torch.cuda.device_count()}"
    return device


# ----------------------------------------------------------------------------------------------
# One file
# ----------------------------------------------------------------------------------------------


def encode_file(src: Path, dst: Path, resolution: int, vae: Any, dtype: str = "float16",
                chunk_blocks: int = CHUNK_BLOCKS, progress: Callable[[str, float], None] | None = None,
                refine_steps: int = 0) -> int:
    """Encode one mesh file into one latent file (its latents refined for ``refine_steps`` steps,
    :mod:`model.refine`); returns the latent file's size in bytes."""
    from model import RemeshOptions, encode, load_mesh
    from model.latent_file import LatentFile, model_identity, save_latent_file

    mesh = load_mesh(src)
    options = RemeshOptions(resolution=resolution, mode="vae", chunk_blocks=chunk_blocks, device=str(vae.device),
                            refine_steps=refine_steps).validate()
    latents, normalization = encode(mesh, options, progress, vae=vae)
    config, digest = model_identity(vae)
    return save_latent_file(dst, LatentFile(latents, normalization, config, digest, source=src.name), dtype)


def decode_file(src: Path, dst: Path, vae: Any, cleanup: Any = None, chunk_blocks: int = CHUNK_BLOCKS,
                progress: Callable[[str, float], None] | None = None) -> int:
    """Decode one latent file into one mesh file (refusing latents of another model); returns the
    mesh file's size in bytes."""
    from model import RemeshOptions, decode, save_mesh
    from model.atomic import atomic_output
    from model.latent_file import check_same_model, load_latent_file

    item = load_latent_file(src)
    check_same_model(item, vae, src)
    extra = {"cleanup": cleanup} if cleanup is not None else {}
    options = RemeshOptions(resolution=item.latents.resolution, mode="vae", chunk_blocks=chunk_blocks,
                            device=str(vae.device), **extra)
    mesh = decode(item.latents, item.normalization, options, progress, vae=vae)
    with atomic_output(dst) as partial:
        save_mesh(mesh, partial)
    return dst.stat().st_size


# ----------------------------------------------------------------------------------------------
# Folders
# ----------------------------------------------------------------------------------------------


def plan(in_dir: Path, out_dir: Path, decode: bool, fmt: str) -> dict[Path, Path]:
    """Every input of the folder and its output, names decided (collision-free) before any work."""
    if decode:
        if not in_dir.is_dir():
            raise ValueError(f"input folder not found: {in_dir}")
        inputs = sorted(p for p in in_dir.iterdir() if p.is_file() and p.suffix == LATENT_SUFFIX)
        return output_paths(inputs, out_dir, fmt)
    return output_paths(find_inputs(in_dir), out_dir, LATENT_SUFFIX[1:])


def run_folder(in_dir: Path, out_dir: Path, work: Callable[[Path, Path], int], decode: bool, fmt: str,
               rank: int = 0, world: int = 1, show_progress: bool = True) -> FolderReport:
    """This process's share of the folder: skip done outputs, do the rest, list failures."""
    from tqdm import tqdm

    from model.mesh import MeshError

    if in_dir.resolve() == out_dir.resolve():
        raise ValueError("OUT_DIR must differ from IN_DIR")
    targets = plan(in_dir, out_dir, decode, fmt)
    mine = [src for i, src in enumerate(sorted(targets, key=lambda p: p.name)) if i % world == rank]
    report = FolderReport()
    start = time.perf_counter()
    todo = [src for src in mine if not targets[src].exists()]
    report.skipped = [src.name for src in mine if targets[src].exists()]
    out_dir.mkdir(parents=True, exist_ok=True)
    label = f"[{rank}/{world}] " if world > 1 else ""
    with tqdm(total=len(todo), unit="shape", disable=not show_progress, file=sys.stderr, desc=label.strip() or None) as bar:
        for src in todo:
            try:
                size = work(src, targets[src])
                report.done.append(src.name)
                report.bytes_in += src.stat().st_size
                report.bytes_out += size
            except (MeshError, ValueError, OSError, RuntimeError) as exc:
                report.failed.append((src.name, f"{type(exc).__name__}: {exc}"))
            bar.update(1)
    report.seconds = time.perf_counter() - start
    return report


def spawn_workers(argv: list[str], workers: int) -> FolderReport:
    """``--workers J`` on one machine: J copies of this command, each with ``--shard k/J`` and its
    share of the cores; their reports are merged."""
    cores = os.cpu_count() or 1
    threads = max(1, cores // workers)
    procs = []
    for k in range(workers):
        child = [sys.executable, "-m", "backend.cli", *argv, "--shard", f"{k}/{workers}", "--workers", "1",
                 "--threads", str(threads), "--report-json", "-"]
        procs.append(subprocess.Popen(child, stdout=subprocess.PIPE, text=True))
    report = FolderReport()
    for proc in procs:
        out, _ = proc.communicate()
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if proc.returncode not in (0, 1) or not lines:
            report.failed.append((f"worker {procs.index(proc)}", f"exited with code {proc.returncode}"))
            continue
        d = json.loads(lines[-1])
        report.merge(FolderReport(d["done"], d["skipped"], [tuple(x) for x in d["failed"]], d["bytes_in"],
                                  d["bytes_out"], d["seconds"]))
    return report


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------
