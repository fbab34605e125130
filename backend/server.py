"""`log3d serve`: the local job server that the Blender add-on, `log3d batch` and scripts talk to.

Why a server: loading the LoG-VAE and JIT-compiling the UDF kernels cost seconds, and a remesh can
take minutes, so a long-lived process keeps the model warm and runs jobs while the add-on stays
responsive. Threads and sockets:

* the **I/O thread** owns the ROUTER socket (zmq sockets are not thread-safe): it reads requests,
  validates them (backend.protocol), answers the quick ones itself, queues compute jobs, watches
  training children, and forwards events that other threads produce;
* one **worker thread** runs compute jobs (remesh / encode / decode) one at a time through
  ``model.pipeline``; its events go over an inproc PUSH → PULL pair back to the I/O thread;
* **training** runs in child processes (a crash or an OOM there cannot take the server down).

A bad request is answered with an ``error`` event and never stops the server. The wire format is
docs/protocol.md.
"""

from __future__ import annotations

import dataclasses
import gc
import ipaddress
import logging
import shutil
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import zmq

from model.memory import release_free_memory

from . import auth, handshakes
from .listen import TRANSPORTS, BindError, bind_ipc, choose_transport, ipc_available, release_socket
from . import protocol as proto
from .jobs import CANCELLED, DONE, FAILED, FINAL_STATES, Job, JobIds, JobQueue, ProgressThrottle, QueueFull, TrainRun

log = logging.getLogger("log3d.server")


def default_train_command() -> list[str]:
    return [sys.executable, "-m", "backend.cli", "train"]


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class ServerConfig:
    """How to run the server. The defaults serve direct mode on loopback port 5557 and load the
    shipped LoG-VAE weights if there are any."""

    host: str = proto.DEFAULT_HOST
    port: int = proto.DEFAULT_PORT  # 0: any free port (tests); see Server.port
    device: str = "auto"
    checkpoint: str | None = None  # LoG-VAE weights; None: the shipped ones if present
    load_default_weights: bool = True
    connection_file: Path | None = None
    """Where to write the CURVE keys clients need (``backend.auth``); None: the per-user default for
    the bound port, which the add-on, ``log3d batch`` and ``Log3DClient`` read by themselves."""
    allow_remote: bool = False
    """Listen beyond loopback. Every peer must still hold the connection file's client key (CURVE);
    copy that file to the other machine to connect from it."""
    limits: proto.Limits = field(default_factory=proto.Limits)
    progress_interval_s: float = 0.1  # at most one progress event per job per interval (stage changes always pass)
    train_command: list[str] = field(default_factory=default_train_command)
    runs_dir: Path = Path("runs")  # every training run's folder is RUNS_DIR/<job id>, named by the server
    data_roots: tuple[Path, ...] = ()  # the only folders train.start may read caches and --init weights from
    max_train_runs: int = 1  # training children alive at once
    check_memory: bool = True  # refuse jobs whose memory estimate exceeds what is available (backend.admission)
    train_poll_s: float = 0.25
    train_kill_after_s: float = 10.0  # a stopped trainer that ignores SIGTERM is killed after this
    shutdown_wait_s: float = 30.0  # how long shutdown waits for the running job to reach a stage boundary
    handshake_timeout_s: float = 1.0
    """A connection that has not completed the CURVE handshake by then is dropped (backend.handshakes)."""
    transport: str | None = None
    """``ipc`` (a Unix socket in the private runtime folder: no other user can connect at all),
    ``tcp``, or None: ipc where the platform has it and the server is local, else tcp (backend.listen)."""

    def validate(self) -> "ServerConfig":
        """Refuse a non-loopback address unless asked for: the server runs meshes through numba
        kernels and starts training processes; even authenticated, that is an explicit choice."""
        if not is_loopback(self.host) and not self.allow_remote:
            raise ValueError(f"refusing to listen on {self.host}: other machines could reach the server; "
                             "pass --allow-remote (clients there need a copy of the connection file)")
        if self.max_train_runs < 0:
            raise ValueError("max_train_runs must be >= 0")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.progress_interval_s < 0:
            raise ValueError("progress_interval_s must be >= 0")
        if self.transport not in (None, *TRANSPORTS):
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, got {self.transport!r}")
        if self.transport == "ipc" and (self.allow_remote or not is_loopback(self.host)):
            raise ValueError("--transport ipc serves this machine only: it takes no --host or --allow-remote")
        if self.transport == "ipc" and not ipc_available():
            raise ValueError("--transport ipc needs Unix sockets (Linux, macOS); use --transport tcp")
        if not 0.001 <= self.handshake_timeout_s <= 60:
            raise ValueError(f"handshake_timeout_s must be in 0.001..60 s, got {self.handshake_timeout_s:g}")
        return self

    @property
    def bind_address(self) -> str:
        return auth.tcp_endpoint(self.host, self.port or "*")


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------


