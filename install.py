#!/usr/bin/env python3
"""One-command set-up for LoG3D Studio (standard library only).

    python3 install.py                 # .venv with the project and its pinned dependencies, + the add-on zip
    python3 install.py --test          # ... plus the test needs, then runs the test suite
    python3 install.py --addon         # only build the Blender add-on zip (dist/log3d_blender.zip)
    python3 install.py --blender PATH  # ... and install + enable it in that Blender

It creates ``.venv`` in the repository root, installs PyTorch (the CUDA build where ``nvidia-smi``
works, the CPU build elsewhere), then the project itself with the exact versions pinned in
pyproject.toml. A second run finds its stamp and changes nothing.

It also builds the Blender add-on (``blender_addon/`` plus the wire client from ``backend/`` and
the pyzmq and msgpack wheels for every platform Blender supports, downloaded once into build/) and,
when it finds a Blender (``--blender PATH`` or ``blender`` on PATH), installs and enables it there
with the backend environment filled in; otherwise it prints where the zip is and how to install it.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".log3d-install-stamp"
TORCH_VERSION = "2.13.0"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def say(message: str) -> None:
    print(f"[install] {message}", flush=True)


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def venv_script(name: str) -> Path:
    return VENV / ("Scripts" if os.name == "nt" else "bin") / (name + (".exe" if os.name == "nt" else ""))


def run(cmd: list[str], quiet: bool = False) -> subprocess.CompletedProcess:
    say("$ " + " ".join(cmd))
    kwargs = {"stdout": subprocess.DEVNULL} if quiet else {}
    result = subprocess.run(cmd, cwd=ROOT, **kwargs)
    if result.returncode != 0:
        raise SystemExit(f"[install] FAILED ({result.returncode}): {' '.join(cmd)}")
    return result


def has_cuda() -> bool:
    """A working NVIDIA driver: `nvidia-smi` exists and answers."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return False
    try:
        return subprocess.run([exe, "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def wanted_state(extras: list[str], cuda: bool) -> dict:
    pyproject = (ROOT / "pyproject.toml").read_bytes()
    return {
        "pyproject_sha256": hashlib.sha256(pyproject).hexdigest(),
        "extras": sorted(extras),
        "torch": f"{TORCH_VERSION}-{'cuda' if cuda else 'cpu'}",
        "python": sys.version.split()[0],
    }


def current_state() -> dict | None:
    try:
        return json.loads(STAMP.read_text())
    except (OSError, ValueError):
        return None


def install_torch(cuda: bool) -> None:
    pip = [str(venv_python()), "-m", "pip", "install"]
    if cuda:
        # PyPI's Linux wheels of torch are the CUDA builds.
        run(pip + [f"torch=={TORCH_VERSION}"])
        say(f"installed torch {TORCH_VERSION} (CUDA build, nvidia-smi found)")
        return
    # A CPU-only machine: a CPU wheel that pip can already see locally (find-links) comes first;
    # otherwise PyTorch's CPU index, so that no CUDA libraries (gigabytes) are downloaded.
    # (--no-deps: torch's own dependencies come from the ordinary index in the next step.)
    local = subprocess.run(pip + ["--no-index", "--no-deps", f"torch=={TORCH_VERSION}"], cwd=ROOT, capture_output=True, text=True)
    if local.returncode == 0:
        say(f"installed torch {TORCH_VERSION} (CPU build, from a local wheel)")
        return
    run(pip + [f"torch=={TORCH_VERSION}", "--index-url", TORCH_CPU_INDEX])
    say(f"installed torch {TORCH_VERSION} (CPU build, no CUDA found)")


def ensure_installed(extras: list[str], force: bool) -> None:
    if sys.version_info < (3, 11):
        raise SystemExit(f"[install] Python 3.11 or newer is required, this is {sys.version.split()[0]}")
    cuda = has_cuda()
    state = wanted_state(extras, cuda)
    if not force and venv_python().exists():
        have = current_state()
        if have is not None and set(state["extras"]) <= set(have.get("extras", [])) and all(
            have.get(k) == state[k] for k in ("pyproject_sha256", "torch", "python")
        ):
            say(f"up to date: {VENV} (torch {have['torch']}, extras: {', '.join(have['extras']) or 'none'}); nothing to do")
            return
    if not venv_python().exists():
        venv.EnvBuilder(with_pip=True, clear=False).create(VENV)
        say(f"created virtual environment {VENV}")
    run([str(venv_python()), "-m", "pip", "install", "--upgrade", "pip"], quiet=True)
    install_torch(cuda)
    target = "." + (f"[{','.join(sorted(extras))}]" if extras else "")
    run([str(venv_python()), "-m", "pip", "install", "-e", target])
    STAMP.write_text(json.dumps(state, indent=1))
    say(f"installed log3d-studio{target[1:]} with the versions pinned in pyproject.toml")
    say(f"the `log3d` command is {venv_script('log3d')}")


# ----------------------------------------------------------------------------------------------
# The Blender add-on: build the zip, install it into a Blender
# ----------------------------------------------------------------------------------------------

ADDON_SOURCE = ROOT / "blender_addon"
ADDON_ZIP = ROOT / "dist" / "log3d_blender.zip"
ADDON_PACKAGE = "log3d"  # the folder inside the zip: the legacy module name and the extension id
ADDON_WHEEL_CACHE = ROOT / "build" / "addon_wheels"
ADDON_INSTALL_STAMP = ROOT / "build" / "addon_installed.json"
# The add-on's one wire client is backend/client.py; the zip carries it (and the message format it
# imports) as the private sub-package log3d/_wire, so there is no second copy in the repository.
ADDON_WIRE_FILES = ("backend/client.py", "backend/protocol.py", "backend/auth.py", "model/latent_format.py",
                    "model/quad_layout.py")
ADDON_WHEEL_PACKAGES = ("pyzmq", "msgpack")  # versions: the pins in pyproject.toml
BLENDER_PYTHON = "3.11"  # Blender 4.2 … 5.0
# Blender's platform names -> the wheel platform asked of pip (pip also takes older tags of the family).
ADDON_PLATFORMS = {
    "windows-x64": "win_amd64",
    "macos-arm64": "macosx_11_0_arm64",
    "macos-x64": "macosx_11_0_x86_64",
    "linux-x64": "manylinux_2_28_x86_64",
}
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: the same sources give the same zip


def addon_wheel_pins() -> list[str]:
    """``pyzmq==…`` and ``msgpack==…`` exactly as pyproject.toml pins them for the backend."""
    import tomllib  # here, not at the top: an older Python must reach the friendly version check

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = [d for d in deps if d.split("==")[0].strip().lower() in ADDON_WHEEL_PACKAGES]
    if len(pins) != len(ADDON_WHEEL_PACKAGES) or not all("==" in p for p in pins):
        raise SystemExit(f"[install] pyproject.toml must pin {' and '.join(ADDON_WHEEL_PACKAGES)} with ==, found {pins}")
    return pins


def _cached_wheels(folder: Path, pins: list[str]) -> list[Path]:
    found = []
    for pin in pins:
        name, version = (x.strip() for x in pin.split("=="))
        prefix = f"{name.replace('-', '_').lower()}-{version}-"
        found += sorted(w for w in folder.glob("*.whl") if w.name.lower().startswith(prefix))[:1]
    return found


def _pip_for_download() -> list[str] | None:
    for python in (venv_python(), Path(sys.executable)):
        if python.exists() and subprocess.run([str(python), "-m", "pip", "--version"], capture_output=True).returncode == 0:
            return [str(python), "-m", "pip"]
    return None


def fetch_addon_wheels(offline: bool = False) -> dict[str, list[Path]]:
    """The pyzmq and msgpack wheels per Blender platform, from build/addon_wheels/ or downloaded
    there (``pip download``, binary only, Python 3.11). A platform whose wheels cannot be had is
    left out; after one failed download no further one is tried in this run (no network)."""
    pins = addon_wheel_pins()
    pip = None if offline else _pip_for_download()
    have: dict[str, list[Path]] = {}
    for platform, tag in ADDON_PLATFORMS.items():
        folder = ADDON_WHEEL_CACHE / platform
        wheels = _cached_wheels(folder, pins)
        if len(wheels) < len(pins) and pip is not None:
            folder.mkdir(parents=True, exist_ok=True)
            cmd = pip + ["download", "--only-binary=:all:", "--no-deps", "--python-version", BLENDER_PYTHON,
                         "--implementation", "cp", "--abi", "cp" + BLENDER_PYTHON.replace(".", ""),
                         "--platform", tag, "--timeout", "20", "--retries", "1", "-q", "-d", str(folder), *pins]
            say(f"downloading the add-on's wheels for {platform}: {' '.join(pins)}")
            done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip().splitlines()[-2:]
                say(f"WARNING: could not download the wheels for {platform}: {' / '.join(tail)}")
                pip = None
            wheels = _cached_wheels(folder, pins)
        if len(wheels) == len(pins):
            have[platform] = wheels
    return have


def addon_manifest(source: str, version: str, wheel_names: list[str], platforms: list[str]) -> str:
    """blender_addon/blender_manifest.toml with the package version, and ``platforms``/``wheels``
    added before the first table (without wheels: no such lines, the extension fits every platform)."""
    lines = []
    for line in source.splitlines():
        lines.append(f'version = "{version}"' if line.startswith("version = ") else line)
    extra = []
    if wheel_names:
        extra.append("platforms = [" + ", ".join(f'"{p}"' for p in platforms) + "]")
        extra.append("wheels = [\n" + "".join(f'  "./wheels/{w}",\n' for w in wheel_names) + "]")
    at = next((i for i, line in enumerate(lines) if line.startswith("[")), len(lines))
    return "\n".join(lines[:at] + extra + ([""] if extra else []) + lines[at:]) + "\n"


def _zip_add(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    archive.writestr(info, data)


def build_addon_zip(dest: Path = ADDON_ZIP, offline: bool = False) -> tuple[Path, list[str]]:
    """Build the add-on zip (an extension for Blender 4.2+ that also installs as a legacy add-on);
    returns its path and the Blender platforms it carries wheels for."""
    wheels = fetch_addon_wheels(offline)
    platforms = [p for p in ADDON_PLATFORMS if p in wheels]
    unique = sorted({w.name: w for ws in wheels.values() for w in ws}.items())
    import tomllib

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    manifest = addon_manifest((ADDON_SOURCE / "blender_manifest.toml").read_text(), version,
                              [name for name, _ in unique], platforms)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for source in sorted(ADDON_SOURCE.glob("*.py")):
            _zip_add(archive, f"{ADDON_PACKAGE}/{source.name}", source.read_bytes())
        _zip_add(archive, f"{ADDON_PACKAGE}/blender_manifest.toml", manifest.encode())
        _zip_add(archive, f"{ADDON_PACKAGE}/_wire/__init__.py",
                 b'"""The wire client, copied from the LoG3D Studio repository\'s backend/ by install.py."""\n')
        for rel in ADDON_WIRE_FILES:
            _zip_add(archive, f"{ADDON_PACKAGE}/_wire/{Path(rel).name}", (ROOT / rel).read_bytes())
        for name, path in unique:
            _zip_add(archive, f"{ADDON_PACKAGE}/wheels/{name}", path.read_bytes())
    data = buffer.getvalue()
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.exists() or dest.read_bytes() != data:
        tmp = dest.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, dest)
    missing = [p for p in ADDON_PLATFORMS if p not in wheels]
    say(f"built the Blender add-on: {dest} ({len(data) / 1e6:.1f} MB; pyzmq + msgpack wheels for "
        f"{', '.join(platforms) or 'no platform'})")
    if missing:
        say(f"WARNING: no wheels for {', '.join(missing)}: on those the add-on needs pyzmq and msgpack installed "
            "in Blender's Python; run `python3 install.py --addon` again with internet access to bundle them")
    return dest, platforms


def addon_install_script(zip_path: Path, env_path: Path) -> str:
    """What Blender runs (``blender -b --python-expr``) to install and enable the zip and point the
    add-on at the backend's environment; prints ``LOG3D_ADDON_ENABLED <module>`` on success."""
    return "\n".join([
        "import addon_utils, bpy",
        f"zip_path, env_path = {str(zip_path)!r}, {str(env_path)!r}",
        "if bpy.app.version >= (4, 2, 0):  # an extension (bpy.ops answers hasattr for any name, so ask the version)",
        "    bpy.ops.extensions.package_install_files(filepath=zip_path, repo='user_default', enable_on_install=True)",
        f"    module = 'bl_ext.user_default.{ADDON_PACKAGE}'",
        "else:  # a legacy add-on",
        "    bpy.ops.preferences.addon_install(filepath=zip_path, overwrite=True)",
        f"    module = {ADDON_PACKAGE!r}",
        "    addon_utils.enable(module, default_set=True)",
        "addon = bpy.context.preferences.addons.get(module)",
        "if addon is None:",
        "    raise SystemExit('the LoG3D add-on was installed but could not be enabled')",
        "addon.preferences.env_path = env_path",
        "bpy.ops.wm.save_userpref()",
        "print('LOG3D_ADDON_ENABLED', module, flush=True)",
    ])


def find_blender(explicit: str | None) -> str | None:
    if explicit:
        path = shutil.which(explicit) or (explicit if Path(explicit).is_file() else None)
        if path is None:
            raise SystemExit(f"[install] no Blender at {explicit}")
        return str(Path(path).resolve())
    found = shutil.which("blender")
    return str(Path(found).resolve()) if found else None


def blender_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment to run a Blender in: PATH without this Python's own folders (a pyenv or venv
    Python first on PATH makes a Blender built on the system Python take that Python's prefix, and
    lose the system's site-packages, numpy among them)."""
    env = dict(os.environ if base is None else base)
    own = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix) if p}
    if env.get("PYENV_ROOT"):
        own.add(Path(env["PYENV_ROOT"]).resolve())

    def foreign(entry: str) -> bool:
        try:
            resolved = Path(entry).resolve()
        except OSError:
            return True
        return not any(resolved == root or root in resolved.parents for root in own)

    env["PATH"] = os.pathsep.join(e for e in env.get("PATH", "").split(os.pathsep) if e and foreign(e))
    return env


