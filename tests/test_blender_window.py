"""The add-on in a real Blender window: Debian's ``blender`` under ``xvfb-run``, the zip installed as a
user installs it, the buttons invoked as clicks, Esc and Ctrl-Z as key presses
(tests/window_driver.py runs inside Blender; each scenario is a fresh Blender that must exit 0).

``install.py --test`` installs Debian's blender, xvfb and python3-numpy where it can (root with
apt-get) and then sets ``LOG3D_WINDOW_TESTS=required``, so CI cannot skip these silently; elsewhere
they are skipped when there is no ``blender`` or ``xvfb-run``. ``LOG3D_WINDOW_BLENDER`` picks another
Blender; ``LOG3D_WINDOW_SHOTS`` a folder to keep the panel's screenshots in (docs/images uses them).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from tests.test_blender_addon import _load_install_py, free_port, start_backend, stop_backend

REPO = Path(__file__).resolve().parents[1]
DRIVER = REPO / "tests" / "window_driver.py"
BLENDER = os.environ.get("LOG3D_WINDOW_BLENDER") or shutil.which("blender")
XVFB_RUN = shutil.which("xvfb-run")
REQUIRED = os.environ.get("LOG3D_WINDOW_TESTS") == "required"

if not (BLENDER and XVFB_RUN):
    if REQUIRED:
        raise RuntimeError("LOG3D_WINDOW_TESTS=required but there is no blender or xvfb-run on PATH")
    pytest.skip("a real Blender window needs `blender` and `xvfb-run` (python3 install.py --test installs "
                "Debian's as root)", allow_module_level=True)


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One runtime folder (the backend's connection files, where the add-on finds the keys) and one
    add-on zip for the module."""
    root = tmp_path_factory.mktemp("window")
    install = _load_install_py()
    zip_path, _ = install.build_addon_zip(root / "log3d_blender.zip", offline=True)
    run_dir = root / "runtime"
    run_dir.mkdir(mode=0o700)
    return {"root": str(root), "zip": str(zip_path), "LOG3D_RUNTIME_DIR": str(run_dir)}


ONE_CORE = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
"""The backend's threads in these tests: on a 2-core machine a backend on both cores starves
Blender's main thread whatever the add-on does (on a workstation it runs on the GPU); on one core it
leaves the other to Blender, so the UI gaps measured are the add-on's own."""


def backend_env(runtime: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG3D_RUNTIME_DIR", runtime["LOG3D_RUNTIME_DIR"])
    for name, value in ONE_CORE.items():
        monkeypatch.setenv(name, value)


@pytest.fixture()
def backend(runtime: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, Any]]:
    backend_env(runtime, monkeypatch)
    port = free_port()
    process = start_backend(port)
    yield port, process
    stop_backend(process)


def run_window(runtime: dict[str, str], name: str, tmp_path: Path, timeout_s: float = 600, **args: Any) -> dict[str, Any]:
    """One scenario in a fresh Blender window; returns the driver's result with Blender's exit code."""
    shots = Path(os.environ.get("LOG3D_WINDOW_SHOTS") or tmp_path / "shots").resolve()
    shots.mkdir(parents=True, exist_ok=True)
    out = tmp_path / f"{name}.json"
    user = tmp_path / "blender_user"
    env = {**_load_install_py().blender_env(), "LOG3D_RUNTIME_DIR": runtime["LOG3D_RUNTIME_DIR"],
           "BLENDER_USER_SCRIPTS": str(user / "scripts"), "BLENDER_USER_CONFIG": str(user / "config"),
           "BLENDER_USER_DATAFILES": str(user / "datafiles")}
    payload = {"scenario": name, "zip": runtime["zip"], "out": str(out), "shots": str(shots),
               "deadline_s": timeout_s - 60, **args}
    cmd = [XVFB_RUN, "-a", "-s", "-screen 0 1280x800x24", BLENDER, "--factory-startup", "--enable-event-simulate",
           "--python", str(DRIVER), "--", json.dumps(payload)]
    started = time.monotonic()
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout_s)
    tail = f"\n--- stdout ---\n{done.stdout[-4000:]}\n--- stderr ---\n{done.stderr[-4000:]}"
    partial = Path(str(out) + ".partial")
    steps = json.loads(partial.read_text())["steps"] if partial.is_file() else []
    assert out.is_file(), f"the driver wrote no result (exit {done.returncode}); its last steps: {steps[-3:]}{tail}"
    result = json.loads(out.read_text())
    assert result["error"] is None, result["error"] + tail
    result["returncode"], result["seconds"] = done.returncode, time.monotonic() - started
    assert done.returncode == 0, f"Blender exited with {done.returncode}{tail}"
    assert "Traceback" not in done.stdout + done.stderr, f"Blender printed an error (a panel's draw?){tail}"
    return result


def step(result: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in result["steps"] if s["step"] == name)


def assert_originals_untouched(before: dict[str, Any], after: dict[str, Any]) -> None:
    for name, was in before.items():
        assert name in after, f"{name} was deleted"
        for key in ("hash", "faces", "matrix_world"):
            assert after[name][key] == was[key], (name, key)


def assert_png(path: str) -> None:
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, path  # a real picture, not a blank