@dataclass
class LoadedModel:
    """The warm LoG-VAE (or none) and what hello says about it."""

    vae: Any | None
    device: str
    info: dict[str, Any] | None

    @property
    def latent_dim(self) -> int | None:
        return None if self.vae is None else int(self.vae.config.latent_dim)

    @property
    def weights_sha256(self) -> str | None:
        """The identity latent files carry (``model.latent_file.weights_hash``)."""
        if self.vae is None:
            return None
        from model.latent_file import weights_hash

        return weights_hash(self.vae)


def load_model(config: ServerConfig, vae: Any | None = None) -> LoadedModel:
    """Load the LoG-VAE once at start-up: the given one, ``config.checkpoint``, or the shipped weights.
    Without any, the server runs direct mode only and vae requests get ``mode_unavailable``."""
    from model.autoencode import DEFAULT_CHECKPOINT, load_vae

    path: Path | None = None
    if vae is None:
        if config.checkpoint:
            path = Path(config.checkpoint)
        elif config.load_default_weights and DEFAULT_CHECKPOINT.is_file():
            path = DEFAULT_CHECKPOINT
        if path is not None:
            vae = load_vae(path, config.device)
    if vae is None:
        device = "cpu" if config.device == "cpu" else _resolve_device(config.device)
        return LoadedModel(None, device, None)
    from model.latent_file import weights_hash
    from model.vae import describe

    info = {**describe(vae), "checkpoint": str(path) if path else None, "weights_sha256": weights_hash(vae)}
    return LoadedModel(vae, str(vae.device), info)


def _resolve_device(name: str) -> str:
    from model.autoencode import resolve_device

    return str(resolve_device(name))


# ----------------------------------------------------------------------------------------------
# Compute (worker thread)
# ----------------------------------------------------------------------------------------------

Progress = Callable[[str, float], None]
Compute = Callable[[Job, Progress, Callable[[], bool], LoadedModel], tuple[dict[str, Any], dict[str, np.ndarray]]]


def _mesh_arrays(mesh: Any) -> dict[str, np.ndarray]:
    return {"vertices": np.ascontiguousarray(mesh.vertices, dtype="<f4"),
            "faces": np.ascontiguousarray(mesh.faces, dtype="<i4")}


def cleanup_settings() -> dict[str, Any] | None:
    """The clean-up settings this installation's pipeline has (name → default), or None if it has
    none. Read from the pipeline itself so the wire follows it without a second list to maintain."""
    try:
        from model.cleanup import CleanupOptions
        from model import RemeshOptions
    except ImportError:
        return None
    if "cleanup" not in {f.name for f in dataclasses.fields(RemeshOptions)}:
        return None
    defaults = CleanupOptions()
    return {f.name: getattr(defaults, f.name) for f in dataclasses.fields(CleanupOptions)}


def make_cleanup(given: dict[str, Any], request_id: Any = None) -> Any | None:
    """A validated clean-up configuration from a request's ``cleanup`` map (None: the pipeline has
    no clean-up step); unknown names are ``unknown_option``, wrong values ``bad_option``."""
    settings = cleanup_settings()
    if settings is None:
        if given:
            raise proto.ProtocolError("unknown_option", "this server's pipeline has no clean-up settings", request_id)
        return None
    from model.cleanup import CleanupOptions

    unknown = sorted(set(given) - set(settings))
    if unknown:
        raise proto.ProtocolError("unknown_option", f"no clean-up setting {', '.join(map(repr, unknown))} "
                                                    f"(allowed: {', '.join(settings)})", request_id)
    for name, value in given.items():
        default = settings[name]
        ok = (isinstance(value, bool) if isinstance(default, bool)
              else isinstance(value, int) and not isinstance(value, bool) if isinstance(default, int)
              else isinstance(value, (int, float)) and not isinstance(value, bool))
        if not ok:
            raise proto.ProtocolError("bad_option", f"clean-up setting '{name}' must be a {type(default).__name__}, "
                                                    f"got {value!r}", request_id)
    if given.get("deflate") is False and given.get("single_layer") is True:
        raise proto.ProtocolError("bad_option", "clean-up: single_layer needs deflate (the two sides of a slab "
                                                "only meet once deflated)", request_id)
    options = dataclasses.replace(CleanupOptions(), **given)
    try:
        options.validate()
    except ValueError as exc:
        raise proto.ProtocolError("bad_option", f"clean-up: {exc}", request_id) from None
    return options


def _options(job: Job, model: LoadedModel, mode: str) -> Any:
    from model import RemeshOptions

    extra: dict[str, Any] = {}
    cleanup = make_cleanup(job.options.get("cleanup") or {})
    if cleanup is not None:
        extra["cleanup"] = cleanup
    if job.type == "remesh":
        extra["voxel_size"] = job.options["voxel_size"]
        extra["polygons"] = job.options["polygons"]
    if job.type in ("remesh", "encode"):
        extra["refine_steps"] = job.options["refine_steps"]
    return RemeshOptions(resolution=job.options["resolution"], mode=mode, chunk_blocks=job.options["chunk_blocks"],
                         device=model.device, **extra)


