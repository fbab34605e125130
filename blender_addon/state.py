"""The add-on's run-time state: one :class:`Manager`, created by ``register()`` and dropped by
``unregister()``.

It holds what the panel shows and the operators share: the backend's status, the running remesh
(for the progress bar and Cancel), the last error, a backend process started from Blender and the
training run. Background threads never write to it; the main thread copies their messages in (an
app timer, :meth:`Manager.tick`, in the UI; the operators themselves in background mode).
"""

from __future__ import annotations

import atexit
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from . import worker
from .backend_process import BackendProcess

TICK_S = 0.2
STATUS_EVERY_S = (15.0, 4.0)  # re-check a connected / an unreachable backend this often (UI only)
STARTING_STATUS_EVERY_S = 1.0
STATUS_TIMEOUT_S = 1.5


@dataclass
class BackendStatus:
    """What ``hello`` said (``connected`` is None before the first check)."""

    connected: bool | None = None
    endpoint: str = ""
    version: str = ""
    device: str = ""
    model: str = ""
    modes: tuple[str, ...] = ("direct",)
    cleanup: dict[str, Any] | None = None
    message: str = ""
    checked_at: float = 0.0
    datasets: tuple[str, ...] | None = None  # the training caches the backend may use (hello)

    @classmethod
    def from_hello(cls, endpoint: str, info: dict[str, Any]) -> "BackendStatus":
        model = info.get("model") or None
        if model:
            label = f"{model.get('preset', '?')} ({model.get('parameters', 0) / 1e6:.1f}M, {model.get('device', '')})"
        else:
            label = "none (direct mode only)"
        caps = info.get("capabilities", {})
        datasets = info.get("datasets")
        return cls(True, endpoint, str(info.get("version", "")), str(info.get("device", "")), label,
                   tuple(caps.get("modes", ("direct",))), caps.get("cleanup"), "", time.monotonic(),
                   tuple(str(d) for d in datasets) if isinstance(datasets, list) else None)


@dataclass
class JobProgress:
    """Where the running remesh is, for the progress bar."""

    total: int
    mode: str
    index: int = 0
    name: str = ""
    stage: str = "starting"
    fraction: float | None = 0.0
    started: float = field(default_factory=time.monotonic)

    @property
    def overall(self) -> float:
        within = worker.stage_fraction(self.mode, self.stage, self.fraction)
        return min(1.0, (self.index + within) / max(self.total, 1))

    @property
    def label(self) -> str:
        stage = worker.STAGE_LABELS.get(self.stage, self.stage.replace("_", " ").capitalize())
        count = f" ({self.index + 1}/{self.total})" if self.total > 1 else ""
        return f"{self.name}{count}: {stage}"


@dataclass
class TrainingState:
    job: str | None = None
    state: str = ""
    step: int | None = None
    loss: float | None = None
    run_dir: str | None = None
    message: str = ""

    @property
    def running(self) -> bool:
        return self.state in ("starting", "running")


