"""Runs inside a real Blender window (not background mode), driven by timers: the add-on exactly as a
user meets it — the zip installed through the legacy installer, the panel in the sidebar, buttons
invoked as clicks (``INVOKE_DEFAULT`` in the window's 3D Viewport), Esc and Ctrl-Z as simulated
key presses (``--enable-event-simulate``). Started by tests/test_blender_window.py::

    xvfb-run blender --factory-startup --enable-event-simulate --python tests/window_driver.py -- ARGS_JSON

Each scenario is a list of steps; a 50 ms app timer runs the current step until it says it is done,
and records the gaps between its own ticks (the UI's responsiveness). The result — what the scene
holds after each step, not what a log says — goes to ``args["out"]`` as JSON, then Blender quits
through ``wm.quit_blender`` (the test checks its exit code). Nothing here imports pytest.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
import traceback
from typing import Any, Callable

import bpy
import numpy as np

ARGS: dict[str, Any] = json.loads(sys.argv[sys.argv.index("--") + 1])
TICK_S = 0.05
RESULT: dict[str, Any] = {"steps": [], "screenshots": {}}
Step = Callable[[], bool]  # called every tick until it returns True


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------


def view3d() -> tuple[Any, Any, Any]:
    """(window, area, region) of the 3D Viewport's main region."""
    window = bpy.context.window_manager.windows[0]
    area = next(a for a in window.screen.areas if a.type == "VIEW_3D")
    region = next(r for r in area.regions if r.type == "WINDOW")
    return window, area, region


def click(operator: Callable[..., Any]) -> Any:
    """Invoke an operator as a button press does, in the 3D Viewport."""
    window, area, region = view3d()
    with bpy.context.temp_override(window=window, area=area, region=region):
        return operator("INVOKE_DEFAULT")


def key(type_: str, ctrl: bool = False) -> None:
    """A key press and release with the mouse over the viewport, through Blender's event system."""
    window, _, region = view3d()
    x, y = region.x + region.width // 2, region.y + region.height // 2
    window.event_simulate(type="MOUSEMOVE", value="NOTHING", x=x, y=y)
    if ctrl:
        window.event_simulate(type="LEFT_CTRL", value="PRESS", x=x, y=y)
    window.event_simulate(type=type_, value="PRESS", x=x, y=y, ctrl=ctrl)
    window.event_simulate(type=type_, value="RELEASE", x=x, y=y, ctrl=ctrl)
    if ctrl:
        window.event_simulate(type="LEFT_CTRL", value="RELEASE", x=x, y=y)


def manager() -> Any:
    return sys.modules["log3d.state"].manager()


def mesh_hash(obj: Any) -> str:
    co = np.empty(len(obj.data.vertices) * 3, dtype=np.float32)
    obj.data.vertices.foreach_get("co", co)
    return hashlib.sha256(co.tobytes()).hexdigest()


def scene_state() -> dict[str, Any]:
    """Every object: visibility, transform, data hash, face count."""
    return {obj.name: {"visible": obj.visible_get(), "matrix_world": [list(r) for r in obj.matrix_world],
                       "hash": mesh_hash(obj) if obj.type == "MESH" else None,
                       "faces": len(obj.data.polygons) if obj.type == "MESH" else None,
                       "source": obj.get("log3d_source")}
            for obj in bpy.context.scene.objects}


def record(name: str, **data: Any) -> None:
    """Keep a step's outcome; written at once, so a crash still leaves what happened before it."""
    RESULT["steps"].append({"step": name, "t": round(time.monotonic() - STARTED, 3), **data})
    with open(ARGS["out"] + ".partial", "w") as f:
        json.dump(RESULT, f, indent=1)


def screenshot(name: str) -> None:
    """The whole window, with the panel in the sidebar."""
    path = os.path.join(ARGS["shots"], f"{name}.png")
    window, area, region = view3d()
    with bpy.context.temp_override(window=window, area=area, region=region):
        bpy.ops.screen.screenshot(filepath=path)
    RESULT["screenshots"][name] = path


PANEL_DRAWS = [0]


def watch_panel() -> None:
    """Count the panel's draws: the sidebar tab is right when it draws."""
    panel = bpy.types.VIEW3D_PT_log3d
    original = panel.draw

    def draw(self: Any, context: Any) -> None:
        PANEL_DRAWS[0] += 1
        original(self, context)

    panel.draw = draw


