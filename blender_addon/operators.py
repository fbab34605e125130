"""The operators behind the panel's buttons (all under ``bpy.ops.log3d``).

Remesh Selected / Remesh All run as a modal operator in the UI: the network task works in its own
thread and a window timer drains its messages, so Blender stays responsive; the results are created
when it ends and the operator finishes once (one undo step). In background mode (``blender -b``),
or when called from a script (``execute``), they run synchronously so batch scripts work::

    blender -b scene.blend --python-expr "import bpy; bpy.ops.log3d.remesh_all(); \\
        bpy.ops.wm.save_as_mainfile(filepath='out.blend')"

Errors are reported with ``self.report({'ERROR'}, ...)`` (a script sees a RuntimeError with the
message) and kept in the panel as the last error.
"""

from __future__ import annotations

from typing import Iterator

import bpy

from . import preferences, results, state, worker
from .backend_process import BackendLaunchError, BackendProcess
from .session import Outcome, RemeshSession, UserError

TIMER_S = 0.1
_APPLIED = object()  # the end of RemeshSession.apply_steps


def redraw_viewports() -> None:
    """Tag the 3D Viewports' sidebars for redraw (the panel lives there). Only the sidebar: a
    progress message arrives many times a second, and redrawing the whole viewport each time (the
    scene, in software GL on a machine without a GPU) would cost the UI more than the remesh does."""
    wm = bpy.context.window_manager
    if wm is None:
        return
    for window in wm.windows:
        screen = window.screen
        if screen is None:
            continue
        for area in screen.areas:
            if area.type == "VIEW_3D":
                for region in area.regions:
                    if region.type == "UI":
                        region.tag_redraw()


def _fail(op: bpy.types.Operator, message: str) -> set[str]:
    state.manager().set_error(message)
    op.report({"ERROR"}, message)
    return {"CANCELLED"}


