"""`log3d batch IN_DIR OUT_DIR`: remesh every mesh of a folder through `log3d serve`.

Going through the server (rather than calling the pipeline in-process) keeps one warm model and
one code path for the add-on, scripts and batches. If no server answers on the port, a local one
is started as a child process and stopped at the end. Runs are resumable: an output that already
exists is skipped, and outputs are written under a temporary name then renamed, so an interrupted
run never leaves a half-written file that a rerun would skip.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .client import BackendError, Log3DClient
from .protocol import DEFAULT_HOST, DEFAULT_PORT, POLYGONS, ProtocolError, check_positive, check_resolution_value

MESH_EXTENSIONS = (".obj", ".ply", ".stl", ".off", ".glb", ".gltf")  # as model.mesh.SUPPORTED_EXTENSIONS


@dataclass
class BatchConfig:
    """One batch run; the defaults remesh at 256³ in direct mode on the default port."""

    in_dir: Path
    out_dir: Path
    resolution: int = 256
    mode: str = "direct"
    voxel_size: float | None = None  # in each mesh's units; N then follows from it (resolution unused)
    polygons: str = "quads"  # or "triangles"
    refine_steps: int = 0  # VAE mode: latent refinement steps per mesh (model/refine.py); sent only when > 0
    fmt: str = "ply"
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    connection_file: Path | None = None  # the server's keys; None: the per-user default for the port
    device: str = "auto"  # for a server this command starts
    checkpoint: Path | None = None  # for a server this command starts
    start_timeout_s: float = 120.0
    cleanup: dict[str, Any] = field(default_factory=dict)  # clean-up settings by name; {}: the server's defaults
    job_timeout_s: float | None = 3600.0  # per mesh
    heartbeat_s: float = 5.0  # while a job runs, the server must answer `hello` this often, or the batch stops
    show_progress: bool = True


@dataclass
class BatchReport:
    done: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{len(self.done)} remeshed, {len(self.skipped)} skipped (output exists), {len(self.failed)} failed"]
        lines += [f"  FAILED {path}: {reason}" for path, reason in self.failed]
        return "\n".join(lines)


def find_inputs(in_dir: Path) -> list[Path]:
    """Mesh files directly inside ``in_dir`` (not recursive), sorted by name."""
    if not in_dir.is_dir():
        raise ValueError(f"input folder not found: {in_dir}")
    return sorted(p for p in in_dir.iterdir() if p.is_file() and p.suffix.lower() in MESH_EXTENSIONS)


def output_paths(inputs: list[Path], out_dir: Path, fmt: str) -> dict[Path, Path]:
    """OUT_DIR/<stem>.<fmt>, one distinct file per input, decided before the first job.

    Inputs that share a stem (a.obj, a.stl) keep their extension in the name (a_obj.ply, a_stl.ply);
    a name still taken after that (an input called a_obj.ply, or names differing only in case, which
    are one file on Windows and macOS) gets ``_2``, ``_3``… in input order. The names depend only on
    the set of inputs, so a rerun finds the outputs of the first run."""
    inputs = sorted(inputs, key=lambda p: p.name)
    stems: dict[str, int] = {}
    for src in inputs:
        stems[src.stem.casefold()] = stems.get(src.stem.casefold(), 0) + 1
    wanted = {src: (src.stem if stems[src.stem.casefold()] == 1 else f"{src.stem}_{src.suffix[1:]}") for src in inputs}
    # Plain names first, so an input's natural name is never taken by another's fallback.
    taken: set[str] = set()
    out: dict[Path, Path] = {}
    for src in sorted(inputs, key=lambda p: (wanted[p] != p.stem, p.name)):
        name, k = wanted[src], 1
        while f"{name}.{fmt}".casefold() in taken:
            k += 1
            name = f"{wanted[src]}_{k}"
        taken.add(f"{name}.{fmt}".casefold())
        out[src] = out_dir / f"{name}.{fmt}"
    assert len({p.name.casefold() for p in out.values()}) == len(out)
    return {src: out[src] for src in inputs}


class LocalServer:
    """Makes sure a server answers on the port: uses a running one, or starts `log3d serve` as a
    child process for the duration of the batch (then shuts it down)."""

    def __init__(self, config: BatchConfig) -> None:
        self.config = config
        self.process: subprocess.Popen | None = None
        self._log: Any = None

    def __enter__(self) -> Log3DClient:
        probe = Log3DClient(self.config.port, self.config.host, timeout_s=2.0, job_timeout_s=self.config.job_timeout_s,
                            connection_file=self.config.connection_file)
        if self._answers(probe):
            return self._ready(probe)
        if self.config.checkpoint is not None and not Path(self.config.checkpoint).is_file():
            probe.close()
            raise RuntimeError(f"checkpoint not found: {self.config.checkpoint}")
        self._start()
        try:
            deadline = time.monotonic() + self.config.start_timeout_s
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"`log3d serve` exited with code {self.process.returncode}:\n{self._log_tail()}")
                if self._answers(probe):
                    return self._ready(probe)
            raise RuntimeError(f"`log3d serve` did not answer within {self.config.start_timeout_s:g} s:\n{self._log_tail()}")
        except BaseException:
            probe.close()
            self._stop_child()  # never leave a server child behind
            raise

    @staticmethod
    def _answers(probe: Log3DClient) -> bool:
        """Whether a server answers `hello`: False on a timeout or when no server has published its
        keys for the port (``not_running``: nothing was sent); any other error closes the probe and
        is raised."""
        try:
            probe.hello()
            return True
        except BackendError as exc:
            if exc.code not in ("timeout", "not_running"):
                probe.close()
                raise
            return False

    @staticmethod
    def _ready(client: Log3DClient) -> Log3DClient:
        client.timeout_s = 60.0  # probes are short; sending and checking a big mesh may not be
        return client

    def _start(self) -> None:
        c = self.config
        command = [sys.executable, "-m", "backend.cli", "serve", "--port", str(c.port), "--host", c.host,
                   "--device", c.device, "--quiet"]
        if c.checkpoint is not None:
            command += ["--checkpoint", str(c.checkpoint)]
        if c.connection_file is not None:
            command += ["--connection-file", str(c.connection_file)]
        self._log = tempfile.TemporaryFile(mode="w+b")  # anonymous: no predictable name in /tmp
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)

    def _log_tail(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-2000:]

    def __exit__(self, *exc: object) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                client = Log3DClient(self.config.port, self.config.host, timeout_s=5.0,
                                     connection_file=self.config.connection_file)
                try:
                    client.shutdown()
                finally:
                    client.close()
            except BackendError:
                pass
        self._stop_child()

    def _stop_child(self) -> None:
        if self.process is not None:
            try:
                self.process.wait(timeout=30 if self.process.poll() is None else 0)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None


class ServerGone(RuntimeError):
    """The server stopped answering while a job ran: the batch stops with its summary."""


def _wait_with_heartbeat(client: Log3DClient, job: str, config: BatchConfig, on_progress: Any) -> Any:
    """Wait for ``job`` in slices of ``heartbeat_s``; between slices the server must answer hello,
    so a dead server is noticed in seconds, not at the per-mesh timeout."""
    deadline = None if config.job_timeout_s is None else time.monotonic() + config.job_timeout_s
    while True:
        try:
            return client.wait(job, on_progress, timeout_s=config.heartbeat_s)
        except BackendError as exc:
            if exc.code != "timeout":
                raise
        if deadline is not None and time.monotonic() > deadline:
            raise BackendError("timeout", f"the job did not finish within {config.job_timeout_s:g} s", job)
        saved = client.timeout_s
        client.timeout_s = config.heartbeat_s
        try:
            client.hello()
        except BackendError as exc:
            raise ServerGone(f"the server stopped answering during job {job}: {exc.message}") from None
        finally:
            client.timeout_s = saved


def _remesh_one(client: Log3DClient, src: Path, dst: Path, config: BatchConfig, on_progress: Any) -> None:
    """Remesh ``src`` into ``dst``: written to a hidden partial name, flushed to disk, then renamed,
    so ``dst`` is either absent or whole; the partial file never outlives a failure."""
    from model import Mesh, load_mesh, save_mesh
    from model.atomic import atomic_output
    from model.quad_layout import check_quad_pairs

    mesh = load_mesh(src)
    extra = {"refine_steps": config.refine_steps} if config.refine_steps else {}  # a server older than it refuses it
    job = client.submit_remesh(mesh.vertices, mesh.faces, resolution=config.resolution, mode=config.mode,
                               cleanup=config.cleanup, voxel_size=config.voxel_size, polygons=config.polygons, **extra)
    event = _wait_with_heartbeat(client, job, config, on_progress)
    vertices, faces = event.arrays["vertices"], event.arrays["faces"]
    if vertices.size and not np.isfinite(vertices).all():
        raise BackendError("internal", "the server returned non-finite vertices")
    num_quads = int(event.data.get("quads", 0))
    try:
        check_quad_pairs(faces, num_quads)
    except ValueError as exc:
        raise BackendError("internal", f"the server returned malformed quads: {exc}") from None
    with atomic_output(dst) as partial:
        save_mesh(Mesh(vertices=vertices.astype("f8"), faces=faces.astype("i8"), num_quads=num_quads), partial)


def run_batch(config: BatchConfig) -> BatchReport:
    """Remesh every input that has no output yet; one failure never stops the others."""
    from tqdm import tqdm

    from model import MeshError
    from model.refine import RefineOptions

    if config.in_dir.resolve() == config.out_dir.resolve():
        raise ValueError("OUT_DIR must differ from IN_DIR (outputs would be taken as inputs on a rerun)")
    if config.mode not in ("direct", "vae"):
        raise ValueError(f"unknown mode {config.mode!r}")
    if config.polygons not in POLYGONS:
        raise ValueError(f"unknown polygons {config.polygons!r} (choose from: {', '.join(POLYGONS)})")
    RefineOptions(steps=config.refine_steps).validate()
    try:
        check_resolution_value("resolution", config.resolution)
        if config.voxel_size is not None:
            check_positive("voxel_size", config.voxel_size)
    except ProtocolError as exc:
        raise ValueError(exc.message) from None
    inputs = find_inputs(config.in_dir)
    targets = output_paths(inputs, config.out_dir, config.fmt)
    report = BatchReport()
    todo = []
    for src in inputs:
        (report.skipped if targets[src].exists() else todo).append(src)
    if not todo:
        return report
    config.out_dir.mkdir(parents=True, exist_ok=True)
    with LocalServer(config) as client, tqdm(total=len(todo), unit="mesh", disable=not config.show_progress,
                                             file=sys.stderr) as bar:
        for src in todo:
            bar.set_description(src.name[:30])

            def on_progress(stage: str, fraction: float | None) -> None:
                bar.set_postfix_str(f"{stage} {100 * (fraction or 0):3.0f}%", refresh=True)

            try:
                _remesh_one(client, src, targets[src], config, on_progress)
                report.done.append(src)
            except ServerGone as exc:
                pending = todo[todo.index(src):]
                report.failed += [(p, str(exc) if p == src else "not run: the server stopped") for p in pending]
                break
            except (MeshError, BackendError, OSError, ValueError) as exc:
                report.failed.append((src, str(exc)))
            bar.update(1)
        client.close()
    return report