# ------------------------------------------------------------------------------------------------
# Steps shared by the scenarios
# ------------------------------------------------------------------------------------------------


def install_and_enable() -> bool:
    import addon_utils

    key("ESC")  # the splash screen of a factory start-up swallows events until it is closed
    # software GL (no GPU here): the viewport's temporal anti-aliasing redraws every change 8 times
    # over, at a quarter second a frame; a user without a GPU turns it off too
    bpy.context.preferences.system.viewport_aa = "OFF"
    bpy.context.scene.display.viewport_aa = "OFF"

    bpy.ops.preferences.addon_install(filepath=ARGS["zip"], overwrite=True)
    module = addon_utils.enable("log3d", default_set=True)
    prefs = bpy.context.preferences.addons["log3d"].preferences
    prefs.port = int(ARGS["port"])
    record("enabled", module=getattr(module, "__name__", None), blender=bpy.app.version_string,
           dependency_problem=manager().last_error)
    watch_panel()
    return True


def build_scene() -> bool:
    """The factory Cube, plus Suzanne moved, turned and scaled (subdivided when asked)."""
    bpy.ops.mesh.primitive_monkey_add(size=2.0, location=(2.5, 0.5, 0.3), rotation=(0.3, 0.0, 0.8))
    suzanne = bpy.context.active_object
    suzanne.name = "Suzanne"
    suzanne.scale = (1.2, 1.0, 0.9)
    if ARGS.get("subdivide"):
        modifier = suzanne.modifiers.new("Subdivision", "SUBSURF")
        modifier.levels = int(ARGS["subdivide"])
    for obj in bpy.context.scene.objects:
        obj.select_set(obj.name == "Suzanne")
    bpy.context.view_layer.objects.active = suzanne
    bpy.context.scene.log3d.resolution = str(ARGS["resolution"])
    bpy.context.view_layer.update()  # matrix_world follows the new transform
    window, area, region = view3d()
    with bpy.context.temp_override(window=window, area=area, region=region):
        bpy.ops.ed.undo_push(message="Scene built")  # as the user's own edits would have
    RESULT["before"] = scene_state()
    return True


class ShowPanel:
    """Open the sidebar and bring the LoG3D tab forward (clicked, as a user does)."""

    def __init__(self) -> None:
        self.tries = 0
        self.next_at = 0.0
        self.seen = -1

    def __call__(self) -> bool:
        window, area, _ = view3d()
        now = time.monotonic()
        if self.seen < 0:
            area.spaces.active.show_region_ui = True
            area.tag_redraw()
            self.seen, self.next_at = PANEL_DRAWS[0], now + 0.5
            return False
        if PANEL_DRAWS[0] > self.seen:
            record("panel_shown", tries=self.tries)
            return True
        if now < self.next_at:
            return False
        if self.tries >= 12:
            screenshot("no_panel")
            raise AssertionError("the LoG3D tab never drew")
        # the tabs are a vertical strip at the sidebar's right edge, in registration order (Item,
        # Tool, View, then the add-ons'): click down the strip until the panel draws
        sidebar = next(r for r in area.regions if r.type == "UI")
        x = sidebar.x + sidebar.width - 10
        y = sidebar.y + sidebar.height - 25 - 30 * self.tries
        window.event_simulate(type="MOUSEMOVE", value="NOTHING", x=x, y=y)
        window.event_simulate(type="LEFTMOUSE", value="PRESS", x=x, y=y)
        window.event_simulate(type="LEFTMOUSE", value="RELEASE", x=x, y=y)
        area.tag_redraw()
        self.seen, self.next_at = PANEL_DRAWS[0], now + 0.3
        self.tries += 1
        return False


def wait(seconds: float) -> Step:
    until: list[float] = []

    def step() -> bool:
        if not until:
            until.append(time.monotonic() + seconds)
        return time.monotonic() >= until[0]

    return step


def idle(name: str, seconds: float) -> Step:
    """Measure the UI's ticks while nothing runs (the baseline of the gaps)."""
    times: list[float] = []

    def step() -> bool:
        times.append(time.monotonic())
        if times[-1] - times[0] < seconds:
            return False
        gaps = np.diff(times)
        record(name, ticks=len(gaps), longest_gap_s=round(float(gaps.max()), 3), mean_gap_s=round(float(gaps.mean()), 3))
        return True

    return step


