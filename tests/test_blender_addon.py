"""The Blender add-on, end to end: bpy 5.0.1 (Blender as a Python module) + a real `log3d serve`.

Every case runs Blender in a fresh subprocess (a clean Blender state each time, and bpy never
shares a process with torch): this file is also the driver — ``python tests/test_blender_addon.py
SCENARIO JSON_ARGS`` builds a scene, runs the add-on's operators in background mode (where they
are synchronous) and prints one ``RESULT {json}`` line that the test asserts on.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

REPO = Path(__file__).resolve().parents[1]

# ================================================================================================
# Inside Blender (driver side): nothing here runs under pytest
# ================================================================================================


def _enable_from_repo(port: int, timeout_s: float = 5.0, heartbeat_s: float = 3.0) -> Any:
    """Enable the add-on straight from the repository (module ``blender_addon``) and point it at
    the test's backend."""
    import addon_utils
    import bpy

    assert addon_utils.enable("blender_addon", default_set=True) is not None
    prefs = bpy.context.preferences.addons["blender_addon"].preferences
    prefs.port, prefs.timeout_s, prefs.heartbeat_s = port, timeout_s, heartbeat_s
    return prefs


def _material(name: str, color: tuple[float, float, float]) -> Any:
    import bpy

    mat = bpy.data.materials.new(name)
    mat.diffuse_color = (*color, 1.0)
    return mat


def _build_scene() -> dict[str, Any]:
    """Three meshes with transforms, a parent, materials (data- and object-linked), a modifier and
    an extra collection."""
    import math

    import bpy

    scene = bpy.context.scene
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)
    rig = bpy.data.objects.new("Rig", None)
    scene.collection.objects.link(rig)
    rig.location, rig.rotation_euler, rig.scale = (1.0, 2.0, 3.0), (0.0, 0.0, math.radians(30)), (2.0, 2.0, 2.0)

    bpy.ops.mesh.primitive_torus_add(major_radius=1.0, minor_radius=0.3, location=(0.5, -1.0, 0.25))
    torus = bpy.context.active_object
    torus.name = "Torus"
    torus.rotation_euler = (math.radians(20), math.radians(-35), math.radians(60))
    torus.scale = (1.0, 1.5, 0.7)
    torus.data.materials.append(_material("Red", (1, 0, 0)))
    torus.data.materials.append(_material("Blue", (0, 0, 1)))
    bpy.context.view_layer.update()
    torus.parent = rig
    torus.matrix_parent_inverse = rig.matrix_world.inverted()

    bpy.ops.mesh.primitive_cube_add(size=1.5, location=(-3.0, 1.0, 0.5))
    box = bpy.context.active_object
    box.name = "Box"
    box.rotation_mode = "QUATERNION"
    box.rotation_quaternion = (0.9, 0.1, 0.3, 0.2)
    box.scale = (1.2, 0.8, 2.0)
    box.modifiers.new("Subsurf", "SUBSURF").levels = 2
    box.data.materials.append(_material("Green", (0, 1, 0)))
    box.material_slots[0].link = "OBJECT"
    box.material_slots[0].material = _material("Gold", (1, 0.8, 0))
    props = bpy.data.collections.new("Props")
    scene.collection.children.link(props)
    props.objects.link(box)

    bpy.ops.mesh.primitive_ico_sphere_add(subdivisions=3, radius=0.8, location=(4.0, 4.0, -1.0))
    bpy.context.active_object.name = "Ball"
    bpy.context.view_layer.update()
    return {"torus": torus, "box": box}


def _select(*objects: Any) -> None:
    import bpy

    for obj in bpy.context.view_layer.objects:
        obj.select_set(obj in objects)
    bpy.context.view_layer.objects.active = objects[0] if objects else None


def _world_bbox(vertices: Any) -> list[list[float]]:
    return [vertices.min(axis=0).tolist(), vertices.max(axis=0).tolist()]


def _describe(obj: Any) -> dict[str, Any]:
    """What a test compares: placement, materials, collections, geometry (world space) and a hash
    of the mesh data itself."""
    import bpy
    import numpy as np

    from blender_addon import mesh_io

    depsgraph = bpy.context.evaluated_depsgraph_get()
    evaluated = mesh_io.evaluated_mesh(obj, depsgraph)
    world = evaluated.vertices
    return {
        "name": obj.name,
        "matrix_world": [list(row) for row in obj.matrix_world],
        "parent": obj.parent.name if obj.parent else None,
        "parent_type": obj.parent_type,
        "collections": sorted(c.name for c in obj.users_collection),
        "materials": [(s.material.name if s.material else None, s.link) for s in obj.material_slots],
        "modifiers": [m.type for m in obj.modifiers],
        "hidden": obj.hide_get(),
        "data_hash": mesh_io.vertex_hash(obj.data),
        "num_vertices": len(obj.data.vertices),
        "num_faces": len(obj.data.polygons),
        "world_bbox": _world_bbox(world) if len(world) else None,
        "finite": bool(np.isfinite(world).all()),
        "source": obj.get("log3d_source"),
    }


def _scene_state() -> dict[str, Any]:
    import bpy

    return {o.name: _describe(o) for o in bpy.data.objects if o.type == "MESH"}


def _run_op(op: Any) -> dict[str, Any]:
    """Run an operator the way a batch script does; a report of type ERROR arrives as RuntimeError."""
    start = time.monotonic()
    try:
        return {"ret": sorted(op()), "error": None, "seconds": time.monotonic() - start}
    except RuntimeError as exc:
        return {"ret": None, "error": str(exc), "seconds": time.monotonic() - start}


