"""Running the add-on in a real Blender window, for the window tests (tests/test_blender_window.py,
which assert behaviour) and the window benchmark (bench/bench_window.py, which measures the UI's
pauses): Debian's ``blender`` under ``xvfb-run``, the driver tests/window_driver.py inside it, a
local backend on one core beside it. Nothing here asserts a time."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from tests.test_blender_addon import _load_install_py, free_port, start_backend, stop_backend

REPO = Path(__file__).resolve().parents[1]
DRIVER = REPO / "tests" / "window_driver.py"
BLENDER = os.environ.get("LOG3D_WINDOW_BLENDER") or shutil.which("blender")
XVFB_RUN = shutil.which("xvfb-run")

ONE_CORE = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
"""The backend's threads beside a window: on a 2-core machine a backend on both cores starves
Blender's main thread whatever the add-on does (on a workstation it runs on the GPU); on one core it
leaves the other to Blender, so the UI pauses measured are the add-on's own."""


def available() -> bool:
    return bool(BLENDER and XVFB_RUN)


def make_runtime(root: Path) -> dict[str, str]:
    """One runtime folder (the backend's connection files, where the add-on finds the keys) and one
    add-on zip, built offline from this checkout."""
    install = _load_install_py()
    zip_path, _ = install.build_addon_zip(root / "log3d_blender.zip", offline=True)
    run_dir = root / "runtime"
    run_dir.mkdir(mode=0o700, exist_ok=True)
    return {"root": str(root), "zip": str(zip_path), "LOG3D_RUNTIME_DIR": str(run_dir)}


def backend_environment(runtime: dict[str, str]) -> dict[str, str]:
    """The variables a backend beside a window runs with: the runtime folder and one core."""
    return {"LOG3D_RUNTIME_DIR": runtime["LOG3D_RUNTIME_DIR"], **ONE_CORE}


@contextmanager
def window_backend(runtime: dict[str, str]) -> Iterator[tuple[int, Any]]:
    """A `log3d serve` on a free port with :func:`backend_environment` (for scripts; the tests set
    the same variables through pytest's monkeypatch)."""
    saved = {name: os.environ.get(name) for name in backend_environment(runtime)}
    os.environ.update(backend_environment(runtime))
    try:
        port = free_port()
        process = start_backend(port)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    try:
        yield port, process
    finally:
        stop_backend(process)


def run_window(runtime: dict[str, str], name: str, workdir: Path, timeout_s: float = 600, **args: Any) -> dict[str, Any]:
    """One scenario in a fresh Blender window; returns the driver's result with Blender's exit code.
    ``timeout_s`` only stops a hung Blender."""
    shots = Path(os.environ.get("LOG3D_WINDOW_SHOTS") or workdir / "shots").resolve()
    shots.mkdir(parents=True, exist_ok=True)
    out = workdir / f"{name}.json"
    user = workdir / "blender_user"
    env = {**_load_install_py().blender_env(), "LOG3D_RUNTIME_DIR": runtime["LOG3D_RUNTIME_DIR"],
           "BLENDER_USER_SCRIPTS": str(user / "scripts"), "BLENDER_USER_CONFIG": str(user / "config"),
           "BLENDER_USER_DATAFILES": str(user / "datafiles")}
    payload = {"scenario": name, "zip": runtime["zip"], "out": str(out), "shots": str(shots),
               "deadline_s": timeout_s - 60, **args}
    cmd = [XVFB_RUN, "-a", "-s", "-screen 0 1280x800x24", BLENDER, "--factory-startup", "--enable-event-simulate",
           "--python", str(DRIVER), "--", json.dumps(payload)]
    started = time.monotonic()
    done = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout_s)
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


def blender_version() -> str:
    done = subprocess.run([BLENDER, "--version"], capture_output=True, text=True, timeout=120)
    return done.stdout.splitlines()[0].strip() if done.stdout else "unknown"