def once(fn: Callable[[], Any]) -> Step:
    def step() -> bool:
        fn()
        return True

    return step


class RunJob:
    """Click a remesh button and wait for it to end, recording the UI's longest pause and the
    panel's progress; ``during`` is called every tick while the job runs (cancel, kill, screenshot)."""

    def __init__(self, name: str, operator: Callable[[], Any], during: Callable[["RunJob"], None] | None = None,
                 settle_s: float = 1.0) -> None:
        self.name, self.operator, self.during, self.settle_s = name, operator, during, settle_s
        self.started = self.ended = None
        self.progress: list[str] = []
        self.gaps: list[float] = []
        self.long_gaps: list[tuple[float, float, str]] = []
        self.phase_gaps: dict[str, float] = {}
        self.phase_ticks: dict[str, int] = {}
        self.phase_order: list[str] = []
        self.stage_times: list[tuple[float, str]] = []

    def __call__(self) -> bool:
        now = time.monotonic()
        if self.started is None:
            self.started = now
            self.last = now
            record(f"{self.name}:click", returned=sorted(click(self.operator())))
            return False
        gap = now - self.last
        self.gaps.append(gap)
        session = manager().session
        # the phase the pause fell in: the job (running), results entering the scene a step per tick
        # (applying), the tick the operator finished in (finishing: the last step, the undo step,
        # Blender's first evaluation of the new objects) and the redraws after it (after)
        phase = ("after" if self.ended is not None else "finishing" if session is None
                 else "applying" if session.finished else "running")
        self.phase_gaps[phase] = max(self.phase_gaps.get(phase, 0.0), round(gap, 3))
        self.phase_ticks[phase] = self.phase_ticks.get(phase, 0) + 1
        if not self.phase_order or self.phase_order[-1] != phase:
            self.phase_order.append(phase)
        if gap > 0.3:  # when the long pauses happened, for the record
            self.long_gaps.append((round(self.last - self.started, 2), round(gap, 3), phase))
        self.last = now
        m = manager()
        if self.ended is None:
            if m.progress is not None and m.progress.stage:
                label = f"{m.progress.name}: {m.progress.stage}"
                if not self.progress or self.progress[-1] != label:
                    self.progress.append(label)
                    self.stage_times.append((round(now - self.started, 2), label))
                    record(f"{self.name}:stage", label=label, longest_gap_s=round(max(self.gaps, default=0.0), 3))
            if self.during is not None:
                self.during(self)
            if m.session is None:
                self.ended = now
                self.gaps_until_end = list(self.gaps)
            return False
        if now - self.ended < self.settle_s:  # the first redraws of what came back
            return False
        record(f"{self.name}:done", seconds=round(self.ended - self.started, 3),
               longest_gap_s=round(max(self.gaps_until_end, default=0.0), 3),
               longest_gap_after_s=round(max(self.gaps[len(self.gaps_until_end):], default=0.0), 3),
               ticks=len(self.gaps), phase_gaps=self.phase_gaps, phase_ticks=self.phase_ticks,
               phase_order=self.phase_order, long_gaps=self.long_gaps[:20], stage_times=self.stage_times[:40], progress=self.progress[:40],
               last_error=m.last_error, scene=scene_state())
        return True


# ------------------------------------------------------------------------------------------------
# Scenarios
# ------------------------------------------------------------------------------------------------


def scenario_remesh_undo() -> list[Step]:
    """Remesh Selected, Ctrl-Z, Remesh All; screenshots of the panel idle and running."""
    shot_taken: list[float] = []

    def shoot_running(job: RunJob) -> None:  # once the panel has had time to draw the progress
        if len(job.progress) >= 2 and not shot_taken:
            shot_taken.append(time.monotonic())
            bpy.context.window_manager.windows[0].screen.areas[0].tag_redraw()
        elif len(shot_taken) == 1 and time.monotonic() - shot_taken[0] > 0.3:
            screenshot("panel_running")
            shot_taken.append(time.monotonic())

    def undo() -> None:
        key("Z", ctrl=True)

    return [install_and_enable, build_scene, ShowPanel(), idle("idle_before", 1.0), once(lambda: screenshot("panel_idle")),
            RunJob("selected", lambda: bpy.ops.log3d.remesh_selected, shoot_running), idle("idle_with_result", 1.0),
            once(undo), wait(1.0), once(lambda: record("undone", scene=scene_state())), idle("idle_after_undo", 1.0),
            RunJob("all", lambda: bpy.ops.log3d.remesh_all)]


