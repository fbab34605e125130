"""Everything that talks to the backend, in worker threads; never touches ``bpy``.

Blender's data may only be read and written on the main thread, and a remesh can take minutes, so
the network conversation runs in a :class:`Task` thread that reports through a queue of small
message objects. The main thread (a modal operator or an app timer, or a blocking loop in background
mode) drains the queue and is the only one that changes the scene.

Each thread opens its own :class:`Log3DClient` (one ZeroMQ socket per thread, as the client wants).
A backend that dies is noticed by a heartbeat: when a running job has sent nothing for
``Connection.heartbeat_s``, a ``hello`` must be answered within ``Connection.timeout_s``.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .mesh_arrays import ColorLayer, MeshArrays

POLL_INTERVAL_S = 0.05
TRAIN_STATUS_INTERVAL_S = 1.0

# What the server calls its stages, as the panel shows them (docs/protocol.md, `progress`).
STAGE_LABELS = {
    "udf": "Distance field",
    "ublocks": "UBlocks",
    "encode": "Encoding",
    "decode": "Decoding",
    "pad_average": "Pad-Average",
    "extract": "Extraction",
    "outer_shell": "Outer shell",
    "cleanup": "Clean-up",
    "interior": "Inner cavities",
    "settle": "Onto the zero set",
    "creases": "Along the creases",
    "decimate": "Decimation",
    "train": "Training",
}
STAGE_SLOT = {"outer_shell": "extract", "interior": "cleanup", "settle": "cleanup", "creases": "cleanup", "decimate": "cleanup"}
"""Stages that only some meshes go through, shown in the progress bar at the place of the main one."""
STAGE_ORDER = {"direct": ("extract", "cleanup"),
               "direct-field": ("udf", "extract", "cleanup"),
               "vae": ("udf", "ublocks", "encode", "decode", "pad_average", "extract", "cleanup")}
"""The stages of each path through the pipeline, in order (see :func:`stage_path`)."""


def stage_path(mode: str, cleanup: dict[str, Any]) -> str:
    """The key of :data:`STAGE_ORDER` a remesh goes through: direct mode with every clean-up step on
    contours the input and makes no field (``model.pipeline``); with any step off (raw, keep slabs)
    it extracts the exact field's ε-surface."""
    full = all(bool(cleanup.get(step, True)) for step in ("deflate", "outer_shell", "single_layer"))
    return "direct-field" if mode == "direct" and not full else mode


# --------------------------------------------------------------------------------------------
# Where the backend is
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Connection:
    """How to reach the backend; read from the add-on preferences on the main thread and handed to
    threads (which must not read ``bpy`` themselves)."""

    host: str = "127.0.0.1"
    port: int = 5557
    connection_file: str | None = None  # None: the default file of the backend on ``port``
    timeout_s: float = 5.0
    heartbeat_s: float = 3.0

    @property
    def endpoint(self) -> str:
        """The server as the user named it; where it really listens (an ipc socket on Linux and
        macOS, backend/listen.py) is in its connection file, and ``Status.endpoint`` reports it."""
        return f"port {self.port}" if self.host in ("127.0.0.1", "localhost", "::1") else f"{self.host}:{self.port}"

    def client(self) -> Any:
        from .wire import Log3DClient

        return Log3DClient(port=self.port, host=self.host, timeout_s=self.timeout_s,
                           connection_file=self.connection_file)

    def not_running_message(self) -> str:
        return (f"No LoG3D backend answers at {self.endpoint}. Press 'Start backend' in the LoG3D panel "
                f"or run `log3d serve --port {self.port}`, then try again.")


# --------------------------------------------------------------------------------------------
# Messages from threads to the main thread
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Status:
    """The answer to ``hello`` (``info``), or why there was none (``error``)."""

    info: dict[str, Any] | None
    error: str | None = None
    endpoint: str = ""  # where the client reached the server (from its connection file)


@dataclass(frozen=True)
class Progress:
    index: int
    total: int
    name: str
    stage: str
    fraction: float | None


@dataclass(frozen=True)
class MeshDone:
    """One object's remeshed surface, in the frame it was sent in, checked and with its edges
    derived here (off the main thread, see :mod:`mesh_arrays`)."""

    index: int
    name: str
    mesh: MeshArrays
    info: dict[str, Any]


@dataclass(frozen=True)
class Failed:
    """The task stopped on this error (for a remesh: the backend, not one object, is the problem)."""

    code: str
    message: str


@dataclass(frozen=True)
class ObjectFailed:
    """The backend refused or could not remesh one object; the batch goes on with the next."""

    index: int
    name: str
    code: str
    message: str


