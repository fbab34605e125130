"""``log3d prepare``: a folder of meshes (and/or generated shapes) → a training cache of UBlocks.

Every (shape, resolution, augmentation copy) is one *task*, identified by a stable id such as
``chairs/0042@512#2``. Tasks run in worker processes (the UDF kernels are numba; one process per
core share-nothing scales better than threads and survives a mesh that crashes a loader). Each
finished task is appended to the cache's journal, so an interrupted run picks up where it stopped;
meshes that cannot be used are recorded as failures, listed at the end and never retried unless
asked. Augmentation parameters are drawn from a hash of (seed, task id): the same command always
produces the same cache, whichever worker runs which task and however often it is resumed.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import multiprocessing
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from model.grid import check_resolution, unit_margin
from model.mesh import SUPPORTED_EXTENSIONS, Mesh, MeshError, fit_unit_cube, load_mesh, used_vertices, validate_arrays

from .dataset import (
    CacheEntry,
    CacheFailure,
    append_journal,
    atomic_write_bytes,
    encode_shard,
    read_journal,
    shard_path_for,
    write_index,
)

AUGMENTATIONS = ("rotate", "scale")


@dataclass
class PrepareOptions:
    """What ``prepare`` makes. Defaults: one un-augmented copy per mesh at 256³."""

    resolutions: tuple[int, ...] = (256,)
    augment: tuple[str, ...] = ()
    copies: int = 1
    """Augmented copies per shape and resolution, made in addition to the original."""
    keep_original: bool = True
    """With augmentation: also keep the un-augmented shape (variant 0)."""
    scale_range: tuple[float, float] = (0.6, 1.0)
    """Scale augmentation: the shape's longest side as a fraction of the usable cube."""
    seed: int = 0
    workers: int = 0
    """Worker processes; 0 means one per CPU core (``os.cpu_count()``), 1 runs in-process."""
    synthetic: int = 0
    retry_failed: bool = False

    def validate(self) -> "PrepareOptions":
        self.resolutions = tuple(check_resolution(int(n)) for n in self.resolutions)
        if not self.resolutions:
            raise ValueError("at least one --resolution is needed")
        bad = sorted(set(self.augment) - set(AUGMENTATIONS))
        if bad:
            raise ValueError(f"unknown augmentation(s) {bad}; choose from {list(AUGMENTATIONS)}")
        if self.copies < 0:
            raise ValueError("--copies must be >= 0")
        lo, hi = self.scale_range
        if not 0.05 <= lo <= hi <= 1.0:
            raise ValueError(f"--scale-range must satisfy 0.05 <= min <= max <= 1, got {lo}, {hi}")
        if self.synthetic < 0:
            raise ValueError("--synthetic must be >= 0")
        return self


@dataclass
class Task:
    """One shard to make. ``mesh`` is set for generated shapes; files are loaded by the worker."""

    id: str
    name: str
    source: str
    resolution: int
    augment: dict[str, Any]
    shard: str
    mesh: Mesh | None = None


@dataclass
class PrepareReport:
    written: int = 0
    skipped: int = 0
    failures: list[CacheFailure] = field(default_factory=list)
    total_entries: int = 0
    seconds: float = 0.0


# ----------------------------------------------------------------------------------------------
# Augmentation and voxelisation (run in the workers)
# ----------------------------------------------------------------------------------------------


def augment_params(task_key: str, seed: int, kinds: tuple[str, ...], scale_range: tuple[float, float]) -> dict[str, Any]:
    """Deterministic augmentation of one task: a uniformly random rotation (unit quaternion w,x,y,z)
    and/or a scale in ``scale_range``, drawn from a hash of (seed, task key)."""
    digest = hashlib.sha256(f"{seed}:{task_key}".encode("utf-8")).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    params: dict[str, Any] = {}
    if "rotate" in kinds:
        q = rng.standard_normal(4)
        q /= np.linalg.norm(q)
        params["rotation"] = [float(x) for x in (q if q[0] >= 0 else -q)]
    if "scale" in kinds:
        params["scale"] = float(rng.uniform(*scale_range))
    return params