def scenario_cancel() -> list[Step]:
    """Esc while the backend works: the operator ends within a second, nothing is created."""
    pressed: list[float] = []

    def press_esc(job: RunJob) -> None:
        if not pressed and job.progress and time.monotonic() - job.started > 2.0:
            key("ESC")
            pressed.append(time.monotonic())
            record("esc")

    def after() -> None:
        record("cancel_latency", seconds=round(RESULT_JOB["job"].ended - pressed[0], 3) if pressed else None)

    job = RunJob("cancel", lambda: bpy.ops.log3d.remesh_selected, press_esc)
    RESULT_JOB["job"] = job
    return [install_and_enable, build_scene, ShowPanel(), job, once(after)]


RESULT_JOB: dict[str, RunJob] = {}


def scenario_killed() -> list[Step]:
    """Remesh All (Cube, then Suzanne); the backend is killed once the first result is in (the
    test's backend holds the second job in its extraction, so it cannot finish first)."""
    killed: list[bool] = []

    def kill_after_first(job: RunJob) -> None:
        m = manager()
        if not killed and m.session is not None and m.session.results:
            os.kill(int(ARGS["backend_pid"]), signal.SIGKILL)
            killed.append(True)
            record("killed")

    return [install_and_enable, build_scene, ShowPanel(),
            RunJob("killed", lambda: bpy.ops.log3d.remesh_all, kill_after_first, settle_s=1.5),
            once(lambda: screenshot("panel_error"))]


def look_away() -> bool:
    """Point the viewport where nothing is (every object beyond its far clip plane, so culled): on a
    machine without a GPU, Blender draws in software (llvmpipe), and one frame of a 4.6M-face mesh
    there takes over 3 s — the cost of drawing, which no add-on can slice. With nothing to draw, the
    gaps measured are the add-on's own main-thread work plus Blender's own handling of a new object
    (its first evaluation, the undo step)."""
    _, area, _ = view3d()
    space = area.spaces.active
    space.clip_start, space.clip_end = 0.01, 1.0
    space.region_3d.view_location = (0.0, 0.0, 1000.0)
    area.tag_redraw()
    record("looked_away")
    return True


def scenario_large() -> list[Step]:
    """A remesh with a result of millions of faces: the longest pause of the UI while it runs and
    its result enters the scene, and after (Blender's own first evaluation, undo step and draw)."""
    return [install_and_enable, build_scene, ShowPanel(), look_away, idle("idle_before", 1.0),
            RunJob("large", lambda: bpy.ops.log3d.remesh_selected, settle_s=3.0)]