@dataclass(frozen=True)
class Finished:
    """The last message of every task."""

    cancelled: bool = False


@dataclass(frozen=True)
class TrainUpdate:
    job: str | None
    state: str
    step: int | None = None
    loss: float | None = None
    run_dir: str | None = None


Message = Status | Progress | MeshDone | Failed | ObjectFailed | Finished | TrainUpdate

# Errors about one mesh, not about the backend: the batch continues with the next object.
OBJECT_ERROR_CODES = frozenset({"bad_mesh", "empty_surface", "too_large", "bad_array", "out_of_memory"})


# --------------------------------------------------------------------------------------------
# The thread
# --------------------------------------------------------------------------------------------


class Cancelled(Exception):
    """Raised inside a task when the user asked it to stop."""


class Task(threading.Thread):
    """Runs ``self.work()`` in a daemon thread; everything it learns goes to ``self.messages`` and
    the last message is always :class:`Finished`. ``cancel()`` may be called from any thread."""

    def __init__(self, connection: Connection, name: str) -> None:
        super().__init__(name=f"log3d-{name}", daemon=True)
        self.connection = connection
        self.messages: queue.Queue[Message] = queue.Queue()
        self._cancel = threading.Event()

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def post(self, message: Message) -> None:
        self.messages.put(message)

    def drain(self) -> list[Message]:
        """Every message so far, without blocking."""
        out: list[Message] = []
        while True:
            try:
                out.append(self.messages.get_nowait())
            except queue.Empty:
                return out

    def run(self) -> None:
        cancelled = False
        try:
            self.work()
        except Cancelled:
            cancelled = True
        except Exception as exc:  # a bug or a missing dependency must still end the task visibly
            code = getattr(exc, "code", None)
            message = getattr(exc, "message", None)
            if code is None or message is None:
                code, message = "internal", f"{type(exc).__name__}: {exc}"
            self.post(Failed(str(code), str(message)))
        finally:
            self.post(Finished(cancelled=cancelled or self.cancel_requested))

    def work(self) -> None:
        raise NotImplementedError


def hello(client: Any, connection: Connection) -> dict[str, Any]:
    """``hello``, with the 'is the backend running?' message instead of a bare timeout."""
    from .wire import BackendError

    try:
        return client.hello()
    except BackendError as exc:
        if exc.code == "timeout":
            raise BackendError("timeout", connection.not_running_message()) from None
        if exc.code == "not_running":  # no trusted connection file: nothing was sent
            raise BackendError("not_running", f"{connection.not_running_message()} ({exc.message})") from None
        raise