def quaternion_matrix(q: list[float]) -> np.ndarray:
    w, x, y, z = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def unit_vertices(mesh: Mesh, resolution: int, augment: dict[str, Any]) -> np.ndarray:
    """The mesh's vertices in the unit cube as the pipeline places them (``mesh_to_field``), then
    rotated about the centre and refitted, and scaled down about the centre."""
    margin = unit_margin(resolution)
    verts = fit_unit_cube(used_vertices(mesh), margin).to_unit(mesh.vertices)
    if "rotation" in augment:
        verts = verts @ quaternion_matrix(augment["rotation"]).T
        used = verts[np.unique(mesh.faces)]
        verts = fit_unit_cube(used, margin).to_unit(verts)
    if "scale" in augment:
        verts = verts * float(augment["scale"])
    return verts


def voxelise(mesh: Mesh, resolution: int, augment: dict[str, Any]):
    """UBlocks of one (possibly augmented) mesh at N³."""
    from model.ublocks import extract_ublocks
    from model.udf import compute_udf

    field_ = compute_udf(unit_vertices(mesh, resolution, augment), mesh.faces, resolution)
    ublocks = extract_ublocks(field_)
    if ublocks.num_blocks == 0:
        raise MeshError(f"no active UBlocks at N={resolution}")
    return ublocks


def run_task(task: Task, cache_dir: str) -> dict[str, Any]:
    """Make one shard; return a journal record (``status`` ok or failed). Never raises for a bad
    mesh: one unusable file must not stop a data set of thousands."""
    start = time.perf_counter()
    try:
        mesh = task.mesh if task.mesh is not None else load_mesh(task.source)
        mesh = validate_arrays(mesh.vertices, mesh.faces, name=task.name)
        ublocks = voxelise(mesh, task.resolution, task.augment)
        data = encode_shard(ublocks)
        atomic_write_bytes(Path(cache_dir) / task.shard, data)
    except MemoryError:
        return {"id": task.id, "status": "failed", "source": task.source, "error": "out of memory"}
    except Exception as exc:  # broken files raise anything from trimesh; record and move on
        return {"id": task.id, "status": "failed", "source": task.source, "error": f"{type(exc).__name__}: {exc}"}
    entry = CacheEntry(
        id=task.id, name=task.name, source=task.source, resolution=task.resolution,
        num_blocks=ublocks.num_blocks, shard=task.shard, sha256=hashlib.sha256(data).hexdigest(),
        bytes=len(data), augment=task.augment, seconds=round(time.perf_counter() - start, 3),
    )
    return {"id": task.id, "status": "ok", "entry": entry.to_dict()}


def _init_worker(threads: int) -> None:
    """Each worker gets its share of the cores for numba's parallel loops (no oversubscription)."""
    try:
        import numba

        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    except Exception:
        pass


# ----------------------------------------------------------------------------------------------
# Task list
# ----------------------------------------------------------------------------------------------


def find_meshes(mesh_dir: Path) -> list[Path]:
    """Mesh files under ``mesh_dir`` (recursive), sorted for a reproducible task order."""
    if not mesh_dir.is_dir():
        raise ValueError(f"mesh folder not found: {mesh_dir}")
    return sorted(p for p in mesh_dir.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_EXTENSIONS)


def _variants(name: str, options: PrepareOptions) -> Iterator[tuple[str, int, dict[str, Any]]]:
    copies = options.copies if options.augment else 0
    for n in options.resolutions:
        if options.keep_original or not copies:
            yield f"{name}@{n}", n, {}
        for k in range(1, copies + 1):
            key = f"{name}@{n}#{k}"
            yield key, n, augment_params(key, options.seed, options.augment, options.scale_range)


def _synthetic_shapes(count: int, seed: int) -> Iterator[tuple[str, Mesh]]:
    try:
        from backend.synthetic import generate_shapes
    except ImportError as exc:
        raise RuntimeError(f"--synthetic needs backend.synthetic.generate_shapes, which is not available ({exc})") from None
    return generate_shapes(count, seed)