def install_addon_into_blender(blender: str, zip_path: Path, force: bool = False) -> None:
    """Install and enable the add-on in ``blender`` (headless), unless this very zip already is."""
    state = {"blender": blender, "zip_sha256": hashlib.sha256(zip_path.read_bytes()).hexdigest(), "env": str(VENV)}
    try:
        if not force and json.loads(ADDON_INSTALL_STAMP.read_text()) == state:
            say(f"the add-on in {blender} is up to date; nothing to do")
            return
    except (OSError, ValueError):
        pass
    cmd = [blender, "-b", "--python-exit-code", "1", "--python-expr", addon_install_script(zip_path, VENV)]
    say(f"installing the add-on into {blender}")
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=blender_env())
    if done.returncode != 0 or "LOG3D_ADDON_ENABLED" not in done.stdout:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise SystemExit(f"[install] FAILED to install the add-on into {blender} (exit {done.returncode}):\n{tail}")
    ADDON_INSTALL_STAMP.parent.mkdir(parents=True, exist_ok=True)
    ADDON_INSTALL_STAMP.write_text(json.dumps(state, indent=1))
    say(f"installed and enabled the LoG3D add-on in {blender} (3D Viewport > Sidebar (N) > LoG3D); "
        f"its backend environment is {VENV}")