class StatusTask(Task):
    """Asks the backend for its version, device and model (``hello``)."""

    def __init__(self, connection: Connection) -> None:
        super().__init__(connection, "status")

    def work(self) -> None:
        client = self.connection.client()
        try:
            info = hello(client, self.connection)
            self.post(Status(info, endpoint=client.endpoint))
        except Exception as exc:
            self.post(Status(None, getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"))
        finally:
            client.close()


class ShutdownTask(Task):
    """Asks the backend to stop (``shutdown``)."""

    def __init__(self, connection: Connection) -> None:
        super().__init__(connection, "shutdown")

    def work(self) -> None:
        client = self.connection.client()
        try:
            client.shutdown()
            self.post(Status(None, "stopped (shutdown sent)"))
        finally:
            client.close()


@dataclass
class MeshJob:
    """One object's triangles as the wire wants them (float32 [V, 3], int32 [F, 3]), with the
    attributes to carry over: material per triangle [F], colours per triangle corner [F, 3, 4·K]
    of ``color_layers`` (:class:`mesh_io.EvaluatedMesh`)."""

    name: str
    vertices: np.ndarray
    faces: np.ndarray
    material: np.ndarray | None = None
    colors: np.ndarray | None = None
    color_layers: tuple[ColorLayer, ...] = ()


@dataclass
class RemeshRequest:
    resolution: int = 256
    mode: str = "direct"
    cleanup: dict[str, Any] = field(default_factory=dict)
    voxel_size: float | None = None  # world units; N then follows from each object's extent
    polygons: str = "quads"  # or "triangles"
    refine_steps: int = 0  # VAE mode: latent refinement steps (sent only when asked: older backends lack it)


class RemeshTask(Task):
    """Remeshes several meshes one after another. An error about one mesh (:data:`OBJECT_ERROR_CODES`)
    is reported and the batch goes on; any other error (no backend, a backend that died, a refused
    option) stops it, as does a cancel. Results already received stay delivered."""

    def __init__(self, connection: Connection, jobs: Sequence[MeshJob], request: RemeshRequest,
                 startup_grace_s: float = 0.0) -> None:
        super().__init__(connection, "remesh")
        self.jobs = list(jobs)
        self.request = request
        self.startup_grace_s = startup_grace_s
        self.stage: str | None = None

    def work(self) -> None:
        from .wire import BackendError

        client = self.connection.client()
        try:
            info = self._first_hello(client)
            cleanup = self._cleanup_for(info)
            if self.request.mode not in info.get("capabilities", {}).get("modes", ["direct"]):
                raise BackendError("mode_unavailable", f"the backend at {self.connection.endpoint} has no LoG-VAE "
                                                       "weights loaded, so it cannot run 'vae' mode; choose 'direct' "
                                                       "or start it with --checkpoint")
            for index, job in enumerate(self.jobs):
                if self.cancel_requested:
                    raise Cancelled
                try:
                    self._remesh_one(client, index, job, cleanup)
                except BackendError as exc:
                    if exc.code not in OBJECT_ERROR_CODES:
                        raise
                    self.post(ObjectFailed(index, job.name, exc.code, exc.message))
                job.vertices = job.faces = job.material = job.colors = None  # type: ignore[assignment]  # release the input early
        finally:
            client.close()

    def _first_hello(self, client: Any) -> dict[str, Any]:
        """``hello``; a backend that is still starting (``startup_grace_s`` > 0: it was just launched
        from Blender, and loading weights takes a while) is waited for instead of failing at once."""
        from .wire import BackendError

        deadline = time.monotonic() + self.startup_grace_s
        while True:
            try:
                return hello(client, self.connection)
            except BackendError as exc:
                if exc.code not in ("timeout", "not_running") or time.monotonic() >= deadline:
                    raise
            if self.cancel_requested:
                raise Cancelled
            self.post(Progress(0, len(self.jobs), self.jobs[0].name, "waiting for the backend", None))

    def _cleanup_for(self, info: dict[str, Any]) -> dict[str, Any]:
        """The clean-up settings this backend knows (an older one may have none)."""
        offered = info.get("capabilities", {}).get("cleanup") or {}
        return {k: v for k, v in self.request.cleanup.items() if k in offered}

    def _remesh_one(self, client: Any, index: int, job: MeshJob, cleanup: dict[str, Any]) -> None:
        from .wire import BackendError

        total = len(self.jobs)
        self.stage = None
        self.post(Progress(index, total, job.name, "queued", 0.0))
        options: dict[str, Any] = {"polygons": self.request.polygons}
        if cleanup:
            options["cleanup"] = cleanup
        if self.request.voxel_size is not None:
            options["voxel_size"] = self.request.voxel_size
        if self.request.refine_steps:
            options["refine_steps"] = self.request.refine_steps
        try:
            job_id = client.submit_remesh(job.vertices, job.faces, resolution=self.request.resolution,
                                          mode=self.request.mode, material=job.material, colors=job.colors, **options)
        except BackendError as exc:
            if exc.code == "timeout":
                raise BackendError("timeout", f"The LoG3D backend at {self.connection.endpoint} did not accept "
                                              f"'{job.name}' within {self.connection.timeout_s:g} s.") from None
            raise
        quiet_since = time.monotonic()
        cancel_sent = False
        while True:
            if self.cancel_requested and not cancel_sent:
                client.cancel(job_id)
                cancel_sent = True
            events = client.poll(job_id)
            for event in events:
                if event.type == "progress":
                    self.stage = str(event.data.get("stage"))
                    self.post(Progress(index, total, job.name, self.stage, event.data.get("fraction")))
                elif event.type == "result":
                    try:
                        arrays = MeshArrays.of(event.arrays["vertices"], event.arrays["faces"],
                                               int(event.data.get("quads", 0)), event.arrays.get("material"),
                                               event.arrays.get("colors"),
                                               job.color_layers if "colors" in event.arrays else ())
                    except ValueError as exc:  # a result Blender must not be handed
                        self.post(ObjectFailed(index, job.name, "bad_result", str(exc)))
                        return
                    self.post(MeshDone(index, job.name, arrays, {**event.data, "job": job_id}))
                    return
                elif event.type == "error":
                    raise BackendError(str(event.data.get("code", "internal")), str(event.data.get("message", "")))
                elif event.type == "cancelled":
                    raise Cancelled
            now = time.monotonic()
            if events:
                quiet_since = now
            elif now - quiet_since > self.connection.heartbeat_s:
                self._heartbeat(client, job)
                quiet_since = time.monotonic()
            time.sleep(POLL_INTERVAL_S)

    def _heartbeat(self, client: Any, job: MeshJob) -> None:
        from .wire import BackendError

        try:
            client.hello()
        except BackendError as exc:
            if exc.code not in ("timeout", "not_running"):
                raise
            stage = STAGE_LABELS.get(self.stage or "", self.stage or "waiting in the queue")
            raise BackendError("timeout", f"The LoG3D backend at {self.connection.endpoint} stopped answering while "
                                          f"remeshing '{job.name}' ({stage}). Finished results were kept and the "
                                          "originals are untouched; restart the backend and run the remesh again.") from None


class TrainTask(Task):
    """Starts a training run (``train.start``) and follows it with ``train.status`` until it ends
    or :meth:`stop` is called (then ``train.stop``)."""

    def __init__(self, connection: Connection, options: dict[str, Any]) -> None:
        super().__init__(connection, "train")
        self.options = dict(options)

    def stop(self) -> None:
        self.cancel()

    def work(self) -> None:
        client = self.connection.client()
        try:
            hello(client, self.connection)
            job = client.train_start(**self.options)
            self.post(TrainUpdate(job, "running"))
            stop_sent = False
            while True:
                if self.cancel_requested and not stop_sent:
                    client.train_stop(job)
                    stop_sent = True
                terminal = [e for e in client.poll(job) if e.terminal]
                status = client.train_status(job, last=0)
                self.post(TrainUpdate(job, str(status["state"]), status.get("step"), status.get("loss"),
                                      status.get("run_dir")))
                if terminal:
                    end = terminal[-1]
                    if end.type == "error":
                        self.post(Failed(str(end.data.get("code")), str(end.data.get("message"))))
                    return
                if stop_sent:
                    time.sleep(0.2)  # the trainer is exiting: its terminal event comes soon
                else:
                    self._cancel.wait(TRAIN_STATUS_INTERVAL_S)
        finally:
            client.close()


class DecodeTask(Task):
    """Decodes one latent file through the backend (``decode``): the file is read here (numpy only)
    and its arrays sent, so the backend never opens a path it is given. The result comes back as
    a :class:`MeshDone` in the latents' original frame."""

    def __init__(self, connection: Connection, path: str, cleanup: dict[str, Any]) -> None:
        super().__init__(connection, "decode")
        self.path = path
        self.cleanup = dict(cleanup)

    def work(self) -> None:
        from .wire import BackendError, read_latent_arrays

        head, latents, coords = read_latent_arrays(self.path)
        client = self.connection.client()
        try:
            hello(client, self.connection)
            self.post(Progress(0, 1, head.get("source") or "latents", "decode", 0.0))

            def on_progress(stage: str, fraction: float | None) -> None:
                self.post(Progress(0, 1, str(head.get("source") or "latents"), stage, fraction))

            vertices, faces, info = client.decode(latents, coords, int(head["resolution"]), head["center"],
                                                  float(head["scale"]), on_progress=on_progress,
                                                  cleanup=self.cleanup, weights_sha256=str(head["weights_sha256"]))
            try:
                arrays = MeshArrays.of(np.array(vertices), np.array(faces))
            except ValueError as exc:  # a result Blender must not be handed
                raise BackendError("bad_result", str(exc)) from None
            self.post(MeshDone(0, str(head.get("source") or "latents"), arrays, info))
        finally:
            client.close()


def stage_fraction(mode: str, stage: str | None, fraction: float | None) -> float:
    """Progress within one object's remesh, from the stage reached: each stage of the mode gets an
    equal share (the server's fractions are per stage)."""
    order = STAGE_ORDER.get(mode, STAGE_ORDER["direct"])
    stage = STAGE_SLOT.get(stage or "", stage)
    if stage not in order:
        return 0.0
    return (order.index(stage) + min(max(float(fraction or 0.0), 0.0), 1.0)) / len(order)


def run_blocking(task: Task, on_message: Callable[[Message], None], timeout_s: float | None = None) -> None:
    """Start ``task`` and hand its messages to ``on_message`` on this thread until it finishes
    (background mode, where no timer or modal operator runs)."""
    task.start()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        try:
            message = task.messages.get(timeout=0.1)
        except queue.Empty:
            if deadline is not None and time.monotonic() > deadline:
                task.cancel()
            continue
        on_message(message)
        if isinstance(message, Finished):
            task.join(5.0)
            return