def make_tasks(mesh_dir: Path | None, options: PrepareOptions) -> Iterator[Task]:
    """All tasks, files first then generated shapes; lazy, so generated meshes are only built when
    their task is about to run."""
    if mesh_dir is not None:
        for path in find_meshes(mesh_dir):
            name = path.relative_to(mesh_dir).with_suffix("").as_posix()
            for key, n, aug in _variants(name, options):
                yield Task(key, name, str(path), n, aug, shard_path_for(key))
    if options.synthetic:
        for name, mesh in _synthetic_shapes(options.synthetic, options.seed):
            name = f"synthetic/{name}"
            for key, n, aug in _variants(name, options):
                yield Task(key, name, f"synthetic:{name}", n, aug, shard_path_for(key), mesh=mesh)


# ----------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------


def prepare(mesh_dir: Path | None, cache_dir: Path, options: PrepareOptions, progress: bool = True,
            log=print) -> PrepareReport:
    """Build or complete the cache in ``cache_dir``; returns what was done. Safe to re-run: tasks
    already in the journal (with their shard on disk) are skipped."""
    options.validate()
    if mesh_dir is None and not options.synthetic:
        raise ValueError("nothing to prepare: give a mesh folder, --synthetic K, or both")
    start = time.perf_counter()
    cache_dir.mkdir(parents=True, exist_ok=True)
    entries, failures = read_journal(cache_dir)
    entries = {k: e for k, e in entries.items() if (cache_dir / e.shard).is_file()}
    if options.retry_failed:
        failures = {}
    done = set(entries) | set(failures)
    report = PrepareReport()
    workers = options.workers or (os.cpu_count() or 1)

    def pending() -> Iterator[Task]:
        for task in make_tasks(mesh_dir, options):
            if task.id in done:
                report.skipped += 1
                continue
            yield task

    def record(rec: dict[str, Any]) -> None:
        append_journal(cache_dir, rec)
        if rec["status"] == "ok":
            entries[rec["id"]] = CacheEntry.from_dict(rec["entry"])
            failures.pop(rec["id"], None)
            report.written += 1
        else:
            fail = CacheFailure(rec["id"], rec.get("source", ""), rec.get("error", ""))
            failures[rec["id"]] = fail
            report.failures.append(fail)
            log(f"skipped {fail.source} ({fail.id}): {fail.error}", file=sys.stderr)

    from tqdm import tqdm

    copies = options.copies if options.augment else 0
    per_shape = len(options.resolutions) * ((1 if options.keep_original or not copies else 0) + copies)
    shapes = (len(find_meshes(mesh_dir)) if mesh_dir is not None else 0) + options.synthetic
    total = max(shapes * per_shape - len(done), 0)
    bar = tqdm(desc="prepare", unit="shape", total=total, disable=not progress, file=sys.stderr, dynamic_ncols=True)
    try:
        if workers <= 1:
            for task in pending():
                record(run_task(task, str(cache_dir)))
                bar.update(1)
        else:
            ctx = multiprocessing.get_context("spawn")
            threads = max(1, (os.cpu_count() or 1) // workers)
            with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(threads,)) as pool:
                in_flight: set[cf.Future] = set()
                tasks = pending()
                exhausted = False
                while True:
                    while not exhausted and len(in_flight) < 2 * workers:
                        task = next(tasks, None)
                        if task is None:
                            exhausted = True
                            break
                        in_flight.add(pool.submit(run_task, task, str(cache_dir)))
                    if not in_flight:
                        break
                    finished, in_flight = cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
                    for fut in finished:
                        record(fut.result())
                        bar.update(1)
    finally:
        bar.close()
        write_index(cache_dir, entries.values(), failures.values(), _options_record(mesh_dir, options))
    report.total_entries = len(entries)
    report.seconds = time.perf_counter() - start
    return report


def _options_record(mesh_dir: Path | None, options: PrepareOptions) -> dict[str, Any]:
    d = asdict(options)
    d["mesh_dir"] = str(mesh_dir) if mesh_dir is not None else None
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------