def test_remesh_selected_undo_and_remesh_all_in_a_window(runtime, backend, tmp_path):
    port, _ = backend
    result = run_window(runtime, "remesh_undo", tmp_path, port=port, resolution=256)
    enabled = step(result, "enabled")
    assert enabled["module"] == "log3d" and not enabled["dependency_problem"], enabled
    before = result["before"]
    assert set(before) >= {"Cube", "Suzanne"}

    selected = step(result, "selected:done")
    scene = selected["scene"]
    assert "Suzanne_log3d" in scene and "Cube_log3d" not in scene, sorted(scene)
    np.testing.assert_allclose(scene["Suzanne_log3d"]["matrix_world"], before["Suzanne"]["matrix_world"], atol=1e-5)
    assert scene["Suzanne_log3d"]["visible"] and not scene["Suzanne"]["visible"]  # original hidden
    assert scene["Suzanne_log3d"]["faces"] > 500 and scene["Suzanne_log3d"]["source"] == "Suzanne"
    assert selected["progress"] and all(p.startswith("Suzanne: ") for p in selected["progress"]), selected["progress"]
    assert not selected["last_error"]
    assert_originals_untouched(before, scene)

    undone = step(result, "undone")["scene"]  # Ctrl-Z: one step removes the result, the original is back
    assert "Suzanne_log3d" not in undone and undone["Suzanne"]["visible"], sorted(undone)
    assert_originals_untouched(before, undone)

    everything = step(result, "all:done")["scene"]
    assert {"Cube_log3d", "Suzanne_log3d"} <= set(everything), sorted(everything)
    assert_originals_untouched(before, everything)
    for name in ("panel_idle", "panel_running"):
        assert_png(result["screenshots"][name])


def test_esc_cancels_within_a_second_and_changes_nothing(runtime, backend, tmp_path):
    port, _ = backend
    result = run_window(runtime, "cancel", tmp_path, port=port, resolution=1024, subdivide=2)
    latency = step(result, "cancel_latency")["seconds"]
    assert latency is not None and latency <= 1.0, latency
    after = step(result, "cancel:done")["scene"]
    assert not any(name.endswith("_log3d") for name in after), sorted(after)
    assert all(after[name]["visible"] for name in result["before"])
    assert_originals_untouched(result["before"], after)


def test_backend_killed_mid_job_keeps_what_came_back(runtime, tmp_path, monkeypatch):
    backend_env(runtime, monkeypatch)
    port = free_port()
    process = start_backend(port)
    try:
        result = run_window(runtime, "killed", tmp_path, port=port, resolution=512, subdivide=2,
                            backend_pid=process.pid)
    finally:
        stop_backend(process)
    killed = step(result, "killed:done")
    scene = killed["scene"]
    assert "Cube_log3d" in scene and "Suzanne_log3d" not in scene, sorted(scene)  # Cube came back first
    assert killed["last_error"] and "backend" in killed["last_error"].lower(), killed["last_error"]
    assert_originals_untouched(result["before"], scene)
    assert_png(result["screenshots"]["panel_error"])


def test_a_large_result_enters_the_scene_without_freezing_the_ui(runtime, backend, tmp_path):
    port, _ = backend
    resolution = int(os.environ.get("LOG3D_WINDOW_LARGE_N", "1024"))
    result = run_window(runtime, "large", tmp_path, port=port, resolution=resolution, subdivide=2)
    large = step(result, "large:done")
    faces = large["scene"]["Suzanne_log3d"]["faces"]
    gaps = large["phase_gaps"]
    print(f"\n{resolution}³ remesh in a window: {faces:,} faces, {large['seconds']} s, {large['ticks']} ticks; "
          f"longest UI gap per phase {gaps}; long gaps {large['long_gaps']}")
    # the add-on's part: the job, and the result entering the scene a step per tick
    assert gaps["running"] <= 0.5 and gaps["applying"] <= 0.5, gaps
    # Blender's own once the object is linked (the operator's undo step, the first evaluation and
    # frame of the new object), measured in the same window with no add-on code running: an object
    # of as many faces, linked in one tick, then one undo push. The add-on's pauses there must not
    # exceed Blender's own by more than half a second (built in one go as before, the result added
    # 9 s on Blender 3.4).
    bare = step(run_window(runtime, "bare_link", tmp_path, port=port, faces=faces), "bare:done")
    print(f"Blender alone, {bare['faces']:,} faces: longest gap idle {bare['idle']} s, after linking "
          f"{bare['after_link']} s, after an undo push {bare['after_undo']} s")
    own = max(bare["after_link"], bare["after_undo"])
    assert gaps.get("finishing", 0.0) <= own + 0.5 and gaps.get("after", 0.0) <= own + 0.5, (gaps, bare)
    if resolution >= 1024:
        assert faces > 2_000_000


def test_install_py_installs_and_enables_the_add_on_in_this_blender(runtime, tmp_path):
    """What `python3 install.py` does when it finds a Blender: headless install + enable (the legacy
    route before 4.2), the backend environment stored in the add-on's preferences."""
    install = _load_install_py()
    user = tmp_path / "blender_user"
    env = {**install.blender_env(), "BLENDER_USER_SCRIPTS": str(user / "scripts"), "BLENDER_USER_CONFIG": str(user / "config")}
    script = install.addon_install_script(Path(runtime["zip"]), REPO / ".venv")
    done = subprocess.run([BLENDER, "-b", "--factory-startup", "--python-exit-code", "1", "--python-expr", script],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "LOG3D_ADDON_ENABLED log3d" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
    assert (user / "scripts" / "addons" / "log3d" / "__init__.py").is_file()