def _checked(mesh: Any) -> dict[str, np.ndarray]:
    """The result's arrays, refused if a vertex is not finite in float32 (never send Inf to a client)."""
    arrays = _mesh_arrays(mesh)
    if not np.isfinite(arrays["vertices"]).all():
        raise RuntimeError("the result has non-finite vertices in float32")
    return arrays


def compute_remesh(job: Job, progress: Progress, should_cancel: Callable[[], bool], model: LoadedModel):
    from model import Mesh, remesh

    assert job.arrays is not None  # checked by remesh (validate_arrays) before any stage: bad_mesh
    mesh = Mesh(vertices=job.arrays["vertices"], faces=job.arrays["faces"])
    mode = job.options["mode"]
    result = remesh(mesh, _options(job, model, mode), progress, should_cancel, vae=model.vae if mode == "vae" else None)
    arrays = _checked(result.mesh)
    timings = dict(result.timings)
    material, colors = job.arrays.get("material"), job.arrays.get("colors")
    if material is not None or colors is not None:  # carried over from the input (model.attributes)
        from model.attributes import transfer_attributes
        from model.stages import Stages

        stages = Stages(progress, should_cancel)
        out_material, out_colors = stages.run("attributes", lambda report: transfer_attributes(mesh, result.mesh, material, colors))
        timings.update(stages.timings)
        if out_material is not None:
            arrays["material"] = np.ascontiguousarray(out_material, dtype="<i4")
        if out_colors is not None:
            arrays["colors"] = np.ascontiguousarray(out_colors, dtype="<f4")
    data = {"resolution": result.resolution, "mode": mode, "num_blocks": result.num_blocks,
            "num_vertices": result.mesh.num_vertices, "num_faces": result.mesh.num_faces, "quads": result.mesh.num_quads,
            "timings": {k: round(v, 6) for k, v in timings.items()}, "warnings": list(result.warnings)}
    return data, arrays


def compute_encode(job: Job, progress: Progress, should_cancel: Callable[[], bool], model: LoadedModel):
    from model import Mesh, encode

    assert job.arrays is not None  # checked by encode_mesh (validate_arrays) before any stage: bad_mesh
    mesh = Mesh(vertices=job.arrays["vertices"], faces=job.arrays["faces"])
    latents, norm = encode(mesh, _options(job, model, "vae"), progress, should_cancel, vae=model.vae)
    data = {"resolution": latents.resolution, "center": [float(x) for x in norm.center], "scale": float(norm.scale),
            "num_blocks": int(latents.coords.shape[0]), "latent_dim": int(latents.latents.shape[1])}
    return data, {"latents": np.ascontiguousarray(latents.latents, dtype="<f4"),
                  "coords": np.ascontiguousarray(latents.coords, dtype="<i4")}


def compute_decode(job: Job, progress: Progress, should_cancel: Callable[[], bool], model: LoadedModel):
    from model import Latents, Normalization, decode

    assert job.arrays is not None
    latents = Latents(job.options["resolution"], np.array(job.arrays["latents"], dtype=np.float32),
                      np.array(job.arrays["coords"], dtype=np.int32))
    norm = Normalization(center=np.asarray(job.options["center"], dtype=np.float64), scale=job.options["scale"])
    mesh = decode(latents, norm, _options(job, model, "vae"), progress, should_cancel, vae=model.vae)
    data = {"resolution": latents.resolution, "num_blocks": int(latents.coords.shape[0]),
            "num_vertices": mesh.num_vertices, "num_faces": mesh.num_faces}
    return data, _checked(mesh)


COMPUTE: dict[str, Compute] = {"remesh": compute_remesh, "encode": compute_encode, "decode": compute_decode}

_SURFACE_STAGES = ("decode", "pad_average", "extract", "cleanup")


def classify_error(exc: BaseException, job: Job) -> tuple[str, str]:
    """The stable error code for an exception a job raised. A MeshError after the field is built
    means the *result* has no surface (an untrained or diverged network), not a bad input."""
    from model import MeshError, ModeUnavailable, ResolutionError

    if isinstance(exc, ResolutionError):
        return "bad_resolution", str(exc)
    if isinstance(exc, MeshError):
        return ("empty_surface" if job.stage in _SURFACE_STAGES else "bad_mesh"), str(exc)
    if isinstance(exc, ModeUnavailable):
        return "mode_unavailable", str(exc)
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return "out_of_memory", f"out of memory in stage {job.stage!r}: {exc}"
    if isinstance(exc, ValueError) and job.type == "decode":
        return "bad_array", str(exc)
    return "internal", f"{type(exc).__name__} in stage {job.stage!r}: {exc}"


