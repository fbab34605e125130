"""Add-on preferences: where the backend's environment is and how to reach the backend.

Kept per Blender installation (not per .blend file). ``install.py --blender`` fills in
``env_path`` with the virtual environment it made, so the panel's *Start backend* button works
without any set-up. Settings that belong to a scene (resolution, clean-up) are in properties.py.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import bpy
from bpy.props import EnumProperty, FloatProperty, IntProperty, StringProperty

from .worker import Connection

# One place for the defaults: the properties below and the fallback when the add-on runs without
# an entry in Preferences > Add-ons (``register()`` called directly, e.g. from a script).
DEFAULTS: dict[str, Any] = {
    "env_path": "",
    "host": "127.0.0.1",
    "port": 5557,
    "device": "auto",
    "checkpoint": "",
    "connection_file": "",
    "data_root": "",
    "timeout_s": 5.0,
    "heartbeat_s": 3.0,
}


class LOG3D_AddonPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    env_path: StringProperty(
        name="Backend environment", subtype="DIR_PATH", default=DEFAULTS["env_path"],
        description="The virtual environment install.py made (the .venv folder, or the folder holding it); "
                    "Start backend runs its `log3d serve`")
    host: StringProperty(name="Host", default=DEFAULTS["host"],
                         description="Address of the backend (127.0.0.1: this computer)")
    port: IntProperty(name="Port", default=DEFAULTS["port"], min=1, max=65535,
                      description="The backend's number (`log3d serve --port`): its TCP port, or on Linux and macOS the name of its private socket")
    device: EnumProperty(
        name="Device", default=DEFAULTS["device"],
        items=[("auto", "Auto", "CUDA when available, else CPU"), ("cuda", "CUDA", "NVIDIA GPU"),
               ("cpu", "CPU", "No GPU")],
        description="Where a backend started from Blender runs the LoG-VAE")
    checkpoint: StringProperty(
        name="Checkpoint", subtype="FILE_PATH", default=DEFAULTS["checkpoint"],
        description="LoG-VAE weights for a backend started from Blender (empty: the shipped ones, if any)")
    connection_file: StringProperty(
        name="Connection file", subtype="FILE_PATH", default=DEFAULTS["connection_file"],
        description="The backend's keys (`log3d serve --connection-file`); empty: the file the backend on this "
                    "port wrote in your runtime folder, found automatically")
    data_root: StringProperty(
        name="Training data folder", subtype="DIR_PATH", default=DEFAULTS["data_root"],
        description="Folder holding UBlock caches that a backend started from Blender may train on "
                    "(`log3d serve --data-root`); the training panel names a cache inside it")
    timeout_s: FloatProperty(name="Answer timeout (s)", default=DEFAULTS["timeout_s"], min=0.5, max=120.0,
                             description="How long the backend may take to answer a request")
    heartbeat_s: FloatProperty(
        name="Heartbeat (s)", default=DEFAULTS["heartbeat_s"], min=0.5, max=60.0,
        description="After this long without news of a running job, check that the backend is still alive")

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        layout.prop(self, "env_path")
        row = layout.row()
        row.prop(self, "host")
        row.prop(self, "port")
        row = layout.row()
        row.prop(self, "device")
        row.prop(self, "checkpoint")
        layout.prop(self, "connection_file")
        layout.prop(self, "data_root")
        row = layout.row()
        row.prop(self, "timeout_s")
        row.prop(self, "heartbeat_s")


def get(context: bpy.types.Context | None = None) -> Any:
    """The add-on's preferences, or the defaults when it has no preferences entry."""
    context = context or bpy.context
    addon = context.preferences.addons.get(__package__)
    if addon is not None and addon.preferences is not None:
        return addon.preferences
    return SimpleNamespace(**DEFAULTS)


def connection(context: bpy.types.Context | None = None, timeout_s: float | None = None) -> Connection:
    """A :class:`Connection` from the preferences (read here, on the main thread)."""
    prefs = get(context)
    connection_file = str(Path(bpy.path.abspath(prefs.connection_file))) if prefs.connection_file else None
    return Connection(host=prefs.host, port=int(prefs.port), connection_file=connection_file,
                      timeout_s=float(timeout_s if timeout_s is not None else prefs.timeout_s),
                      heartbeat_s=float(prefs.heartbeat_s))


CLASSES = (LOG3D_AddonPreferences,)