class Manager:
    """See the module docstring. ``redraw`` is called after anything the panel shows has changed."""

    def __init__(self, background: bool, redraw: Callable[[], None] = lambda: None) -> None:
        self.background = background
        self.redraw = redraw
        self.status = BackendStatus()
        self.progress: JobProgress | None = None
        self.session: Any = None  # session.RemeshSession while a remesh runs
        self.last_error = ""
        self.backend: BackendProcess | None = None
        self.training = TrainingState()
        self.train_task: worker.TrainTask | None = None
        self.decode_task: worker.DecodeTask | None = None
        self.decoded: list[str] = []  # names of the objects made from latent files, newest last
        self._status_task: worker.StatusTask | None = None
        self._side_tasks: list[worker.Task] = []
        self._next_status_check = 0.0
        self.connection_factory: Callable[..., worker.Connection] | None = None

    # -- errors ------------------------------------------------------------------------------

    def datasets(self) -> tuple[str, ...] | None:
        """The backend's training caches, when a connected backend told us (None: not known)."""
        return self.status.datasets if self.status.connected else None

    def set_error(self, message: str) -> None:
        self.last_error = message
        self.redraw()

    def clear_error(self) -> None:
        self.last_error = ""
        self.redraw()

    # -- background tasks --------------------------------------------------------------------

    def run_side_task(self, task: worker.Task) -> None:
        """Start a task whose messages :meth:`tick` applies (status checks, shutdown, training)."""
        self._side_tasks.append(task)
        task.start()

    def check_status(self, connection: worker.Connection) -> None:
        """Ask the backend for ``hello`` in a thread, unless a check is already under way."""
        if self._status_task is not None and self._status_task.is_alive():
            return
        self.status.endpoint = connection.endpoint
        self._status_task = worker.StatusTask(connection)
        self.run_side_task(self._status_task)

    def tick(self) -> float | None:
        """One timer step: apply the side tasks' messages and re-check the backend now and then.
        Returns the delay before the next step (``bpy.app.timers`` protocol)."""
        changed = False
        for task in list(self._side_tasks):
            for message in task.drain():
                changed = True
                self.apply(task, message)
            if not task.is_alive() and task.messages.empty():
                self._side_tasks.remove(task)
        if self.connection_factory is not None and time.monotonic() >= self._next_status_check:
            try:
                self.check_status(self.connection_factory(timeout_s=STATUS_TIMEOUT_S))
            except RuntimeError as exc:  # e.g. unreadable preferences
                self.status = BackendStatus(False, message=str(exc), checked_at=time.monotonic())
            starting = self.backend is not None and self.backend.running and not self.status.connected
            self._next_status_check = time.monotonic() + (
                STARTING_STATUS_EVERY_S if starting else STATUS_EVERY_S[0 if self.status.connected else 1])
        if self.backend is not None and not self.backend.running and self.status.connected is not True:
            changed = self._backend_exited() or changed
        if changed:
            self.redraw()
        return TICK_S

    def apply(self, task: worker.Task, message: worker.Message) -> None:
        """Take in one message of a side task (main thread)."""
        if isinstance(message, worker.Status):
            if message.info is not None:
                self.status = BackendStatus.from_hello(message.endpoint or task.connection.endpoint, message.info)
            else:
                self.status = BackendStatus(False, task.connection.endpoint, message=message.error or "",
                                            checked_at=time.monotonic())
        elif isinstance(message, worker.TrainUpdate):
            self.training = TrainingState(message.job, message.state, message.step, message.loss,
                                          message.run_dir or self.training.run_dir)
        elif isinstance(message, worker.Failed):
            if isinstance(task, worker.TrainTask):
                self.training.state = "failed"
                self.training.message = message.message
            self.set_error(message.message)
        elif isinstance(message, worker.MeshDone) and isinstance(task, worker.DecodeTask):
            self._place_decoded(task, message)
        elif isinstance(message, worker.Finished) and isinstance(task, worker.DecodeTask):
            self.decode_task = None
        elif isinstance(message, worker.Finished) and isinstance(task, worker.TrainTask):
            if self.training.running:
                self.training.state = "cancelled" if message.cancelled else "ended"
            self.train_task = None

    def _place_decoded(self, task: "worker.DecodeTask", message: "worker.MeshDone") -> None:
        """A decoded latent file becomes a new object in the scene (main thread), one undo step."""
        import os

        import bpy

        from . import results

        name = os.path.splitext(os.path.basename(task.path))[0] + "_decoded"
        obj = results.place_decoded(name, message.mesh, task.path, bpy.context.scene.collection)
        self.decoded.append(obj.name)
        if not bpy.app.background:
            bpy.ops.ed.undo_push(message="LoG3D: import latents")

    def _backend_exited(self) -> bool:
        backend = self.backend
        assert backend is not None
        if backend.returncode in (0, None):
            self.backend = None
            return True
        self.set_error(f"The backend exited with code {backend.returncode}:\n{backend.log_tail()}")
        self.backend = None
        return True

    def request_status_soon(self) -> None:
        self._next_status_check = 0.0

    # -- shutting down -----------------------------------------------------------------------

    def close(self) -> None:
        """Stop everything this manager started (``unregister``, Blender quitting)."""
        if self.session is not None:
            self.session.abandon()
            self.session = None
        if self.train_task is not None:
            self.train_task.stop()
        for task in self._side_tasks:
            task.cancel()
        if self.backend is not None:
            self.backend.terminate()
            self.backend = None


_manager: Manager | None = None


def manager() -> Manager:
    """The manager of the registered add-on."""
    if _manager is None:
        raise RuntimeError("the LoG3D add-on is not registered")
    return _manager


def install(background: bool, redraw: Callable[[], None]) -> Manager:
    global _manager
    _manager = Manager(background, redraw)
    atexit.register(_manager.close)  # a backend started from Blender ends with Blender
    return _manager


def uninstall() -> None:
    global _manager
    if _manager is not None:
        atexit.unregister(_manager.close)
        _manager.close()
    _manager = None