def _free_memory(model: LoadedModel) -> None:
    """Return a finished, cancelled or failed job's memory now rather than at the next job: the
    objects, CUDA's cache, and the heap pages the process keeps for reuse (``model.memory``), so an
    idle server does not hold its last job's gigabytes."""
    gc.collect()
    if model.vae is not None and model.device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()
    release_free_memory()


class Worker(threading.Thread):
    """Runs compute jobs one at a time and sends their events through its own PUSH socket."""

    def __init__(self, queue: JobQueue, context: zmq.Context, events_endpoint: str, model: LoadedModel,
                 progress_interval_s: float, stopping: threading.Event) -> None:
        super().__init__(name="log3d-worker", daemon=True)
        self._queue, self._context, self._endpoint = queue, context, events_endpoint
        self._model, self._interval, self._stopping = model, progress_interval_s, stopping
        self._push: zmq.Socket | None = None

    def run(self) -> None:
        self._push = self._context.socket(zmq.PUSH)
        self._push.setsockopt(zmq.LINGER, 2000)
        self._push.connect(self._endpoint)
        try:
            while not self._stopping.is_set():
                job = self._queue.next(timeout_s=0.1)
                if job is None:
                    continue
                try:
                    self._run(job)
                except Exception:  # e.g. a socket error while sending: log it, keep serving
                    log.error("worker failed on job %s:\n%s", job.id, traceback.format_exc())
                    if job.state not in FINAL_STATES:
                        self._queue.finish(job, FAILED, "internal")
        finally:
            self._push.close()

    def _send(self, job: Job, frames: list[Any]) -> None:
        assert self._push is not None
        self._push.send_multipart([job.owner, *frames], copy=False)

    def _run(self, job: Job) -> None:
        throttle = ProgressThrottle(self._interval)

        def progress(stage: str, fraction: float) -> None:
            self._queue.progress(job, stage, fraction)
            if throttle.allow(stage, fraction):
                self._send(job, proto.event_frames(proto.PROGRESS, job.request_id, job.id,
                                                   {"stage": stage, "fraction": round(float(fraction), 4)}))

        from model import Cancelled

        # The job is marked finished before its last event goes out, so a client that asks for
        # `jobs` right after the result sees the final state.
        try:
            if job.cancel_requested.is_set():
                raise Cancelled("cancelled before it started")
            data, arrays = COMPUTE[job.type](job, progress, job.cancel_requested.is_set, self._model)
        except Cancelled:
            self._queue.finish(job, CANCELLED, "cancelled")
            frames = proto.event_frames(proto.CANCELLED, job.request_id, job.id, {"stage": job.stage})
        except Exception as exc:  # every failure becomes an error event; the worker lives on
            code, message = classify_error(exc, job)
            if code == "internal":
                log.error("job %s failed:\n%s", job.id, traceback.format_exc())
            self._queue.finish(job, FAILED, code)
            frames = proto.error_frames(code, message, job.request_id, job.id)
        else:
            data["elapsed_s"] = round(time.time() - (job.started or job.created), 6)
            self._queue.finish(job, DONE)
            self._send(job, proto.event_frames(proto.RESULT, job.request_id, job.id, data, arrays))
            release_free_memory()  # the result's arrays stay referenced until zmq has sent them
            return
        _free_memory(self._model)
        self._send(job, frames)


# ----------------------------------------------------------------------------------------------
# The server (I/O thread)
# ----------------------------------------------------------------------------------------------