def build_attribute_scene() -> bool:
    """The scene of tests/attribute_scene.py (a two-material object, a painted Suzanne, a small and
    a large cube); the factory Cube goes. Duo and Suzanne are selected, at ``ARGS["resolution"]``."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import attribute_scene

    bpy.data.objects.remove(bpy.data.objects["Cube"])
    window, area, region = view3d()

    def join(active: Any, objects: list[Any]) -> None:
        for obj in bpy.context.scene.objects:
            obj.select_set(obj in objects)
        bpy.context.view_layer.objects.active = active
        with bpy.context.temp_override(window=window, area=area, region=region, active_object=active,
                                       selected_editable_objects=objects):
            bpy.ops.object.join()

    scene = attribute_scene.build(join)
    scene["Suzanne"].data.color_attributes.active_color_name = "Paint"
    for obj in bpy.context.scene.objects:
        obj.select_set(obj.name in ("Duo", "Suzanne"))
    bpy.context.view_layer.objects.active = scene["Duo"]
    settings = bpy.context.scene.log3d
    settings.size_mode, settings.resolution, settings.keep_attributes = "RESOLUTION", str(ARGS["resolution"]), True
    with bpy.context.temp_override(window=window, area=area, region=region):
        bpy.ops.ed.undo_push(message="Scene built")
    RESULT["before"] = scene_state()
    return True


def save_meshes() -> bool:
    """Each mesh's world-space vertices, polygons, material indices and colour attributes, for the
    test to measure (meshes.npz beside the result): Blender's Python has numpy but not the project."""
    arrays: dict[str, Any] = {}
    for obj in bpy.context.scene.objects:
        if obj.type != "MESH":
            continue
        mesh = obj.data
        co = np.empty(len(mesh.vertices) * 3, dtype=np.float64)
        mesh.vertices.foreach_get("co", co)
        m = np.array(obj.matrix_world, dtype=np.float64)
        arrays[f"{obj.name}/vertices"] = co.reshape(-1, 3) @ m[:3, :3].T + m[:3, 3]
        corners = np.empty(len(mesh.loops), dtype=np.int32)
        mesh.loops.foreach_get("vertex_index", corners)
        totals = np.empty(len(mesh.polygons), dtype=np.int32)
        mesh.polygons.foreach_get("loop_total", totals)
        material = np.empty(len(mesh.polygons), dtype=np.int32)
        mesh.polygons.foreach_get("material_index", material)
        edges = np.empty(len(mesh.edges) * 2, dtype=np.int32)
        mesh.edges.foreach_get("vertices", edges)
        arrays[f"{obj.name}/corners"], arrays[f"{obj.name}/totals"] = corners, totals
        arrays[f"{obj.name}/material"], arrays[f"{obj.name}/edges"] = material, edges.reshape(-1, 2)
        for attribute in mesh.color_attributes:
            values = np.empty(len(attribute.data) * 4, dtype=np.float32)
            attribute.data.foreach_get("color", values)
            arrays[f"{obj.name}/color/{attribute.name}/{attribute.domain}/{attribute.data_type}"] = values.reshape(-1, 4)
        arrays[f"{obj.name}/slots"] = np.array([s.material.name if s.material else "" for s in obj.material_slots])
        arrays[f"{obj.name}/active_color"] = np.array(mesh.color_attributes.active_color_name or "")
    path = os.path.join(os.path.dirname(ARGS["out"]), "meshes.npz")
    np.savez(path, **arrays)
    record("saved", path=path, names=sorted({k.split("/")[0] for k in arrays}))
    return True


def voxel_settings() -> bool:
    """The panel switched to one voxel size for every object, then shown in a screenshot."""
    settings = bpy.context.scene.log3d
    settings.size_mode, settings.voxel_size = "VOXEL", 0.02
    view3d()[1].tag_redraw()
    return True


def shading(color_type: str) -> Step:
    """Solid shading coloured by ``color_type`` (MATERIAL, or ATTRIBUTE: the active colour
    attribute, VERTEX before Blender 4.0), framed on the results."""

    def step() -> bool:
        window, area, region = view3d()
        solid = area.spaces.active.shading
        solid.type = "SOLID"
        names = {item.identifier for item in solid.bl_rna.properties["color_type"].enum_items}
        solid.color_type = color_type if color_type in names else "VERTEX"
        for obj in bpy.context.scene.objects:
            obj.select_set(obj.name in ("Suzanne_log3d", "Duo_log3d"))
        with bpy.context.temp_override(window=window, area=area, region=region):
            bpy.ops.view3d.view_selected()
        area.tag_redraw()
        return True

    return step


def show_paint() -> bool:
    """The result's "Paint" attribute becomes the one the viewport shows."""
    attributes = bpy.data.objects["Suzanne_log3d"].data.color_attributes
    attributes.active_color = attributes["Paint"]
    return True


def scenario_attributes() -> list[Step]:
    """Materials and colours carried over (Remesh Selected on the two-material object and the
    painted Suzanne), then Remesh All at one voxel size (the small and the large cube)."""
    return [install_and_enable, build_attribute_scene, ShowPanel(), idle("idle_before", 0.5),
            RunJob("attributes", lambda: bpy.ops.log3d.remesh_selected), shading("MATERIAL"), wait(1.0),
            once(lambda: screenshot("result_materials")), show_paint, shading("ATTRIBUTE"), wait(1.0),
            once(lambda: screenshot("result_colours")), once(voxel_settings), wait(0.5),
            once(lambda: screenshot("panel_settings")), RunJob("voxel", lambda: bpy.ops.log3d.remesh_all),
            save_meshes]