def scenario_remesh(port: int) -> dict[str, Any]:
    """Remesh Selected (two objects, originals hidden), then Remesh All (the visible rest)."""
    import bpy

    _enable_from_repo(port)
    from blender_addon import state

    objects = _build_scene()
    settings = bpy.context.scene.log3d
    settings.resolution, settings.mode, settings.hide_original = "64", "direct", True
    before = _scene_state()
    _select(objects["torus"], objects["box"])
    selected = _run_op(bpy.ops.log3d.remesh_selected)
    bpy.context.view_layer.update()
    after_selected = _scene_state()
    settings.hide_original = False
    dot = bpy.data.meshes.new("Dot")  # every corner at one point: the backend refuses it (bad_mesh)
    dot.from_pydata([(1.0, 1.0, 1.0)] * 3, [], [(0, 1, 2)])
    bpy.context.scene.collection.objects.link(bpy.data.objects.new("Dot", dot))
    every = _run_op(bpy.ops.log3d.remesh_all)
    bpy.context.view_layer.update()
    return {"before": before, "selected": selected, "after_selected": after_selected, "all": every,
            "after_all": _scene_state(), "selection": sorted(o.name for o in bpy.context.selected_objects),
            "last_error": state.manager().last_error}


def scenario_import_latents(port: int, good: str, foreign: str) -> dict[str, Any]:
    """Import Latents: a file of the backend's own model becomes an object; one of other weights is
    refused with the backend's wrong_model error and adds nothing."""
    import bpy

    _enable_from_repo(port)
    from blender_addon import state

    bpy.context.scene.log3d.raw = True
    before = sorted(o.name for o in bpy.data.objects)
    ok = _run_op(lambda: bpy.ops.log3d.import_latents(filepath=good))
    made = sorted(set(o.name for o in bpy.data.objects) - set(before))
    faces = [len(bpy.data.objects[n].data.polygons) for n in made]
    source = [bpy.data.objects[n].get("log3d_latents") for n in made]
    refused = _run_op(lambda: bpy.ops.log3d.import_latents(filepath=foreign))
    after = sorted(set(o.name for o in bpy.data.objects) - set(before))
    return {"ok": ok, "made": made, "faces": faces, "source": source, "refused": refused, "after": after,
            "last_error": state.manager().last_error}


def scenario_no_backend(port: int) -> dict[str, Any]:
    import bpy

    _enable_from_repo(port, timeout_s=1.0)
    from blender_addon import state

    objects = _build_scene()
    bpy.context.scene.log3d.resolution = "64"
    before = _scene_state()
    _select(objects["torus"], objects["box"])
    outcome = _run_op(bpy.ops.log3d.remesh_selected)
    return {"before": before, "after": _scene_state(), "op": outcome, "last_error": state.manager().last_error,
            "session": state.manager().session is not None, "objects": sorted(o.name for o in bpy.data.objects)}


def scenario_killed(port: int, server_pid: int) -> dict[str, Any]:
    """The backend is killed while it remeshes the second of two objects (Box, then Torus): in its
    extraction, where the test's backend (``STALLING_BACKEND``) holds it."""
    import threading

    import bpy

    _enable_from_repo(port, timeout_s=1.0, heartbeat_s=1.0)
    from blender_addon import state

    objects = _build_scene()
    bpy.context.scene.log3d.resolution = "256"
    before = _scene_state()
    _select(objects["torus"], objects["box"])
    killed: dict[str, Any] = {}

    def kill_during_second_job() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            progress = state.manager().progress
            if progress is not None and progress.index == 1 and progress.stage == "extract":  # it stalls there
                killed["stage"] = progress.stage
                os.kill(server_pid, signal.SIGKILL)
                return
            time.sleep(0.005)

    watcher = threading.Thread(target=kill_during_second_job, daemon=True)
    watcher.start()
    outcome = _run_op(bpy.ops.log3d.remesh_selected)
    watcher.join(1)
    return {"before": before, "after": _scene_state(), "op": outcome, "killed": killed,
            "last_error": state.manager().last_error, "session": state.manager().session is not None}


def scenario_start_backend(port: int) -> dict[str, Any]:
    """The panel's Start backend (the environment install.py made), a remesh right away (it waits
    for the backend to come up), the status, then Stop backend — what a batch script can do too."""
    import bpy

    prefs = _enable_from_repo(port)
    from blender_addon import state

    prefs.env_path = str(REPO / ".venv")
    manager = state.manager()
    out: dict[str, Any] = {"start": _run_op(bpy.ops.log3d.backend_start)}
    try:
        out["pid"] = manager.backend.pid
        bpy.ops.mesh.primitive_ico_sphere_add(subdivisions=2)
        bpy.context.scene.log3d.resolution = "64"
        out["remesh"] = _run_op(bpy.ops.log3d.remesh_selected)
        out["check"] = _run_op(bpy.ops.log3d.backend_check)
        out["status"] = {"connected": manager.status.connected, "device": manager.status.device}
        out["stop"] = _run_op(bpy.ops.log3d.backend_stop)
        out["returncode"] = manager.backend.process.wait(30)
        out["results"] = [o.name for o in bpy.data.objects if o.get("log3d_source")]
    finally:
        if manager.backend is not None:
            manager.backend.terminate()
    return out


def scenario_training(port: int, dataset: str) -> dict[str, Any]:
    """Start a (fake) training run from the panel's operators, watch step/loss, stop it."""
    import bpy

    _enable_from_repo(port)
    from blender_addon import state

    training = bpy.context.scene.log3d.training
    training.dataset, training.preset, training.steps = dataset, "tiny", 5000
    manager = state.manager()
    seen: list[tuple[int, float]] = []
    started = _run_op(bpy.ops.log3d.train_start)
    deadline = time.monotonic() + 30
    while len(seen) < 3 and time.monotonic() < deadline:
        manager.tick()  # what the app timer does in the UI
        run = manager.training
        if run.step is not None and (not seen or run.step > seen[-1][0]):
            seen.append((run.step, run.loss))
        time.sleep(0.1)
    stopped = _run_op(bpy.ops.log3d.train_stop)
    while manager.train_task is not None and time.monotonic() < deadline + 15:
        manager.tick()
        time.sleep(0.1)
    run = manager.training
    return {"options": training.train_options(), "started": started, "stopped": stopped, "seen": seen, "state": run.state,
            "job": run.job,
            "run_dir": run.run_dir, "task_done": manager.train_task is None, "last_error": manager.last_error}


