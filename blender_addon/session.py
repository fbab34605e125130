"""One Remesh Selected / Remesh All, on the main thread.

``RemeshSession.start`` reads the evaluated meshes (main thread, foreach_get) and starts the
network task; ``pump`` applies the task's messages to the manager's progress; ``apply_steps`` creates the
result objects — all of them at the end (in slices short enough for one UI tick), so the whole
remesh is a single undo step and a cancelled or failed batch still keeps every result that came
back. Nothing here ever writes to an
original object or its mesh.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import bpy

from . import mesh_io, results, worker
from .state import JobProgress, Manager

STARTUP_GRACE_S = 180.0


class UserError(Exception):
    """Something the user can fix (nothing selected, no backend configured); shown as is."""


@dataclass
class Outcome:
    created: list[bpy.types.Object] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # objects with nothing to remesh
    object_errors: list[worker.ObjectFailed] = field(default_factory=list)
    error: worker.Failed | None = None
    cancelled: bool = False
    elapsed_s: float = 0.0

    def summary(self) -> tuple[str, str]:
        """(report level, message) for the operator."""
        faces = sum(len(o.data.polygons) for o in self.created)
        done = f"LoG3D: {len(self.created)} object(s) remeshed ({faces:,} faces) in {self.elapsed_s:.1f} s"
        notes = [f"'{e.name}': {e.code}: {e.message}" for e in self.object_errors]
        notes += [f"'{name}' has no faces, skipped" for name in self.skipped]
        if self.error is not None:
            kept = f" {len(self.created)} finished result(s) kept." if self.created else " Nothing was changed."
            return "ERROR", f"LoG3D: {self.error.message}{kept}"
        if self.cancelled:
            return "WARNING", f"LoG3D: cancelled; {len(self.created)} result(s) kept" + "".join(f"; {n}" for n in notes)
        # An object the backend could not remesh is a warning, not an error: a batch script goes on
        # (and saves) with the other results; the panel keeps the message as the last error.
        return ("WARNING" if notes else "INFO"), done + "".join(f"; {n}" for n in notes)


class RemeshSession:
    """A running batch: snapshots of the originals, the network task and what came back."""

    def __init__(self, manager: Manager, snapshots: list[results.Snapshot], task: worker.RemeshTask,
                 skipped: list[str]) -> None:
        self.manager = manager
        self.snapshots = snapshots
        self.task = task
        self.results: dict[int, worker.MeshDone] = {}
        self.outcome = Outcome(skipped=skipped)
        self.finished = False
        self.started = time.monotonic()

    @classmethod
    def start(cls, context: bpy.types.Context, manager: Manager, objects: Sequence[bpy.types.Object],
              connection: worker.Connection) -> "RemeshSession":
        """Read the objects' evaluated meshes and start sending them."""
        if manager.session is not None:
            raise UserError("A LoG3D remesh is already running; wait for it or press Cancel.")
        if not objects:
            raise UserError("No mesh objects to remesh.")
        settings = context.scene.log3d
        depsgraph = context.evaluated_depsgraph_get()
        snapshots, jobs, skipped = [], [], []
        for obj in objects:
            mesh = mesh_io.evaluated_mesh(obj, depsgraph, attributes=settings.keep_attributes)
            if len(mesh.faces) == 0:
                skipped.append(obj.name)
                continue
            snapshots.append(results.Snapshot.of(obj))
            jobs.append(worker.MeshJob(obj.name, mesh.vertices, mesh.faces, mesh.material, mesh.colors, mesh.color_layers))
        if not jobs:
            raise UserError("The objects have no faces to remesh: " + ", ".join(skipped))
        request = worker.RemeshRequest(int(settings.resolution), settings.mode, settings.cleanup_options(),
                                       voxel_size=settings.voxel_size if settings.size_mode == "VOXEL" else None,
                                       polygons=settings.polygons,
                                       refine_steps=settings.refine_steps if settings.mode == "vae" else 0)
        # A backend launched from Blender may still be loading: wait for it rather than fail.
        starting = manager.backend is not None and manager.backend.running and not manager.status.connected
        task = worker.RemeshTask(connection, jobs, request, startup_grace_s=STARTUP_GRACE_S if starting else 0.0)
        session = cls(manager, snapshots, task, skipped)
        manager.session = session
        manager.progress = JobProgress(total=len(jobs), mode=worker.stage_path(settings.mode, request.cleanup),
                                       name=jobs[0].name)
        manager.clear_error()
        session.task.start()
        return session

    def cancel(self) -> None:
        """Esc or the Cancel button: the backend is told to stop, and the session ends at the next
        pump without waiting for its answer (a job can take seconds to reach a point where it
        stops); results that already came back are kept, later ones are dropped."""
        self.task.cancel()
        if not self.finished:
            self.outcome.cancelled = self.outcome.error is None
            self.finished = True

    def pump(self) -> bool:
        """Apply the messages received so far; True once the task has finished."""
        for message in self.task.drain():
            self.handle(message)
        return self.finished

    def wait(self) -> None:
        """Block until the task has finished (background mode)."""
        import queue

        while not self.finished:
            try:
                self.handle(self.task.messages.get(timeout=0.5))
            except queue.Empty:
                continue

    def handle(self, message: worker.Message) -> None:
        progress = self.manager.progress
        if isinstance(message, worker.Progress) and progress is not None:
            progress.index, progress.name = message.index, message.name
            progress.stage, progress.fraction = message.stage, message.fraction
        elif isinstance(message, worker.MeshDone):
            self.results[message.index] = message
        elif isinstance(message, worker.ObjectFailed):
            self.outcome.object_errors.append(message)
        elif isinstance(message, worker.Failed):
            self.outcome.error = message
        elif isinstance(message, worker.Finished):
            self.outcome.cancelled = (self.outcome.cancelled or message.cancelled) and self.outcome.error is None
            self.finished = True
        self.manager.redraw()

    def apply(self, context: bpy.types.Context) -> Outcome:
        """Create every result that came back, in one go (background mode, scripts)."""
        for _ in self.apply_steps(context.scene, context.view_layer):
            pass
        return self.outcome

    def apply_steps(self, scene: bpy.types.Scene, view_layer: bpy.types.ViewLayer) -> Iterator[None]:
        """Create every result that came back (main thread) and end the session, in steps short
        enough for one UI timer tick each (the modal operator runs a few per tick): a 1024³ result
        has millions of faces, and built in one call it would freeze the UI for seconds."""
        hide_original = scene.log3d.hide_original
        try:
            for index in sorted(self.results):
                done = self.results.pop(index)
                for obj in results.result_steps(self.snapshots[index], done.mesh, hide_original, scene, done.info):
                    if obj is None:
                        yield None
                    else:
                        self.outcome.created.append(obj)
            if self.outcome.created:
                for obj in view_layer.objects.selected:
                    obj.select_set(False)
                for obj in self.outcome.created:
                    if obj.name in view_layer.objects:
                        obj.select_set(True)
                        view_layer.objects.active = obj
        finally:
            self.outcome.elapsed_s = time.monotonic() - self.started
            self._end()
        level, message = self.outcome.summary()
        if level == "ERROR" or self.outcome.object_errors:
            self.manager.set_error(message)

    def abandon(self) -> None:
        """Stop without creating anything (a new file was loaded, the add-on was disabled)."""
        self.task.cancel()
        self._end()

    def _end(self) -> None:
        if self.manager.session is self:
            self.manager.session = None
            self.manager.progress = None
        self.manager.redraw()