class _Remesh:
    """Shared by Remesh Selected and Remesh All: subclasses say which objects."""

    bl_options = {"UNDO"}  # one undo step; no redo panel (a redo would send everything again)

    _session: RemeshSession | None = None
    _applying: Iterator[None] | None = None  # the results entering the scene, a slice per tick
    _timer = None

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if context.mode != "OBJECT":
            cls.poll_message_set("Switch to Object Mode first")
            return False
        if state.manager().session is not None:
            cls.poll_message_set("A LoG3D remesh is running")
            return False
        return True

    def targets(self, context: bpy.types.Context) -> list[bpy.types.Object]:
        """The objects to remesh (sent in name order, so progress reads predictably)."""
        raise NotImplementedError

    def _start(self, context: bpy.types.Context) -> RemeshSession | None:
        try:
            return RemeshSession.start(context, state.manager(), self.targets(context), preferences.connection(context))
        except (UserError, RuntimeError) as exc:
            _fail(self, str(exc))
            return None

    def execute(self, context: bpy.types.Context) -> set[str]:
        session = self._start(context)
        if session is None:
            return {"CANCELLED"}
        session.wait()
        return self._finish(context, session)

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if bpy.app.background or context.window is None:
            return self.execute(context)
        session = self._start(context)
        if session is None:
            return {"CANCELLED"}
        self._session = session
        wm = context.window_manager
        self._timer = wm.event_timer_add(TIMER_S, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        session = self._session
        assert session is not None
        if event.type == "ESC" and event.value == "PRESS" and self._applying is None:
            session.cancel()
            return {"RUNNING_MODAL"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        if self._applying is None:
            if not session.pump():
                return {"PASS_THROUGH"}
            self._applying = session.apply_steps(context.scene, context.view_layer)
        # results enter the scene one step (one bulk copy) per tick, so the UI answers between them
        if next(self._applying, _APPLIED) is not _APPLIED:
            return {"PASS_THROUGH"}
        context.window_manager.event_timer_remove(self._timer)
        self._timer = None
        self._session = None
        self._applying = None
        return self._report(session.outcome)

    def cancel(self, context: bpy.types.Context) -> None:
        """Blender ends the modal operator (window closed, file loaded): stop the task, keep nothing."""
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None
        if self._applying is not None:
            self._applying.close()  # ends the session; objects already linked stay
            self._applying = None
        if self._session is not None:
            self._session.abandon()
            self._session = None

    def _finish(self, context: bpy.types.Context, session: RemeshSession) -> set[str]:
        return self._report(session.apply(context))

    def _report(self, outcome: Outcome) -> set[str]:
        level, message = outcome.summary()
        self.report({level}, message)
        return {"FINISHED"} if outcome.created else {"CANCELLED"}


class LOG3D_OT_remesh_selected(_Remesh, bpy.types.Operator):
    """Remesh the selected mesh objects through the LoG3D backend; each result is a new object next to its original"""

    bl_idname = "log3d.remesh_selected"
    bl_label = "Remesh Selected"

    def targets(self, context: bpy.types.Context) -> list[bpy.types.Object]:
        return sorted((o for o in context.selected_objects if o.type == "MESH"), key=lambda o: o.name)


class LOG3D_OT_remesh_all(_Remesh, bpy.types.Operator):
    """Remesh every visible mesh object of the scene (or of the active collection) through the LoG3D backend"""

    bl_idname = "log3d.remesh_all"
    bl_label = "Remesh All"

    def targets(self, context: bpy.types.Context) -> list[bpy.types.Object]:
        if context.scene.log3d.scope == "COLLECTION":
            candidates = context.view_layer.active_layer_collection.collection.all_objects
        else:
            candidates = context.view_layer.objects
        return sorted((o for o in candidates
                       if o.type == "MESH" and not results.is_result(o) and o.visible_get(view_layer=context.view_layer)),
                      key=lambda o: o.name)


class LOG3D_OT_cancel(bpy.types.Operator):
    """Cancel the running LoG3D remesh (results that already came back are kept)"""

    bl_idname = "log3d.cancel"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return state.manager().session is not None

    def execute(self, context: bpy.types.Context) -> set[str]:
        state.manager().session.cancel()
        return {"FINISHED"}


class LOG3D_OT_clear_error(bpy.types.Operator):
    """Dismiss the last error"""

    bl_idname = "log3d.clear_error"
    bl_label = "Clear Error"

    def execute(self, context: bpy.types.Context) -> set[str]:
        state.manager().clear_error()
        return {"FINISHED"}


class LOG3D_OT_backend_check(bpy.types.Operator):
    """Ask the backend for its status now"""

    bl_idname = "log3d.backend_check"
    bl_label = "Check Backend"

    def execute(self, context: bpy.types.Context) -> set[str]:
        manager = state.manager()
        try:
            connection = preferences.connection(context, timeout_s=state.STATUS_TIMEOUT_S)
        except RuntimeError as exc:
            return _fail(self, str(exc))
        if bpy.app.background:
            task = worker.StatusTask(connection)
            worker.run_blocking(task, lambda m: manager.apply(task, m))
        else:
            manager.check_status(connection)
        return {"FINISHED"}


class LOG3D_OT_backend_start(bpy.types.Operator):
    """Start `log3d serve` from the environment set in the add-on preferences"""

    bl_idname = "log3d.backend_start"
    bl_label = "Start Backend"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        manager = state.manager()
        return manager.backend is None or not manager.backend.running

    def execute(self, context: bpy.types.Context) -> set[str]:
        manager = state.manager()
        prefs = preferences.get(context)
        try:
            manager.backend = BackendProcess.start(
                bpy.path.abspath(prefs.env_path), int(prefs.port), prefs.device,
                bpy.path.abspath(prefs.checkpoint) if prefs.checkpoint else "",
                bpy.path.abspath(prefs.connection_file) if prefs.connection_file else "", prefs.host,
                bpy.path.abspath(prefs.data_root) if prefs.data_root else "")
        except BackendLaunchError as exc:
            return _fail(self, str(exc))
        manager.clear_error()
        manager.request_status_soon()
        self.report({"INFO"}, f"LoG3D: starting the backend (pid {manager.backend.pid}, log {manager.backend.log_path})")
        return {"FINISHED"}


class LOG3D_OT_backend_stop(bpy.types.Operator):
    """Ask the backend to shut down (queued jobs are cancelled, training runs stopped)"""

    bl_idname = "log3d.backend_stop"
    bl_label = "Stop Backend"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return state.manager().status.connected is True and state.manager().session is None

    def execute(self, context: bpy.types.Context) -> set[str]:
        manager = state.manager()
        try:
            manager.run_side_task(worker.ShutdownTask(preferences.connection(context)))
        except RuntimeError as exc:
            return _fail(self, str(exc))
        manager.request_status_soon()
        return {"FINISHED"}


class LOG3D_OT_train_start(bpy.types.Operator):
    """Start a LoG-VAE training run on the backend (`log3d train` in a child process of the backend)"""

    bl_idname = "log3d.train_start"
    bl_label = "Start Training"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return state.manager().train_task is None

    def execute(self, context: bpy.types.Context) -> set[str]:
        manager = state.manager()
        training = context.scene.log3d.training
        if not training.dataset:
            return _fail(self, "Name a dataset (a cache in the backend's data folder) for training first.")
        try:
            task = worker.TrainTask(preferences.connection(context), training.train_options())
        except RuntimeError as exc:
            return _fail(self, str(exc))
        manager.training = state.TrainingState(state="starting")
        manager.train_task = task
        manager.run_side_task(task)
        return {"FINISHED"}


class LOG3D_OT_train_stop(bpy.types.Operator):
    """Stop the training run (train.stop)"""

    bl_idname = "log3d.train_stop"
    bl_label = "Stop Training"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return state.manager().train_task is not None

    def execute(self, context: bpy.types.Context) -> set[str]:
        state.manager().train_task.stop()
        return {"FINISHED"}


class LOG3D_OT_import_latents(bpy.types.Operator):
    """Decode a LoG-VAE latent file (`log3d encode`, or a generator's sample) through the backend and add it as a mesh"""

    bl_idname = "log3d.import_latents"
    bl_label = "Import Latents"
    bl_options = {"UNDO"}

    filepath: bpy.props.StringProperty(name="Latent file", subtype="FILE_PATH")
    filter_glob: bpy.props.StringProperty(default="*.safetensors", options={"HIDDEN"})

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return state.manager().decode_task is None

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        manager = state.manager()
        path = bpy.path.abspath(self.filepath)
        try:
            from .wire import read_latent_arrays

            read_latent_arrays(path)  # a bad file is reported now, not from a thread
            task = worker.DecodeTask(preferences.connection(context), path, context.scene.log3d.cleanup_options())
        except (RuntimeError, ValueError) as exc:
            return _fail(self, str(exc))
        manager.clear_error()
        if bpy.app.background:  # scripts and tests: synchronous, like the remesh operators
            count = len(manager.decoded)
            worker.run_blocking(task, lambda message: manager.apply(task, message))
            if len(manager.decoded) == count:
                return _fail(self, manager.last_error or "decoding the latent file failed")
            return {"FINISHED"}
        manager.decode_task = task
        manager.run_side_task(task)  # the object appears when the backend answers (its own undo step)
        self.report({"INFO"}, f"LoG3D: decoding {path} on the backend")
        return {"FINISHED"}


CLASSES = (LOG3D_OT_import_latents, LOG3D_OT_remesh_selected, LOG3D_OT_remesh_all, LOG3D_OT_cancel, LOG3D_OT_clear_error,
           LOG3D_OT_backend_check, LOG3D_OT_backend_start, LOG3D_OT_backend_stop,
           LOG3D_OT_train_start, LOG3D_OT_train_stop)