def scenario_installed(port: int, module: str) -> dict[str, Any]:
    """A fresh Blender whose user preferences have the installed add-on: it is enabled, speaks to
    the backend through the wire client vendored into the zip, and remeshes."""
    import importlib

    import bpy

    bpy.ops.wm.read_userpref()  # the bpy module does not load user preferences by itself
    addon = bpy.context.preferences.addons.get(module)
    if addon is None:
        return {"enabled": False, "addons": [a.module for a in bpy.context.preferences.addons]}
    wire = importlib.import_module(f"{module}.wire")
    env_path = addon.preferences.env_path
    addon.preferences.port = port
    bpy.ops.mesh.primitive_ico_sphere_add(subdivisions=2, radius=1.0)
    bpy.context.scene.log3d.resolution = "64"
    outcome = _run_op(bpy.ops.log3d.remesh_selected)
    results = [o.name for o in bpy.data.objects if o.get("log3d_source")]
    return {"enabled": True, "client_module": wire.Log3DClient.__module__, "env_path": env_path, "op": outcome,
            "results": results, "faces": [len(bpy.data.objects[n].data.polygons) for n in results]}


def scenario_legacy_install(zip_path: str) -> dict[str, Any]:
    """The same zip through the legacy add-on installer (Preferences > Add-ons > Install…)."""
    import bpy  # first: addon_utils exists only once bpy is imported
    import addon_utils

    bpy.ops.preferences.addon_install(filepath=zip_path, overwrite=True)
    module = addon_utils.enable("log3d", default_set=True)
    return {"module": getattr(module, "__name__", None), "file": getattr(module, "__file__", None),
            "enabled": "log3d" in bpy.context.preferences.addons,
            "operators": [hasattr(bpy.types, "LOG3D_OT_remesh_selected"), hasattr(bpy.types, "VIEW3D_PT_log3d")]}


class _CheckedLayout:
    """Stands in for ``bpy.types.UILayout`` (there is none without a window): every call and
    attribute is checked against the RNA definition — function and keyword names, properties of
    the data passed to ``prop``, operator ids, icon names — and labels are recorded."""

    def __init__(self, record: list[str]) -> None:
        object.__setattr__(self, "record", record)

    def __setattr__(self, name: str, value: Any) -> None:
        import bpy

        assert name in bpy.types.UILayout.bl_rna.properties, f"UILayout has no property {name!r}"

    def __getattr__(self, name: str) -> Any:
        import bpy

        functions = bpy.types.UILayout.bl_rna.functions
        assert name in functions, f"UILayout has no function {name!r}"
        params = functions[name].parameters

        def call(*args: Any, **kwargs: Any) -> Any:
            for key in kwargs:
                assert key in params, f"UILayout.{name}() has no argument {key!r}"
            icon = kwargs.get("icon")
            if icon is not None:
                assert icon in params["icon"].enum_items, f"unknown icon {icon!r}"
            if name == "prop":
                data, prop = args[:2]
                assert prop in data.bl_rna.properties, f"{type(data).__name__} has no property {prop!r}"
                self.record.append(f"prop:{prop}")
            elif name == "operator":
                group, op = args[0].split(".")
                assert hasattr(bpy.types, f"{group.upper()}_OT_{op}"), f"no operator {args[0]!r}"
                self.record.append(f"operator:{args[0]}")
            elif name in ("label", "progress"):
                self.record.append(f"{name}:{kwargs.get('text', '')}")
            return _CheckedLayout(self.record)

        return call


def _draw(panel: type, context: Any, **extra: Any) -> list[str]:
    from types import SimpleNamespace

    record: list[str] = []
    fake = SimpleNamespace(layout=_CheckedLayout(record), **extra)
    panel.draw(fake, context)
    return record


def scenario_panel(port: int) -> dict[str, Any]:
    """Draw the panels (checked against the RNA) in each state, and drive a remesh the way the
    modal operator does: ``pump()`` on every timer tick, then ``apply()``."""
    import bpy

    _enable_from_repo(port)
    from blender_addon import panel, preferences, session, state

    context = bpy.context
    main = dict(_draw_backend=panel.VIEW3D_PT_log3d._draw_backend)
    draws = {"idle": _draw(panel.VIEW3D_PT_log3d, context, **main),
             "training_idle": _draw(panel.VIEW3D_PT_log3d_training, context)}
    manager = state.manager()
    bpy.ops.log3d.backend_check()
    manager.set_error("something went wrong\nsecond line")
    draws["connected"] = _draw(panel.VIEW3D_PT_log3d, context, **main)
    status = manager.status
    manager.clear_error()

    bpy.ops.mesh.primitive_ico_sphere_add(subdivisions=3)
    # 256 rather than 64: long enough (a second or two) that the 50 ms redraws see its stages even
    # on an idle machine, where a 64³ job can finish between two redraws
    context.scene.log3d.resolution = "256"
    run = session.RemeshSession.start(context, manager, [context.active_object], preferences.connection(context))
    labels: list[str] = []
    deadline = time.monotonic() + 60
    while not run.pump() and time.monotonic() < deadline:
        labels += [r for r in _draw(panel.VIEW3D_PT_log3d, context, **main) if r.startswith("progress:")]
        time.sleep(0.05)
    outcome = run.apply(context)
    draws["after"] = _draw(panel.VIEW3D_PT_log3d, context, **main)

    manager.training = state.TrainingState(job="train-1", state="running", step=120, loss=0.0123, run_dir="/tmp/run")
    context.scene.log3d.training.dataset = "/nonexistent"
    draws["training"] = _draw(panel.VIEW3D_PT_log3d_training, context)
    prefs = context.preferences.addons["blender_addon"].preferences
    draws["preferences"] = _draw(type(prefs), context, bl_rna=prefs.bl_rna)
    return {"draws": draws, "labels": labels, "created": [o.name for o in outcome.created],
            "status": {"connected": status.connected, "device": status.device, "model": status.model,
                       "version": status.version, "endpoint": status.endpoint},
            "session": manager.session is not None}