class Server:
    """The ROUTER socket, the request handlers, the worker and the training children.

    ``serve_forever()`` runs the I/O loop in the calling thread (the CLI); ``start()`` runs it in a
    background thread (tests, embedding) and ``stop()`` ends it. ``vae``: an already loaded
    LoG-VAE to serve instead of loading one from the config.
    """

    def __init__(self, config: ServerConfig, vae: Any | None = None) -> None:
        self.config = config.validate()
        self.model = load_model(config, vae)
        self.queue = JobQueue(config.limits.max_queued_jobs, max_per_client=config.limits.max_queued_jobs_per_client,
                              max_bytes_per_client=config.limits.max_queued_bytes_per_client)
        self.train_runs: dict[str, TrainRun] = {}
        self._ids = JobIds()
        self._stopping = threading.Event()
        self._context = zmq.Context()
        self._router: zmq.Socket | None = None
        self._events: zmq.Socket | None = None
        self._events_endpoint = f"inproc://log3d-events-{id(self)}"
        self._worker: Worker | None = None
        self._io_thread: threading.Thread | None = None
        self._train_sent: dict[str, tuple[int | None, ProgressThrottle]] = {}
        self._closed = False
        self._auth: auth.ServerAuth | None = None
        self._watch: handshakes.ConnectionWatch | None = None
        self.connection_file: Path | None = None
        self.port: int | None = None
        self._endpoint = ""
        self._ipc_socket: tuple[Path, int] | None = None  # our socket file and its inode, removed at close
        self._handlers: dict[str, Callable[[bytes, proto.Request], None]] = {
            "hello": self._hello, "remesh": self._submit, "encode": self._submit, "decode": self._submit,
            "cancel": self._cancel, "jobs": self._jobs, "train.start": self._train_start,
            "train.status": self._train_status, "train.stop": self._train_stop, "shutdown": self._shutdown,
        }

    # -- life cycle --------------------------------------------------------------------------

    def bind(self) -> int:
        """Bind the sockets and start the worker; returns the server's port (its number, on ipc)."""
        if self._router is not None:
            assert self.port is not None
            return self.port
        before, after = handshakes.raise_descriptor_limit()
        if after > before:
            log.info("open-file limit raised from %d to %d", before, after)
        self._auth = auth.ServerAuth(self._context)
        self._auth.start()
        router = self._context.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 1000)
        router.setsockopt(zmq.HANDSHAKE_IVL, max(1, int(self.config.handshake_timeout_s * 1000)))
        self._auth.secure(router)  # CURVE + ZAP: unauthenticated peers deliver nothing, ZMTP/1.0 is refused
        # A frame larger than any valid message is dropped by zmq itself (connection closed) rather
        # than buffered; anything smaller is checked and answered with `too_large`.
        router.setsockopt(zmq.MAXMSGSIZE, self.config.limits.max_message_bytes + (1 << 20))
        transport = choose_transport(self.config.transport, is_loopback(self.config.host), self.config.connection_file,
                                     self.config.port)
        try:
            if transport == "ipc":
                endpoint, self.port, file = bind_ipc(router, self.config.port, self.config.connection_file)
            else:
                endpoint, file = self._bind_tcp(router), self.config.connection_file
                self.port = int(endpoint.rsplit(":", 1)[1])
            self.connection_file = self._auth.publish(self.config.host, self.port, file, endpoint)
        except BindError:
            router.close(linger=0)
            self._auth.stop()
            raise
        except (OSError, auth.AuthError) as exc:
            router.close(linger=0)
            self._auth.stop()
            raise BindError(f"cannot write the connection file: {exc}") from None
        self._endpoint = endpoint
        if endpoint.startswith("ipc://"):
            path = Path(endpoint[len("ipc://"):])
            self._ipc_socket = (path, path.lstat().st_ino)
        self._watch = handshakes.ConnectionWatch(router)
        events = self._context.socket(zmq.PULL)
        events.bind(self._events_endpoint)
        self._router, self._events = router, events
        self._worker = Worker(self.queue, self._context, self._events_endpoint, self.model,
                              self.config.progress_interval_s, self._stopping)
        self._worker.start()
        return self.port

    def _bind_tcp(self, router: zmq.Socket) -> str:
        if ":" in self.config.host.strip("[]"):
            router.setsockopt(zmq.IPV6, 1)
        try:
            router.bind(self.config.bind_address)
        except zmq.ZMQError as exc:
            raise BindError(f"cannot listen on {self.config.bind_address}: {exc}") from None
        return router.getsockopt(zmq.LAST_ENDPOINT).decode()

    @property
    def endpoint(self) -> str:
        """Where clients connect: ``ipc://…/server-PORT.sock`` or ``tcp://host:port``."""
        if self._endpoint.startswith("tcp://"):
            host = "127.0.0.1" if self.config.host in ("0.0.0.0", "*", "localhost") else self.config.host
            return f"tcp://{host}:{self.port}"
        return self._endpoint

    def start(self) -> "Server":
        """Bind and run the I/O loop in a background thread."""
        self.bind()
        self._io_thread = threading.Thread(target=self.serve_forever, name="log3d-io", daemon=True)
        self._io_thread.start()
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """Ask the I/O loop to shut down (as a `shutdown` request would) and wait for it."""
        self._stopping.set()
        if self._io_thread is not None and self._io_thread is not threading.current_thread():
            self._io_thread.join(timeout_s)

    def request_stop(self) -> None:
        """Signal-safe: the loop notices within one poll interval."""
        self._stopping.set()

    @property
    def stopped(self) -> bool:
        return self._closed

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """The I/O loop: requests in, events out, training children watched, until shutdown."""
        self.bind()
        assert self._router is not None and self._events is not None
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        poller.register(self._events, zmq.POLLIN)
        assert self._watch is not None
        poller.register(self._watch.monitor, zmq.POLLIN)
        next_tick = 0.0
        try:
            while not self._stopping.is_set():
                ready = dict(poller.poll(50))
                if self._watch.monitor in ready:
                    self._watch.drain()
                if self._events in ready:
                    self._forward_events()
                if self._router in ready:
                    self._read_requests()
                if time.monotonic() >= next_tick:
                    self._tick_training()
                    next_tick = time.monotonic() + self.config.train_poll_s
        except KeyboardInterrupt:
            log.info("interrupted")
        finally:
            self._close()

    def _close(self) -> None:
        """Cancel what is queued, stop training, let the running job reach a boundary, flush events."""
        self._stopping.set()
        assert self._router is not None and self._events is not None
        for job in self.queue.drain():
            self._send(job.owner, proto.event_frames(proto.CANCELLED, job.request_id, job.id, {"stage": None}))
        live = [run for run in self.train_runs.values() if run.state not in FINAL_STATES]
        for run in live:
            run.stop(wait_s=0.0)
        for run in live:
            if not _wait(run.process, 2.0):
                run.kill()
            self._update_run(run)
        deadline = time.monotonic() + self.config.shutdown_wait_s
        while self._worker is not None and self._worker.is_alive() and time.monotonic() < deadline:
            self._worker.join(0.05)
            self._forward_events()
        self._forward_events()
        self._events.close(linger=0)
        if self._watch is not None:
            self._watch.close()
        self._router.close(linger=1000)
        if self._ipc_socket is not None:
            release_socket(*self._ipc_socket)
        if self._auth is not None:
            self._auth.stop()
        if self._worker is None or not self._worker.is_alive():
            self._context.term()
        self._closed = True
        log.info("server stopped")

    # -- plumbing ----------------------------------------------------------------------------

    def _send(self, identity: bytes, frames: list[Any]) -> None:
        assert self._router is not None
        self._router.send_multipart([identity, *frames], copy=False)

    def _forward_events(self) -> None:
        assert self._events is not None
        while True:
            try:
                frames = self._events.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            assert self._router is not None
            self._router.send_multipart(frames, copy=False)

    def _read_requests(self, budget: int = 64) -> None:
        assert self._router is not None
        for _ in range(budget):
            try:
                frames = self._router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self._handle(frames[0].bytes, frames[1:])

    def _handle(self, identity: bytes, frames: list[Any]) -> None:
        request_id = None
        try:
            request = proto.parse_request(frames, self.config.limits)
            request_id = request.id
            self._handlers[request.type](identity, request)
        except proto.ProtocolError as exc:
            log.info("refused a request: %s: %s", exc.code, exc.message)
            self._send(identity, proto.error_frames(exc.code, exc.message, exc.request_id))
        except Exception as exc:  # a bug must not take the server down
            log.error("request failed:\n%s", traceback.format_exc())
            self._send(identity, proto.error_frames("internal", f"{type(exc).__name__}: {exc}", request_id))

    def _reply(self, identity: bytes, request: proto.Request, data: dict[str, Any], job: str | None = None) -> None:
        self._send(identity, proto.event_frames(proto.RESULT, request.id, job, data))

    # -- handlers ----------------------------------------------------------------------------

    def _hello(self, identity: bytes, request: proto.Request) -> None:
        from model import __version__

        modes = ["direct", "vae"] if self.model.vae is not None else ["direct"]
        self._reply(identity, request, {
            "protocol": proto.PROTOCOL_VERSION, "server": "log3d-studio", "version": __version__,
            "device": self.model.device, "model": self.model.info, "auth": "curve",
            "capabilities": {**proto.capabilities(self.config.limits, modes), "cleanup": cleanup_settings()},
            "queue": self.queue.counts(), "datasets": list_datasets(self.config.data_roots),
            "connections": self._watch.counts.to_dict() if self._watch is not None else {},
        })

    def _submit(self, identity: bytes, request: proto.Request) -> None:
        needs_vae = request.type in ("encode", "decode") or request.options.get("mode") == "vae"
        if needs_vae and self.model.vae is None:
            raise proto.ProtocolError(
                "mode_unavailable", f"'{request.type}'{' in vae mode' if request.type == 'remesh' else ''} needs "
                "LoG-VAE weights and this server has none loaded: start it with `log3d serve --checkpoint PATH` "
                "or use mode 'direct'", request.id)
        if request.type == "decode" and request.arrays["latents"].shape[1] != self.model.latent_dim:
            raise proto.ProtocolError("bad_array", f"latents have {request.arrays['latents'].shape[1]} channels, "
                                                   f"the loaded LoG-VAE uses {self.model.latent_dim}", request.id)
        wanted = request.options.get("weights_sha256") if request.type == "decode" else None
        if wanted is not None and wanted != self.model.weights_sha256:
            raise proto.ProtocolError("wrong_model", f"these latents were made by LoG-VAE weights {wanted[:12]}…; this "
                                                     f"server has {str(self.model.weights_sha256)[:12]}… loaded: start it "
                                                     "with the checkpoint that encoded them", request.id)
        make_cleanup(request.options.get("cleanup") or {}, request.id)
        self._admit(request)
        job = Job(id=self._ids.next("job"), type=request.type, owner=identity, request_id=request.id,
                  options=request.options, arrays=request.arrays)
        try:
            position = self.queue.submit(job)
        except QueueFull as exc:
            raise proto.ProtocolError("queue_full", str(exc), request.id) from None
        # Sent before the worker can emit anything for this job: the worker's events pass through
        # this thread, which is busy here until the accepted event is out.
        self._send(identity, proto.event_frames(proto.ACCEPTED, request.id, job.id,
                                                {"type": job.type, "queue_position": position}))

    def _admit(self, request: proto.Request) -> None:
        """Refuse, before queueing, a job whose memory estimate does not fit (``backend.admission``)."""
        if not self.config.check_memory:
            return
        from . import admission

        arrays, options = request.arrays, request.options
        input_bytes = sum(int(a.nbytes) for a in arrays.values())
        if request.type == "decode":
            estimate = admission.estimate_decode(int(arrays["latents"].shape[0]), options["chunk_blocks"], input_bytes)
        else:
            mode = "vae" if request.type == "encode" else options["mode"]
            area = admission.surface_area(arrays["vertices"], arrays["faces"])
            estimate = admission.estimate_job(area, options["resolution"], options["chunk_blocks"], mode, input_bytes)
        why = admission.check_fits(estimate, self.queue.queued_bytes())
        if why is not None:
            raise proto.ProtocolError("out_of_memory", why, request.id)

    def _cancel(self, identity: bytes, request: proto.Request) -> None:
        assert request.job is not None
        if request.job in self.train_runs:
            self._train_stop(identity, request)
            return
        job = self.queue.get(request.job)
        if job is None or job.owner != identity:  # another client's job does not exist for this one
            raise proto.ProtocolError("not_found", f"no job {request.job!r}", request.id)
        job, state = self.queue.cancel(request.job)
        assert job is not None
        if state == "dequeued":  # never started: its owner hears it from here, not from the worker
            self._send(job.owner, proto.event_frames(proto.CANCELLED, job.request_id, job.id, {"stage": None}))
            state = CANCELLED
        self._reply(identity, request, {"job": job.id, "state": state}, job.id)

    def _jobs(self, identity: bytes, request: proto.Request) -> None:
        """This client's jobs and training runs only."""
        runs = [{k: v for k, v in run.status(0).items() if k != "rows"}
                for run in self.train_runs.values() if run.owner == identity]
        self._reply(identity, request, {"jobs": self.queue.summaries(owner=identity) + runs})

    def _train_start(self, identity: bytes, request: proto.Request) -> None:
        live = sum(run.state not in FINAL_STATES for run in self.train_runs.values())
        if live >= self.config.max_train_runs:
            raise proto.ProtocolError("queue_full", f"{live} training run(s) already running (limit "
                                                    f"{self.config.max_train_runs}); stop one first", request.id)
        job_id = self._ids.next("train")
        try:
            command, run_dir = training_command(self.config, request.options, job_id)
        except TrainingRefused as exc:
            raise proto.ProtocolError("bad_option", str(exc), request.id) from None
        try:
            run = TrainRun.start(job_id, identity, request.id, command, run_dir)
        except OSError as exc:
            if not request.options["resume"]:  # the folder made for this run holds nothing worth keeping
                shutil.rmtree(run_dir, ignore_errors=True)
            raise proto.ProtocolError("train_failed", f"cannot start the trainer: {exc.strerror or exc}", request.id) from None
        self.train_runs[job_id] = run
        self._train_sent[job_id] = (None, ProgressThrottle(self.config.progress_interval_s))
        self._send(identity, proto.event_frames(proto.ACCEPTED, request.id, job_id, {
            "type": "train", "queue_position": 0, "run_dir": str(run.run_dir), "run": run.run_dir.name,
            "pid": run.process.pid}))

    def _run_for(self, identity: bytes, request: proto.Request) -> TrainRun:
        run = self.train_runs.get(request.job or "")
        if run is None or run.owner != identity:
            raise proto.ProtocolError("not_found", f"no training job {request.job!r}", request.id)
        return run

    def _train_status(self, identity: bytes, request: proto.Request) -> None:
        run = self._run_for(identity, request)
        self._update_run(run)
        self._reply(identity, request, run.status(request.options["last"]), run.id)

    def _train_stop(self, identity: bytes, request: proto.Request) -> None:
        run = self._run_for(identity, request)
        run.stop(wait_s=0.5)
        self._update_run(run)
        state = run.state if run.state in FINAL_STATES else "stopping"
        self._reply(identity, request, {"job": run.id, "state": state, "returncode": run.returncode}, run.id)

    def _shutdown(self, identity: bytes, request: proto.Request) -> None:
        self._reply(identity, request, {"state": "stopping"})
        self._stopping.set()

    # -- training children -------------------------------------------------------------------

    def _tick_training(self) -> None:
        for run in self.train_runs.values():
            if run.state not in FINAL_STATES:
                try:
                    self._update_run(run)
                except Exception:  # e.g. an unreadable metrics file: log it, keep serving
                    log.error("watching training run %s failed:\n%s", run.id, traceback.format_exc())

    def _update_run(self, run: TrainRun) -> None:
        """Read new metrics; stream the latest step/loss to the run's owner; send its terminal event
        once the child has exited."""
        _, ended = run.poll(self.config.train_kill_after_s)
        last_step, throttle = self._train_sent.get(run.id, (None, ProgressThrottle(self.config.progress_interval_s)))
        latest = run.last()
        if latest is not None and latest["step"] != last_step and (ended or throttle.allow("train", 0.0)):
            self._send(run.owner, proto.event_frames(proto.PROGRESS, run.request_id, run.id, {
                "stage": "train", "fraction": None, "step": latest["step"], "loss": latest["loss"]}))
            last_step = latest["step"]
        self._train_sent[run.id] = (last_step, throttle)
        if not ended:
            return
        summary = {k: v for k, v in run.status(0).items() if k != "rows"}
        if run.state == DONE:
            frames = proto.event_frames(proto.RESULT, run.request_id, run.id, summary)
        elif run.state == CANCELLED:
            frames = proto.event_frames(proto.CANCELLED, run.request_id, run.id, summary)
        else:
            frames = proto.error_frames("train_failed", f"the trainer exited with code {run.returncode}; "
                                                        f"end of {run.log_path}:\n{run.log_tail()}", run.request_id, run.id)
        self._send(run.owner, frames)


