"""Where a remesh result goes: a new object next to its original, never a change to the original.

The new object ``<name>_log3d`` gets the original's parent (with its parent inverse), transform
channels and therefore the same ``matrix_world``, the same collections and the same materials
(slot for slot, object- or data-linked). With *Materials & Colours* on, each face of the result
takes the material index of the input face under it and each colour attribute comes back under its
name and domain (the backend reads them at the input surface under each face and vertex:
``model/attributes.py``); off, every face uses the first slot. The original can be hidden in the viewport
(``hide_set``, a view-layer flag: its data stays as it was) — that is the only thing done to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import bpy
import numpy as np

from . import mesh_io
from .mesh_arrays import MeshArrays

RESULT_SUFFIX = "_log3d"
SOURCE_KEY = "log3d_source"  # custom property on a result: the name of its original

_TRANSFORM_CHANNELS = ("rotation_mode", "location", "rotation_euler", "rotation_quaternion", "rotation_axis_angle",
                       "scale", "delta_location", "delta_rotation_euler", "delta_rotation_quaternion", "delta_scale")


@dataclass
class Snapshot:
    """What is remembered about an original when its mesh is sent: a remesh can take minutes, and
    by then the user may have renamed, moved or deleted the object."""

    obj: bpy.types.Object
    name: str
    matrix_world: np.ndarray

    @classmethod
    def of(cls, obj: bpy.types.Object) -> "Snapshot":
        return cls(obj, obj.name, mesh_io.matrix_array(obj.matrix_world))

    def original(self) -> bpy.types.Object | None:
        """The original object if it still exists (an undo or a delete invalidates the reference)."""
        try:
            self.obj.name  # noqa: B018 - raises ReferenceError once the object is gone
            return self.obj
        except ReferenceError:
            return bpy.data.objects.get(self.name)


def is_result(obj: bpy.types.Object) -> bool:
    return SOURCE_KEY in obj.keys()


def place_result(snapshot: Snapshot, result: MeshArrays, hide_original: bool, scene: bpy.types.Scene,
                 info: dict[str, Any] | None = None) -> bpy.types.Object:
    """Create ``<name>_log3d`` from a world-space result in one go; returns the new object."""
    obj = None
    for obj in result_steps(snapshot, result, hide_original, scene, info):
        pass
    return obj


def result_steps(snapshot: Snapshot, result: MeshArrays, hide_original: bool, scene: bpy.types.Scene,
                 info: dict[str, Any] | None = None) -> Iterator[bpy.types.Object | None]:
    """Create ``<name>_log3d`` from a world-space result in steps short enough for one UI tick each
    (:func:`mesh_io.mesh_build_steps`): yields None between steps, the new object last. Nothing is
    linked into the scene before the last step, so a half-built result is never drawn."""
    original = snapshot.original()
    matrix_world = snapshot.matrix_world if original is None else mesh_io.matrix_array(original.matrix_world)
    name = f"{original.name if original else snapshot.name}{RESULT_SUFFIX}"
    mesh = None
    for mesh in mesh_io.mesh_build_steps(name, result, mesh_io.to_local(result.vertices, matrix_world)):
        yield None
    original = snapshot.original()  # the user may have deleted it meanwhile
    obj = bpy.data.objects.new(name, mesh)
    obj[SOURCE_KEY] = original.name if original else snapshot.name
    if info:
        obj["log3d_resolution"] = int(info.get("resolution", 0))
        obj["log3d_mode"] = str(info.get("mode", ""))
    if original is None:
        scene.collection.objects.link(obj)
        obj.matrix_world = _matrix(matrix_world)
        yield obj
        return
    _copy_materials(original, obj)
    _copy_active_colors(original, obj)
    _copy_placement(original, obj)
    collections = list(original.users_collection) or [scene.collection]
    for collection in collections:
        collection.objects.link(obj)
    if hide_original:
        _hide(original)
    yield obj


LATENTS_KEY = "log3d_latents"  # custom property on a decoded object: the latent file it came from


def place_decoded(name: str, result: MeshArrays, source: str, collection: bpy.types.Collection) -> bpy.types.Object:
    """A new object from a decoded latent file, in the frame the latents were encoded in."""
    mesh = None
    for mesh in mesh_io.mesh_build_steps(name, result):
        pass
    obj = bpy.data.objects.new(name, mesh)
    obj[LATENTS_KEY] = source
    collection.objects.link(obj)
    return obj


def _matrix(array: np.ndarray) -> Any:
    from mathutils import Matrix

    return Matrix(array.tolist())


def _copy_placement(original: bpy.types.Object, obj: bpy.types.Object) -> None:
    """Parent, parent inverse and transform channels: the same ``matrix_world`` now and when the
    parent moves later."""
    obj.parent = original.parent
    if original.parent is not None:
        obj.parent_type = original.parent_type
        if original.parent_type == "BONE":
            obj.parent_bone = original.parent_bone
        obj.matrix_parent_inverse = original.matrix_parent_inverse.copy()
    for channel in _TRANSFORM_CHANNELS:
        value = getattr(original, channel)
        setattr(obj, channel, value.copy() if hasattr(value, "copy") else value)
    if len(original.constraints):  # constraints move the original; pin the copy where it is
        obj.matrix_world = original.matrix_world.copy()


def _copy_materials(original: bpy.types.Object, obj: bpy.types.Object) -> None:
    mesh = obj.data
    for slot in original.material_slots:
        mesh.materials.append(slot.material if slot.link == "DATA" else None)
    for source, target in zip(original.material_slots, obj.material_slots):
        if source.link == "OBJECT":
            target.link = "OBJECT"
            target.material = source.material


def _copy_active_colors(original: bpy.types.Object, obj: bpy.types.Object) -> None:
    """The colour attribute shown in the viewport and the one rendered, by name, where the result has
    it (it has every one that came back)."""
    source, target = getattr(original.data, "color_attributes", None), getattr(obj.data, "color_attributes", None)
    if not source or not target:
        return
    for attr in ("active_color_name", "default_color_name"):
        name = getattr(source, attr, "")
        if name and name in target:
            setattr(target, attr, name)


def _hide(obj: bpy.types.Object) -> None:
    """Hide in the current view layer's viewport (the eye icon); an object that is not in the view
    layer (an excluded collection) cannot be hidden there and is not visible anyway."""
    try:
        obj.hide_set(True)
    except RuntimeError:
        pass