def _world_polygons(obj: Any) -> tuple[Any, list[Any]]:
    """An object's world-space vertices and its polygons' vertex lists."""
    import numpy as np

    mesh = obj.data
    co = np.empty(len(mesh.vertices) * 3, dtype=np.float64)
    mesh.vertices.foreach_get("co", co)
    m = np.array(obj.matrix_world, dtype=np.float64)
    world = co.reshape(-1, 3) @ m[:3, :3].T + m[:3, 3]
    return world, [list(p.vertices) for p in mesh.polygons]


def _edge_lengths(obj: Any) -> Any:
    import numpy as np

    world, _ = _world_polygons(obj)
    edges = np.array([list(e.vertices) for e in obj.data.edges])
    return np.linalg.norm(world[edges[:, 0]] - world[edges[:, 1]], axis=1)


def scenario_attributes(port: int) -> dict[str, Any]:
    """Materials, colours and voxel size: a two-material cube-and-ball object, a vertex-painted
    Suzanne (a point and a corner colour attribute), and Remesh All at one voxel size on a small and
    a large (scaled) cube."""
    import bpy
    import numpy as np

    from model.bvh import SurfaceIndex
    from tests import attribute_scene

    _enable_from_repo(port, timeout_s=30.0)
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)

    def join(active: Any, objects: list[Any]) -> None:
        _select(active, *[o for o in objects if o is not active])
        bpy.ops.object.join()

    scene = attribute_scene.build(join)
    duo, suzanne, paint = scene["Duo"], scene["Suzanne"], scene["paint"]
    suzanne.data.color_attributes.active_color_name = "Dirt"
    settings = bpy.context.scene.log3d
    settings.resolution, settings.mode, settings.hide_original, settings.keep_attributes = "256", "direct", True, True
    _select(duo, suzanne)
    selected = _run_op(bpy.ops.log3d.remesh_selected)
    bpy.context.view_layer.update()
    out: dict[str, Any] = {"selected": selected}

    duo_out = bpy.data.objects["Duo_log3d"]
    world, polygons = _world_polygons(duo)
    tris = np.array([p for p in polygons if len(p) == 3] + [[p[0], p[k], p[k + 1]] for p in polygons if len(p) > 3
                                                             for k in range(1, len(p) - 1)])
    tri_material = np.array([duo.data.polygons[i].material_index for i, p in enumerate(polygons) if len(p) == 3]
                            + [duo.data.polygons[i].material_index for i, p in enumerate(polygons) if len(p) > 3
                               for _ in range(len(p) - 2)])
    index = SurfaceIndex(world, tris)
    out_world, out_polygons = _world_polygons(duo_out)
    centres = np.array([out_world[p].mean(axis=0) for p in out_polygons])
    _, prim = index.query(centres)
    under = tri_material[index.face_ids[prim]]
    got = np.array([p.material_index for p in duo_out.data.polygons])
    sizes = [len(p) for p in out_polygons]
    out["duo"] = {"materials": [s.material.name for s in duo_out.material_slots], "polygons": len(got),
                  "match": float((got == under).mean()), "ball_faces_blue": float((got[centres[:, 0] > 0.75] == 1).mean()),
                  "quads": sizes.count(4), "triangles": sizes.count(3)}

    sz_out = bpy.data.objects["Suzanne_log3d"]
    world, polygons = _world_polygons(suzanne)
    s_tris = np.array([[p[0], p[k], p[k + 1]] for p in polygons for k in range(1, len(p) - 1)])
    index = SurfaceIndex(world, s_tris)
    out_world, _ = _world_polygons(sz_out)
    _, prim, points = index.closest_points(out_world)
    corners = world[s_tris[index.face_ids[prim]]]
    from model.attributes import _barycentric

    weights = _barycentric(points, corners[:, 0], corners[:, 1], corners[:, 2])
    truth = np.einsum("vk,vkc->vc", weights, paint[s_tris[index.face_ids[prim]]])
    got_paint = np.empty(len(sz_out.data.vertices) * 4, dtype=np.float32)
    sz_out.data.color_attributes["Paint"].data.foreach_get("color", got_paint)
    got_dirt = np.empty(len(sz_out.data.loops) * 4, dtype=np.float32)
    sz_out.data.color_attributes["Dirt"].data.foreach_get("color", got_dirt)
    attrs = sz_out.data.color_attributes
    out["suzanne"] = {"layers": sorted((a.name, a.domain, a.data_type) for a in attrs),
                      "active": attrs.active_color_name,
                      "paint_mean_error": float(np.abs(got_paint.reshape(-1, 4)[:, :3] - truth[:, :3]).mean()),
                      "paint_max_error": float(np.abs(got_paint.reshape(-1, 4)[:, :3] - truth[:, :3]).max()),
                      "dirt_max_error": float(np.abs(got_dirt.reshape(-1, 4) - np.array(attribute_scene.DIRT)).max())}

    # Remesh All at one voxel size: the small and the large cube (the rest are hidden originals and results)
    settings.size_mode, settings.voxel_size = "VOXEL", 0.02
    every = _run_op(bpy.ops.log3d.remesh_all)
    bpy.context.view_layer.update()
    out["all"] = every
    out["voxel"] = {name: {"median_edge": float(np.median(_edge_lengths(bpy.data.objects[f"{name}_log3d"]))),
                           "resolution": int(bpy.data.objects[f"{name}_log3d"]["log3d_resolution"]),
                           "faces": len(bpy.data.objects[f"{name}_log3d"].data.polygons)}
                    for name in ("Small", "Large")}
    return out