def addon_step(blender: str | None, force: bool) -> None:
    """Build the zip; install it into a Blender if one is found, else say how to."""
    zip_path, _ = build_addon_zip()
    found = find_blender(blender)
    if found:
        install_addon_into_blender(found, zip_path, force)
        return
    say("no Blender found (none given with --blender PATH, no `blender` on PATH). To install the add-on: "
        f"Blender 4.2+ > Edit > Preferences > Get Extensions > (menu) Install from Disk… > {zip_path} "
        f"(or `blender --command extension install-file -r user_default -e {zip_path}`), then set "
        f"'Backend environment' in its preferences to {VENV}")


WINDOW_TEST_PACKAGES = ["blender", "xvfb", "xauth", "python3-numpy"]
"""Debian's packages for tests/test_blender_window.py: a real Blender window (Debian ships 3.4,
the oldest Blender the add-on supports) on a virtual screen."""


def ensure_window_test_packages() -> bool:
    """Install :data:`WINDOW_TEST_PACKAGES` where this machine can (root with apt-get); True when
    the real-window tests can run, which then must not be skipped."""
    if shutil.which("blender") and shutil.which("xvfb-run"):
        return True
    if not (shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0):
        say("no `blender` + `xvfb-run` and no apt-get as root: the real-window add-on tests will be skipped")
        return False
    say("installing Debian's " + ", ".join(WINDOW_TEST_PACKAGES) + " for the real-window add-on tests")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *WINDOW_TEST_PACKAGES],
                   check=True, env=env)
    return True