def list_datasets(roots: Any, limit: int = 200) -> list[str]:
    """Names of the training caches (folders with an index.json or journal.jsonl) directly under the
    server's data roots: what train.start's ``data`` may name."""
    names: list[str] = []
    for root in roots:
        try:
            for child in sorted(Path(root).iterdir()):
                if not (child.is_dir() and ((child / "index.json").is_file() or (child / "journal.jsonl").is_file())):
                    continue
                try:  # the same rule as train.start: a symlink leading out of the root is not offered
                    resolve_inside([root], child.name, "training cache", want_dir=True)
                except TrainingRefused:
                    continue
                names.append(child.name)
        except OSError:
            continue
    return names[:limit]


class TrainingRefused(ValueError):
    """A train.start whose data, weights or run name the server will not use."""


def resolve_inside(roots: Any, relative: str, what: str, want_dir: bool) -> Path:
    """``relative`` (already a plain relative name, ``protocol._relative_name``) under the first of
    ``roots`` where it exists, checked *after* resolving symlinks to still lie inside that root."""
    if not roots:
        raise TrainingRefused(f"this server has no folder for {what}s (start it with --data-root DIR)")
    for root in roots:
        base = Path(root).resolve()
        candidate = (base / relative).resolve()
        if candidate != base and base not in candidate.parents:
            raise TrainingRefused(f"{what} {relative!r} leads outside the server's folders")
        if candidate.is_dir() if want_dir else candidate.is_file():
            return candidate
    raise TrainingRefused(f"no {what} {relative!r} in the server's folders ({', '.join(map(str, roots))})")