def _driver_main() -> None:
    sys.path.insert(0, str(REPO))  # the add-on package `blender_addon` and the project's `backend`
    scenario, args = sys.argv[1], json.loads(sys.argv[2])
    result = globals()[f"scenario_{scenario}"](**args)
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    _driver_main()
    sys.exit(0)

# ================================================================================================
# Under pytest
# ================================================================================================

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from backend.blender_voxel import bpy_available  # noqa: E402

PYTHON = sys.executable
needs_bpy = pytest.mark.skipif(not bpy_available(), reason="bpy (pip install bpy==5.0.1) is not importable")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_backend(port: int, process: subprocess.Popen, timeout_s: float = 60.0) -> None:
    from backend.client import BackendError, Log3DClient

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, "the backend exited during start-up"
        with Log3DClient(port=port, timeout_s=0.5) as client:
            try:
                client.hello()
                return
            except BackendError:
                time.sleep(0.2)
    raise AssertionError(f"no backend on port {port} after {timeout_s} s")


def start_backend(port: int, *extra: str, code: str | None = None, args: Sequence[str] = (),
                  cwd: Path = REPO) -> subprocess.Popen:
    cmd = [PYTHON, "-c", code, *args] if code else [PYTHON, "-m", "backend.cli", "serve", "--port", str(port),
                                                    "--device", "cpu", "--quiet", *extra]
    process = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for_backend(port, process)
    return process


def stop_backend(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stderr:
        process.stderr.close()


@pytest.fixture(scope="module")
def backend() -> Iterator[int]:
    port = free_port()
    process = start_backend(port)
    yield port
    stop_backend(process)


def drive(scenario: str, env: dict[str, str] | None = None, timeout_s: float = 180, **args: Any) -> dict[str, Any]:
    """Run one scenario in a fresh Blender (bpy) process and return its RESULT."""
    done = subprocess.run([PYTHON, str(Path(__file__).resolve()), scenario, json.dumps(args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout_s, env={**os.environ, **(env or {})})
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, f"driver failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT "):])


def assert_result_placed(original: dict[str, Any], result: dict[str, Any], resolution: int) -> None:
    """Same transform, parent, collections and materials; geometry where the original is."""
    np.testing.assert_allclose(result["matrix_world"], original["matrix_world"], atol=1e-5)
    assert result["parent"] == original["parent"] and result["parent_type"] == original["parent_type"]
    assert result["collections"] == original["collections"]
    assert result["materials"] == original["materials"]
    assert result["source"] == original["name"] and result["modifiers"] == []
    assert result["finite"] and result["num_faces"] > 500
    lo, hi = np.array(original["world_bbox"]), np.array(result["world_bbox"])
    extent = float((lo[1] - lo[0]).max())
    np.testing.assert_allclose(hi, lo, atol=3.0 * extent / resolution)  # within a few voxels of the evaluated input


def assert_untouched(before: dict[str, Any], after: dict[str, Any], hidden: bool | None = None) -> None:
    for key in ("matrix_world", "parent", "collections", "materials", "modifiers", "data_hash", "num_vertices",
                "num_faces", "world_bbox"):
        assert after[key] == before[key], (before["name"], key)
    if hidden is not None:
        assert after["hidden"] is hidden, before["name"]


@needs_bpy
def test_remesh_selected_then_all(backend):
    out = drive("remesh", port=backend)
    before, after = out["before"], out["after_selected"]
    assert out["selected"]["error"] is None and out["selected"]["ret"] == ["FINISHED"], out["selected"]
    assert sorted(after) == ["Ball", "Box", "Box_log3d", "Torus", "Torus_log3d"]
    for name in ("Torus", "Box"):
        assert_result_placed(before[name], after[f"{name}_log3d"], 64)
        assert_untouched(before[name], after[name], hidden=True)  # hidden: the option was on
        assert after[f"{name}_log3d"]["hidden"] is False
    assert after["Torus_log3d"]["parent"] == "Rig" and after["Box_log3d"]["collections"] == ["Collection", "Props"]
    assert after["Torus_log3d"]["materials"] == [["Red", "DATA"], ["Blue", "DATA"]]
    assert after["Box_log3d"]["materials"] == [["Gold", "OBJECT"]]
    # (the Box's bbox is compared with its *evaluated* mesh: a level-2 subdivision shrinks it by more
    # than the tolerance, so a result of the bare cube would fail)
    assert_untouched(before["Ball"], after["Ball"], hidden=False)

    # Remesh All: the visible meshes that are not results (the hidden originals are skipped)
    assert out["all"]["error"] is None and out["all"]["ret"] == ["FINISHED"], out["all"]
    final = out["after_all"]
    assert sorted(final) == ["Ball", "Ball_log3d", "Box", "Box_log3d", "Dot", "Torus", "Torus_log3d"]
    assert_result_placed(before["Ball"], final["Ball_log3d"], 64)
    assert_untouched(before["Ball"], final["Ball"], hidden=False)  # hide_original was off this time
    for name in ("Torus", "Box"):
        assert_untouched(before[name], final[name], hidden=True)
    assert out["selection"] == ["Ball_log3d"]
    # the degenerate "Dot" was refused by the backend: a warning (the batch went on), kept in the panel
    assert "'Dot': bad_mesh" in out["last_error"] and "Dot_log3d" not in final


