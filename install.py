#!/usr/bin/env python3
"""One-command set-up for LoG3D Studio (standard library only).

    python3 install.py           # .venv with the project and its pinned dependencies
    python3 install.py --test    # ... plus the test needs, then runs the test suite

It creates ``.venv`` in the repository root, installs PyTorch (the CUDA build where ``nvidia-smi``
works, the CPU build elsewhere), then the project itself with the exact versions pinned in
pyproject.toml. A second run finds its stamp and changes nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import venv
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


def run_tests(pytest_args: list[str]) -> int:
    cmd = [str(venv_python()), "-m", "pytest", *pytest_args]
    say("running the test suite: " + " ".join(cmd))
    return subprocess.run(cmd, cwd=ROOT).returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--test", action="store_true", help="also install the test needs and run the test suite")
    parser.add_argument("--bench", action="store_true", help="also install the benchmark needs (bpy, matplotlib)")
    parser.add_argument("--force", action="store_true", help="reinstall even if the stamp says up to date")
    parser.add_argument("pytest_args", nargs="*", help="extra arguments for pytest (with --test)")
    args = parser.parse_args()
    extras = (["test"] if args.test else []) + (["bench"] if args.bench else [])
    ensure_installed(extras, args.force)
    if args.test:
        return run_tests(args.pytest_args or ["-q"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
