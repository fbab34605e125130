"""LoG3D Studio for Blender: remesh objects through the local LoG3D backend (`log3d serve`).

A Blender 4.2+ extension (blender_manifest.toml) that also installs as a legacy add-on (bl_info
below) into Blender 3.4 – 4.1; older Blenders are refused at enable time with a message (3.4 is the
oldest tested: Debian's, in the real-window suite). No torch inside Blender: meshes go over ZeroMQ to the backend, which runs in its own
environment. The package is importable under any name — ``bl_ext.<repo>.log3d`` (extension),
``log3d`` (legacy add-on) or ``blender_addon`` (from the repository, for tests) — so every import
here is relative.

Modules: properties (scene settings), preferences (backend location), state (the run-time manager),
mesh_io (foreach_get/foreach_set), results (new objects next to originals), worker (network
threads), session (one remesh batch), operators, panel, backend_process, bootstrap (wheels for a
legacy install), wire (the wire client).
"""

from __future__ import annotations

from pathlib import Path

bl_info = {
    "name": "LoG3D Studio",
    "author": "LoG3D Studio",
    "version": (0, 1, 0),
    "blender": (3, 4, 0),
    "location": "3D Viewport > Sidebar (N) > LoG3D",
    "description": "Ultra-high-resolution remeshing through a local LoG3D backend",
    "category": "Mesh",
}

OLDEST_BLENDER = (3, 4, 0)  # the oldest Blender the add-on is tested in (tests/test_blender_window.py)

_registered_classes: list[type] = []


def _classes() -> list[type]:
    from . import operators, panel, preferences, properties

    return [*properties.CLASSES, *preferences.CLASSES, *operators.CLASSES, *panel.CLASSES]


def register() -> None:
    import bpy

    if bpy.app.version < OLDEST_BLENDER:
        raise RuntimeError(f"LoG3D Studio needs Blender {'.'.join(map(str, OLDEST_BLENDER))} or newer; "
                           f"this is Blender {bpy.app.version_string}.")
    from . import bootstrap, operators, properties, state

    problem = bootstrap.ensure_dependencies(Path(__file__).resolve().parent)
    for cls in _classes():
        bpy.utils.register_class(cls)
        _registered_classes.append(cls)
    properties.register()
    manager = state.install(background=bool(bpy.app.background), redraw=operators.redraw_viewports)
    if problem:
        manager.last_error = problem
    if not bpy.app.background:
        from . import preferences

        manager.connection_factory = lambda timeout_s=None: preferences.connection(None, timeout_s)
        bpy.app.timers.register(_tick, first_interval=0.5, persistent=True)
    bpy.app.handlers.load_pre.append(bpy.app.handlers.persistent(_on_load_pre))  # survives file loads


def unregister() -> None:
    import bpy

    from . import properties, state

    if _on_load_pre in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(_on_load_pre)
    if bpy.app.timers.is_registered(_tick):
        bpy.app.timers.unregister(_tick)
    state.uninstall()
    properties.unregister()
    while _registered_classes:
        bpy.utils.unregister_class(_registered_classes.pop())


def _tick() -> float | None:
    """The app timer: hand the manager's background messages to the main thread."""
    from . import state

    try:
        return state.manager().tick()
    except RuntimeError:  # unregistered between two ticks
        return None


def _on_load_pre(*_args: object) -> None:
    """A new .blend is being loaded: a running remesh's originals are about to disappear."""
    from . import state

    try:
        manager = state.manager()
    except RuntimeError:
        return
    if manager.session is not None:
        manager.session.abandon()