@needs_bpy
def test_materials_colours_and_voxel_size_come_back(backend):
    out = drive("attributes", port=backend, timeout_s=600)
    assert out["selected"]["error"] is None and out["selected"]["ret"] == ["FINISHED"], out["selected"]
    duo = out["duo"]
    print(f"two-material object: {duo['match']:.4f} of {duo['polygons']} faces take the material under them "
          f"({duo['quads']} quads, {duo['triangles']} triangles)")
    assert duo["materials"] == ["Red", "Blue"]
    assert duo["match"] >= 0.99 and duo["ball_faces_blue"] >= 0.99
    assert duo["quads"] > duo["triangles"]
    suzanne = out["suzanne"]
    print(f"painted Suzanne: mean colour error {suzanne['paint_mean_error']:.2e}, max {suzanne['paint_max_error']:.2e}")
    assert suzanne["layers"] == [["Dirt", "CORNER", "BYTE_COLOR"], ["Paint", "POINT", "FLOAT_COLOR"]]
    assert suzanne["active"] == "Dirt"
    assert suzanne["paint_mean_error"] <= 0.02  # the colours span 0..1
    assert suzanne["dirt_max_error"] <= 1.5 / 255
    assert out["all"]["error"] is None, out["all"]
    small, large = out["voxel"]["Small"], out["voxel"]["Large"]
    print(f"one voxel size: edges {small['median_edge']:.4f} (N={small['resolution']}) and "
          f"{large['median_edge']:.4f} (N={large['resolution']})")
    assert small["resolution"] == 64 and large["resolution"] == 112  # 0.25/0.02 + 10 → 64 (least); 2/0.02 + 10 → 112
    assert abs(small["median_edge"] / large["median_edge"] - 1.0) <= 0.10
    assert abs(large["median_edge"] - 0.02) <= 0.002


@needs_bpy
def test_no_backend_reports_and_changes_nothing():
    port = free_port()
    out = drive("no_backend", port=port)
    op = out["op"]
    assert op["ret"] is None and "No LoG3D backend answers" in op["error"] and f"port {port}" in op["error"]
    assert "Nothing was changed" in op["error"] and out["last_error"] and not out["session"]
    assert out["after"] == out["before"]
    print(f"\nno backend: the operator gave up after {op['seconds']:.1f} s")


# The real backend, whose second extraction (the second object's job) stalls once it has reported that
# it started: the test kills it there whatever the machine's speed (a fast machine once finished the
# second job between two looks of the watcher, and a busy one could be anywhere).
STALLING_BACKEND = textwrap.dedent("""
    import sys, threading
    from model.stages import Stages
    from backend.cli import main
    real_run, extract_calls = Stages.run, []
    def run(self, name, work):
        if name == "extract":
            extract_calls.append(name)
            if len(extract_calls) == 2:
                return real_run(self, name, lambda report: threading.Event().wait(600) or work(report))
        return real_run(self, name, work)
    Stages.run = run
    sys.exit(main(["serve", "--port", sys.argv[1], "--device", "cpu", "--quiet"]))
""")


@needs_bpy
def test_backend_killed_mid_job_keeps_what_came_back():
    port = free_port()
    process = start_backend(port, code=STALLING_BACKEND, args=(str(port),))
    try:
        out = drive("killed", port=port, server_pid=process.pid)
    finally:
        stop_backend(process)
    assert out["killed"], f"the second job never started: {out}"
    op = out["op"]
    assert op["ret"] is None and "stopped answering" in op["error"] and "'Torus'" in op["error"], op
    assert "1 finished result(s) kept" in op["error"] and not out["session"]
    before, after = out["before"], out["after"]
    assert sorted(after) == ["Ball", "Box", "Box_log3d", "Torus"]  # the finished one is kept
    assert_result_placed(before["Box"], after["Box_log3d"], 256)
    assert_untouched(before["Box"], after["Box"], hidden=True)
    assert_untouched(before["Torus"], after["Torus"], hidden=False)  # never got a result: left visible
    assert_untouched(before["Ball"], after["Ball"], hidden=False)


@needs_bpy
def test_start_backend_from_blender_then_remesh_and_stop():
    port = free_port()
    out = drive("start_backend", port=port)
    assert out["start"]["error"] is None and out["start"]["ret"] == ["FINISHED"], out
    assert out["remesh"]["error"] is None and out["results"] == ["Icosphere_log3d"], out
    assert out["status"] == {"connected": True, "device": "cpu"} and out["stop"]["error"] is None
    assert out["returncode"] == 0  # shut down cleanly by `shutdown`
    with pytest.raises(ProcessLookupError):
        os.kill(out["pid"], 0)


# Takes the arguments the panel sends to `log3d train` (backend/train.py) and writes metrics.csv like it.
FAKE_TRAINER = textwrap.dedent("""
    import argparse, pathlib, time
    p = argparse.ArgumentParser()
    p.add_argument("--run-dir", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--preset", required=True)
    p.add_argument("--max-steps", type=int, required=True)
    p.add_argument("--seed")
    p.add_argument("--val-every")
    a = p.parse_args()
    assert pathlib.Path(a.data).is_dir() and a.preset == "tiny"
    with open(pathlib.Path(a.run_dir) / "metrics.csv", "w") as f:
        f.write("step,loss\\n")
        for step in range(1, a.max_steps + 1):
            f.write(f"{step},{1.0 / step}\\n")
            f.flush()
            time.sleep(0.05)
""")


