"""pyzmq and msgpack for a *legacy* install of the add-on zip (Preferences > Add-ons > Install…).

Installed as an extension (Blender 4.2+), Blender itself installs the wheels the manifest lists.
Installed as a legacy add-on, nothing does, so on first use the wheel for this platform and Python
is unpacked from the add-on's ``wheels/`` folder into ``_vendor/<tag>/`` next to it and put on
``sys.path``. Standard library only: this runs before anything else of the add-on can import zmq.
"""

from __future__ import annotations

import importlib
import importlib.util
import platform
import sys
import zipfile
from pathlib import Path

REQUIRED = ("zmq", "msgpack")


def missing_modules() -> list[str]:
    return [name for name in REQUIRED if importlib.util.find_spec(name) is None]


def platform_matches(wheel_platform: str, system: str | None = None, machine: str | None = None) -> bool:
    """Whether a wheel's platform tag (e.g. ``manylinux_2_28_x86_64``, ``macosx_10_15_universal2``,
    ``win_amd64``) runs on this system."""
    system = (system or sys.platform).lower()
    machine = (machine or platform.machine()).lower()
    machine = {"amd64": "x86_64", "aarch64": "arm64"}.get(machine, machine)
    for tag in wheel_platform.lower().split("."):
        if tag == "any":
            return True
        if system.startswith("linux") and "linux" in tag:
            if tag.endswith("_" + machine) or (machine == "arm64" and tag.endswith("_aarch64")):
                return True
        elif system == "darwin" and tag.startswith("macosx_"):
            if tag.endswith("_universal2") or tag.endswith("_" + machine):
                return True
        elif system in ("win32", "cygwin") and tag.startswith("win"):
            if (machine == "x86_64" and tag == "win_amd64") or (machine == "arm64" and tag == "win_arm64"):
                return True
    return False


def python_matches(python_tag: str, abi_tag: str, version: tuple[int, int] | None = None) -> bool:
    major, minor = version or sys.version_info[:2]
    tags = python_tag.lower().split(".")
    if f"cp{major}{minor}" in tags or f"py{major}" in tags or f"py{major}{minor}" in tags:
        return True
    if abi_tag.lower() == "abi3":  # stable ABI: any CPython at least as new as the tag
        return any(t.startswith(f"cp{major}") and int(t[3:] or 0) <= minor for t in tags if t[2:].isdigit())
    return False


def compatible_wheels(wheels_dir: Path, system: str | None = None, machine: str | None = None,
                      version: tuple[int, int] | None = None) -> list[Path]:
    """The wheels in ``wheels_dir`` that this interpreter on this platform can use."""
    found = []
    for wheel in sorted(wheels_dir.glob("*.whl")):
        parts = wheel.name[:-4].split("-")
        if len(parts) not in (5, 6):
            continue
        python_tag, abi_tag, platform_tag = parts[-3:]
        if python_matches(python_tag, abi_tag, version) and platform_matches(platform_tag, system, machine):
            found.append(wheel)
    return found


def vendor_wheels(wheels_dir: Path, target: Path) -> list[Path]:
    """Unpack the compatible wheels into ``target`` (once) and return what was unpacked."""
    wheels = compatible_wheels(wheels_dir)
    done = target / ".unpacked"
    if done.is_file() and done.read_text().split() == [w.name for w in wheels]:
        return wheels
    target.mkdir(parents=True, exist_ok=True)
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(target)
    done.write_text("\n".join(w.name for w in wheels))
    return wheels


def ensure_dependencies(addon_dir: Path) -> str | None:
    """Make pyzmq and msgpack importable; returns None, or a message saying what is missing."""
    if not missing_modules():
        return None
    wheels_dir = addon_dir / "wheels"
    tag = f"py{sys.version_info[0]}{sys.version_info[1]}-{sys.platform}-{platform.machine().lower()}"
    target = addon_dir / "_vendor" / tag
    if wheels_dir.is_dir():
        try:
            vendor_wheels(wheels_dir, target)
        except (OSError, zipfile.BadZipFile) as exc:
            return f"cannot unpack the bundled wheels into {target}: {exc}"
        if target.is_dir() and str(target) not in sys.path:
            sys.path.insert(0, str(target))
            importlib.invalidate_caches()
    missing = missing_modules()
    if missing:
        return (f"{' and '.join(missing)} cannot be imported in Blender's Python {sys.version.split()[0]} on "
                f"{sys.platform}/{platform.machine()}: this build of the add-on has no wheel for it. Rebuild the zip "
                "with `python3 install.py --addon` on a machine with internet access.")
    return None