def training_command(config: ServerConfig, options: dict[str, Any], job_id: str) -> tuple[list[str], Path]:
    """The trainer's command line from typed options, and its run folder, named by the server:
    ``RUNS_DIR/<job id>``, or an existing ``RUNS_DIR/<name>`` to resume. Every path in it was
    resolved under the server's own folders; no client string reaches the command line unchecked."""
    runs = Path(config.runs_dir).resolve()
    runs.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = resolve_inside(config.data_roots, options["data"], "training cache", want_dir=True)
    if options["resume"]:
        if "/" in options["resume"]:
            raise TrainingRefused("resume names a run folder of this server (one name, no '/')")
        run_dir = runs / options["resume"]
        if run_dir.is_symlink() or not run_dir.is_dir() or run_dir.resolve().parent != runs:
            raise TrainingRefused(f"no run {options['resume']!r} in the server's runs folder")
    else:
        run_dir = runs / job_id
    cmd = [*config.train_command, "--data", str(data), "--preset", options["preset"],
           "--max-steps", str(options["max_steps"]), "--seed", str(options["seed"]),
           "--val-every", str(options["val_every"])]
    if options["lr"] is not None:
        cmd += ["--lr", repr(float(options["lr"]))]
    if options["max_blocks"] is not None:
        cmd += ["--max-blocks", str(options["max_blocks"])]
    if options["mixed_precision"] is not None:
        cmd += ["--mixed-precision", options["mixed_precision"]]
    if options["init"] is not None:
        roots = (*config.data_roots, runs)
        cmd += ["--init", str(resolve_inside(roots, options["init"], "weights file", want_dir=False))]
    if options["resume"]:
        cmd += ["--resume"]
    else:  # every check passed: only now is the run folder made (a refused start leaves none)
        run_dir.mkdir(mode=0o700)  # a fresh name: fails if anything, even a symlink, is there already
    return [*cmd, "--run-dir", str(run_dir)], run_dir


def _wait(process: Any, timeout_s: float) -> bool:
    try:
        process.wait(timeout=timeout_s)
        return True
    except Exception:
        return False


# ----------------------------------------------------------------------------------------------
# `log3d serve`
# ----------------------------------------------------------------------------------------------