@needs_bpy
def test_training_panel_start_status_stop(tmp_path):
    trainer = tmp_path / "fake_train.py"
    trainer.write_text(FAKE_TRAINER)
    (tmp_path / "data" / "cache").mkdir(parents=True)
    (tmp_path / "data" / "cache" / "index.json").write_text("{}")
    port = free_port()
    code = (f"from pathlib import Path\nfrom backend.server import Server, ServerConfig\n"
            f"Server(ServerConfig(port={port}, device='cpu', load_default_weights=False, "
            f"train_command=[{PYTHON!r}, {str(trainer)!r}], runs_dir=Path({str(tmp_path / 'runs')!r}), "
            f"data_roots=(Path({str(tmp_path / 'data')!r}),), train_poll_s=0.05)).serve_forever()\n")
    process = start_backend(port, code=code)
    try:
        out = drive("training", port=port, dataset="cache")
    finally:
        stop_backend(process)
    assert out["started"]["error"] is None and out["stopped"]["error"] is None, out
    steps = [s for s, _ in out["seen"]]
    assert len(steps) >= 3 and steps == sorted(steps), out["seen"]
    assert all(loss == pytest.approx(1.0 / step) for step, loss in out["seen"])
    assert out["state"] == "cancelled" and out["task_done"] and out["job"] and out["last_error"] == ""
    assert Path(out["run_dir"]).parent == tmp_path / "runs"
    # what the panel sends is typed options; the command the server builds from them is what the
    # real `log3d train` takes
    from backend import protocol as proto
    from backend.cli import build_parser
    from backend.server import ServerConfig, training_command

    assert out["options"] == {"data": "cache", "preset": "tiny", "max_steps": 5000}
    options = proto._check_options("train.start", proto.REQUESTS["train.start"], out["options"])
    cmd, run_dir = training_command(ServerConfig(runs_dir=tmp_path / "r", data_roots=(tmp_path / "data",),
                                                 train_command=["log3d-train"]), options, "job-1")
    parsed = build_parser().parse_args(["train", *cmd[1:]])
    assert (parsed.data, parsed.preset, parsed.max_steps) == ((tmp_path / "data" / "cache").resolve(), "tiny", 5000)
    assert parsed.out == run_dir


def _load_install_py() -> Any:
    spec = importlib.util.spec_from_file_location("log3d_install", REPO / "install.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


@needs_bpy
def test_zip_builds_and_installs_headless(tmp_path, backend):
    import zipfile

    install = _load_install_py()
    zip_path, platforms = install.build_addon_zip(tmp_path / "log3d_blender.zip", offline=True)  # no network
    names = zipfile.ZipFile(zip_path).namelist()
    assert {"log3d/__init__.py", "log3d/blender_manifest.toml", "log3d/_wire/client.py", "log3d/_wire/protocol.py",
            "log3d/operators.py", "log3d/mesh_io.py"} <= set(names)
    assert zipfile.ZipFile(zip_path).read("log3d/_wire/client.py") == (REPO / "backend/client.py").read_bytes()
    manifest = zipfile.ZipFile(zip_path).read("log3d/blender_manifest.toml").decode()
    wheels = [n for n in names if n.endswith(".whl")]
    assert ("wheels = [" in manifest) == bool(wheels) and all(f"./{n[len('log3d/'):]}" in manifest for n in wheels)
    assert 'network = "' in manifest and 'id = "log3d"' in manifest
    validate = subprocess.run([PYTHON, str(_blender_ext_cli()), "validate", str(zip_path)], capture_output=True, text=True)
    assert validate.returncode == 0, validate.stdout + validate.stderr

    # install + enable as an extension, headless, exactly as `install.py --blender PATH` does it
    user = {"BLENDER_USER_RESOURCES": str(tmp_path / "blender_user")}
    script = install.addon_install_script(zip_path, REPO / ".venv")
    done = subprocess.run([PYTHON, "-c", "import bpy\n" + script], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, **user}, timeout=120)
    assert done.returncode == 0 and "LOG3D_ADDON_ENABLED bl_ext.user_default.log3d" in done.stdout, done.stdout + done.stderr
    assert (tmp_path / "blender_user/extensions/user_default/log3d/blender_manifest.toml").is_file()

    # a fresh Blender with those preferences: enabled, vendored wire client, remeshes through the backend
    out = drive("installed", env=user, port=backend, module="bl_ext.user_default.log3d")
    assert out["enabled"], out
    assert out["client_module"] == "bl_ext.user_default.log3d._wire.client"
    assert out["env_path"] == str(REPO / ".venv")
    assert out["op"]["error"] is None and out["results"] == ["Icosphere_log3d"] and out["faces"][0] > 500, out

    # and the same zip as a legacy add-on
    legacy = drive("legacy_install", env={"BLENDER_USER_RESOURCES": str(tmp_path / "legacy_user")}, zip_path=str(zip_path))
    assert legacy["enabled"] and legacy["module"] == "log3d" and legacy["operators"] == [True, True], legacy
    assert legacy["file"].startswith(str(tmp_path / "legacy_user"))