class BareLink:
    """Blender's own pause when an object of ``ARGS["faces"]`` faces enters the scene, with no add-on
    code running: a torus mesh built beforehand through the add-on's own build path (that pause is
    not measured), linked in one tick; after a while, one undo push (what an operator's end makes).
    Records the longest gap between ticks after each: what no add-on can slice, the baseline the
    ``large`` scenario is judged against."""

    def __init__(self) -> None:
        self.obj: Any = None
        self.ticks: list[float] = []
        self.marks: dict[str, float] = {}

    def build(self) -> None:
        n = max(8, int(round(np.sqrt(int(ARGS["faces"]) / 2.0))))
        u, v = np.meshgrid(np.linspace(0, 2 * np.pi, n, endpoint=False), np.linspace(0, 2 * np.pi, n, endpoint=False),
                           indexing="ij")
        vertices = np.stack([(1 + 0.3 * np.cos(v)) * np.cos(u), (1 + 0.3 * np.cos(v)) * np.sin(u), 0.3 * np.sin(v)], -1)
        i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        a, b = i * n + j, ((i + 1) % n) * n + j
        c, d = ((i + 1) % n) * n + (j + 1) % n, i * n + (j + 1) % n
        faces = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
        arrays = sys.modules["log3d.mesh_arrays"].MeshArrays.of(vertices.reshape(-1, 3), faces)
        mesh = None
        for built in sys.modules["log3d.mesh_io"].mesh_build_steps("bare", arrays):
            mesh = built if built is not None else mesh
        self.obj = bpy.data.objects.new("Bare", mesh)
        self.faces = len(faces)

    def __call__(self) -> bool:
        if self.obj is None:
            import importlib

            importlib.import_module("log3d.mesh_io")
            importlib.import_module("log3d.mesh_arrays")
            self.build()
            return False
        now = time.monotonic()
        self.ticks.append(now)
        start = self.ticks[0]
        if "link" not in self.marks and now - start > 1.0:
            bpy.context.scene.collection.objects.link(self.obj)
            self.marks["link"] = now
        elif "link" in self.marks and "undo" not in self.marks and now - self.marks["link"] > 4.0:
            bpy.ops.ed.undo_push(message="Bare link")
            self.marks["undo"] = now
        elif "undo" in self.marks and now - self.marks["undo"] > 2.0:
            ticks = np.array(self.ticks)
            gaps = np.diff(ticks)

            def longest(since: float, until: float) -> float:
                chosen = gaps[(ticks[:-1] >= since) & (ticks[:-1] < until)]
                return round(float(chosen.max()), 3) if len(chosen) else 0.0

            record("bare:done", faces=self.faces, idle=longest(start, self.marks["link"]),
                   after_link=longest(self.marks["link"], self.marks["undo"]),
                   after_undo=longest(self.marks["undo"], now + 1.0))
            return True
        return False


def scenario_bare_link() -> list[Step]:
    """Blender alone taking in an object as large as a 1024³ result (see :class:`BareLink`)."""
    return [install_and_enable, look_away, BareLink()]


# ------------------------------------------------------------------------------------------------
# The timer that runs the steps
# ------------------------------------------------------------------------------------------------

STARTED = time.monotonic()
STEPS: list[Step] = globals()[f"scenario_{ARGS['scenario']}"]()
DEADLINE_S = float(ARGS.get("deadline_s", 600))


def finish(error: str | None = None) -> None:
    RESULT["error"] = error
    RESULT["after"] = scene_state()
    with open(ARGS["out"], "w") as f:
        json.dump(RESULT, f, indent=1)
    bpy.app.timers.register(lambda: bpy.ops.wm.quit_blender() and None, first_interval=0.2)


def tick() -> float | None:
    try:
        if time.monotonic() - STARTED > DEADLINE_S:
            raise AssertionError(f"the scenario did not end within {DEADLINE_S:g} s")
        while STEPS and STEPS[0]():
            STEPS.pop(0)
        if not STEPS:
            finish()
            return None
        return TICK_S
    except Exception:  # the test reads the error from the result file
        finish(traceback.format_exc())
        return None


bpy.app.timers.register(tick, first_interval=1.0)
