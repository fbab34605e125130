"""The scene of the materials-colours-voxel-size tests (issue 31), built with bpy and numpy only, so
that both Blender drivers use it: tests/test_blender_addon.py (bpy 5.0.1, background) and
tests/window_driver.py (a real Blender window, which has numpy but not the project's packages).

    Duo       one object of two bodies: a unit cube (material "Red") and a ball beside it ("Blue")
    Suzanne   random colours per vertex ("Paint", float, on points), one colour per corner ("Dirt",
              byte, on corners)
    Small     a 0.25 cube
    Large     a unit cube scaled by 2 (the voxel size is in world units: the scale counts)
"""

from __future__ import annotations

from typing import Any, Callable

import bpy
import numpy as np

DIRT = (0.2, 0.4, 0.6, 1.0)


def build(join: Callable[[Any, list[Any]], None]) -> dict[str, Any]:
    """Add the four objects to the current scene; ``join(active, objects)`` joins ``objects`` into
    ``active`` (the operator needs a context that background mode and a window give differently).
    Returns the objects by name and the Suzanne's point colours [V, 4]."""
    bpy.ops.mesh.primitive_cube_add(size=1.0, location=(0.0, 0.0, 0.0))
    cube = bpy.context.active_object
    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.4, location=(1.5, 0.0, 0.0))
    ball = bpy.context.active_object
    for obj, name, colour in ((cube, "Red", (0.8, 0.1, 0.1, 1.0)), (ball, "Blue", (0.1, 0.2, 0.9, 1.0))):
        material = bpy.data.materials.new(name)
        material.diffuse_color = colour
        obj.data.materials.append(material)
    join(cube, [cube, ball])
    duo = cube
    duo.name = "Duo"
    for polygon in duo.data.polygons:
        polygon.material_index = int(polygon.center.x > 0.75)

    bpy.ops.mesh.primitive_monkey_add(size=1.5, location=(0.5, 2.5, 0.0))
    suzanne = bpy.context.active_object
    suzanne.name = "Suzanne"
    count = len(suzanne.data.vertices)
    paint = np.concatenate([np.random.default_rng(0).random((count, 3)), np.ones((count, 1))], axis=1).astype(np.float32)
    suzanne.data.color_attributes.new("Paint", "FLOAT_COLOR", "POINT").data.foreach_set("color", paint.ravel())
    dirt = np.tile(np.float32(DIRT), len(suzanne.data.loops))
    suzanne.data.color_attributes.new("Dirt", "BYTE_COLOR", "CORNER").data.foreach_set("color", dirt)

    bpy.ops.mesh.primitive_cube_add(size=0.25, location=(-2.0, 0.0, 0.0))
    small = bpy.context.active_object
    small.name = "Small"
    bpy.ops.mesh.primitive_cube_add(size=1.0, location=(-2.0, -3.0, 0.0))
    large = bpy.context.active_object
    large.name, large.scale = "Large", (2.0, 2.0, 2.0)
    bpy.context.view_layer.update()
    return {"Duo": duo, "Suzanne": suzanne, "Small": small, "Large": large, "paint": paint}