def _blender_ext_cli() -> Path:
    """Blender's own extension command line (``blender --command extension``), shipped inside bpy."""
    spec = importlib.util.find_spec("bpy")
    assert spec is not None and spec.origin is not None
    found = sorted(Path(spec.origin).parent.glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
    assert found, "bl_pkg/cli/blender_ext.py not found in the bpy package"
    return found[-1]


@needs_bpy
def test_panel_draws_and_a_pumped_remesh(backend):
    out = drive("panel", port=backend)
    d = out["draws"]
    assert "label:Backend not checked yet" in d["idle"] and "operator:log3d.backend_start" in d["idle"]
    for name in ("resolution", "mode", "raw", "deflate", "outer_shell", "single_layer", "target_faces", "hide_original"):
        assert f"prop:{name}" in d["idle"]
    assert "operator:log3d.remesh_selected" in d["idle"] and "operator:log3d.remesh_all" in d["idle"]
    assert "label:Backend connected" in d["connected"] and "label:Device: cpu" in d["connected"]
    from model.autoencode import DEFAULT_CHECKPOINT
    from model.checkpoint import read_metadata
    from model.vae import load_model

    # the shipped weights, loaded by default
    parameters = sum(p.numel() for p in load_model(DEFAULT_CHECKPOINT, "cpu").parameters())
    preset = read_metadata(DEFAULT_CHECKPOINT)["preset"]
    assert f"label:Model: {preset} ({parameters / 1e6:.1f}M, cpu)" in d["connected"], d["connected"]
    assert "operator:log3d.backend_stop" in d["connected"]
    assert "label:something went wrong" in d["connected"] and "label:second line" in d["connected"]
    from tests.conftest import endpoint_of

    assert out["status"]["connected"] and out["status"]["endpoint"] == endpoint_of(backend)  # its ipc socket
    # the progress bar while the job ran: object name and stage names
    assert out["labels"] and all(label.startswith("progress:Icosphere: ") for label in out["labels"])
    assert any("Distance field" in label or "Extraction" in label for label in out["labels"]), out["labels"]
    assert out["created"] == ["Icosphere_log3d"] and not out["session"]
    assert not any(r.startswith("progress:") for r in d["after"])
    assert "label:Step 120 / 10,000   loss 0.0123" in d["training"] and "label:train-1: running" in d["training"]
    assert "label:The backend has no cache '/nonexistent'" in d["training"]
    assert "prop:env_path" in d["preferences"] and "prop:port" in d["preferences"]


def test_legacy_install_unpacks_the_wheel_for_this_platform(tmp_path):
    """bootstrap.py (legacy installs): the right wheel per platform tag, unpacked and importable
    by an interpreter that has no pyzmq/msgpack of its own."""
    from blender_addon import bootstrap

    names = ["pyzmq-27.3.0-cp311-cp311-win_amd64.whl", "pyzmq-27.3.0-cp311-cp311-macosx_10_15_universal2.whl",
             "pyzmq-27.3.0-cp311-cp311-manylinux_2_26_x86_64.manylinux_2_28_x86_64.whl",
             "msgpack-1.2.4-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_28_x86_64.whl",
             "msgpack-1.2.4-cp311-cp311-macosx_11_0_arm64.whl", "msgpack-1.2.4-cp312-cp312-win_amd64.whl"]
    for name in names:
        (tmp_path / name).write_bytes(b"")

    def pick(system: str, machine: str) -> list[str]:
        return [w.name.split("-")[0] + ":" + w.name.split("-")[-1][:-4]
                for w in bootstrap.compatible_wheels(tmp_path, system, machine, (3, 11))]

    assert pick("linux", "x86_64") == ["msgpack:manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_28_x86_64",
                                       "pyzmq:manylinux_2_26_x86_64.manylinux_2_28_x86_64"]
    assert pick("darwin", "arm64") == ["msgpack:macosx_11_0_arm64", "pyzmq:macosx_10_15_universal2"]
    assert pick("darwin", "x86_64") == ["pyzmq:macosx_10_15_universal2"]
    assert pick("win32", "AMD64") == ["pyzmq:win_amd64"]  # the cp312 msgpack is not for Python 3.11
    assert pick("linux", "aarch64") == []

    install = _load_install_py()
    cached = install.fetch_addon_wheels(offline=True).get("linux-x64")
    if not cached or sys.platform != "linux" or sys.version_info[:2] != (3, 11):
        pytest.skip("no cached linux-x64 wheels (run `python3 install.py --addon` once) or not Linux/Python 3.11")
    wheels = tmp_path / "real"
    wheels.mkdir()
    for wheel in cached:
        (wheels / wheel.name).write_bytes(wheel.read_bytes())
    target = tmp_path / "vendor"
    assert sorted(w.name for w in bootstrap.vendor_wheels(wheels, target)) == sorted(w.name for w in cached)
    # -S: no site-packages, so zmq and msgpack can only come from the unpacked wheels
    code = f"import sys; sys.path.insert(0, {str(target)!r}); import zmq, msgpack; print(zmq.__file__, msgpack.__file__)"
    done = subprocess.run([PYTHON, "-S", "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.count(str(target)) == 2, done.stdout + done.stderr


@needs_bpy
def test_import_latents_decodes_through_the_backend(tmp_path):
    """A latent file written by `log3d encode` enters the scene as a mesh equal to the backend's
    decode; latents of other weights are refused (wrong_model), nothing is added."""
    import trimesh

    from backend.cli import main
    from tests.conftest import write_tiny_weights

    write_tiny_weights(tmp_path / "tiny.safetensors", seed=0, output_init=0.1)
    write_tiny_weights(tmp_path / "other.safetensors", seed=5, output_init=0.1)
    trimesh.creation.icosphere(subdivisions=3).export(tmp_path / "ball.obj")
    for ckpt, out in (("tiny", "good"), ("other", "foreign")):
        assert main(["encode", str(tmp_path / "ball.obj"), str(tmp_path / f"{out}.safetensors"), "-n", "64",
                     "--checkpoint", str(tmp_path / f"{ckpt}.safetensors"), "--device", "cpu", "--quiet"]) == 0
    assert main(["decode", str(tmp_path / "good.safetensors"), str(tmp_path / "ref.ply"), "--raw", "--checkpoint",
                 str(tmp_path / "tiny.safetensors"), "--device", "cpu", "--quiet"]) == 0
    from model.mesh import load_mesh

    expected = load_mesh(tmp_path / "ref.ply").num_faces
    port = free_port()
    process = start_backend(port, "--checkpoint", str(tmp_path / "tiny.safetensors"))
    try:
        out = drive("import_latents", port=port, good=str(tmp_path / "good.safetensors"),
                    foreign=str(tmp_path / "foreign.safetensors"))
    finally:
        stop_backend(process)
    assert out["ok"]["error"] is None and out["made"] == ["good_decoded"], out
    assert out["faces"] == [expected] and out["source"] == [str(tmp_path / "good.safetensors")]
    assert out["refused"]["error"] is not None, out
    assert "latents were made by LoG-VAE weights" in out["last_error"], out
    assert out["after"] == ["good_decoded"]