def run_tests(pytest_args: list[str]) -> int:
    env = dict(os.environ)
    if ensure_window_test_packages():
        env.setdefault("LOG3D_WINDOW_TESTS", "required")
    cmd = [str(venv_python()), "-m", "pytest", *pytest_args]
    say("running the test suite: " + " ".join(cmd))
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--test", action="store_true", help="also install the test needs and run the test suite")
    parser.add_argument("--bench", action="store_true", help="also install the benchmark needs (bpy, matplotlib)")
    parser.add_argument("--force", action="store_true", help="reinstall even if the stamp says up to date")
    parser.add_argument("--addon", action="store_true",
                        help="only build the Blender add-on zip (dist/log3d_blender.zip); with --blender also install it")
    parser.add_argument("--blender", metavar="PATH", default=None,
                        help="the Blender to install and enable the add-on in (default: `blender` on PATH, if any)")
    parser.add_argument("pytest_args", nargs="*", help="extra arguments for pytest (with --test)")
    args = parser.parse_args()
    if args.addon:
        zip_path, _ = build_addon_zip()
        if args.blender:
            install_addon_into_blender(find_blender(args.blender), zip_path, args.force)
        return 0
    extras = (["test"] if args.test else []) + (["bench"] if args.bench else [])
    ensure_installed(extras, args.force)
    addon_step(args.blender, args.force)
    if args.test:
        return run_tests(args.pytest_args or ["-q", "--durations=25"])  # the slowest tests, for the record
    return 0


if __name__ == "__main__":
    sys.exit(main())
