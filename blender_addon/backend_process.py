"""Starting `log3d serve` from Blender (the panel's *Start backend* button).

The backend runs in the virtual environment install.py made (torch never enters Blender's Python):
``<env>/bin/log3d serve --port P --device D [--checkpoint C] [--connection-file F]``, in its own
process group, with its output in a private log file (a fresh 0700 temporary folder, not a
predictable name in /tmp) whose tail the panel shows when it fails to start. The server writes the
connection file with its CURVE keys; the add-on's client reads it (``backend.auth``).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path


class BackendLaunchError(RuntimeError):
    """The backend cannot be started (no environment, no `log3d` in it, spawn failed)."""


def resolve_environment(env_path: str) -> Path:
    """The virtual environment from the preference: the .venv folder itself or the folder holding
    it (the repository root)."""
    if not env_path:
        raise BackendLaunchError("Set the backend environment (the .venv that install.py made) in the add-on "
                                 "preferences, or start `log3d serve` yourself.")
    root = Path(env_path).expanduser().resolve()
    for candidate in (root, root / ".venv"):
        if (candidate / "pyvenv.cfg").is_file():
            return candidate
    raise BackendLaunchError(f"{root} is not a virtual environment (no pyvenv.cfg in it or in {root / '.venv'}); "
                             "run `python3 install.py` and point the preference at its .venv")


def serve_command(env: Path, port: int, device: str = "auto", checkpoint: str = "", connection_file: str = "",
                  host: str = "127.0.0.1", data_root: str = "") -> list[str]:
    """The command line of `log3d serve` in ``env`` (``python -m backend.cli`` if the script is missing)."""
    scripts = env / ("Scripts" if os.name == "nt" else "bin")
    exe = scripts / ("log3d.exe" if os.name == "nt" else "log3d")
    python = scripts / ("python.exe" if os.name == "nt" else "python")
    if exe.is_file():
        cmd = [str(exe)]
    elif python.is_file():
        cmd = [str(python), "-m", "backend.cli"]
    else:
        raise BackendLaunchError(f"no `log3d` command and no Python in {scripts}; run `python3 install.py` again")
    cmd += ["serve", "--host", host, "--port", str(int(port)), "--device", device]
    if checkpoint:
        cmd += ["--checkpoint", checkpoint]
    if connection_file:
        cmd += ["--connection-file", connection_file]
    if data_root:
        cmd += ["--data-root", data_root]
    return cmd


class BackendProcess:
    """A `log3d serve` child of Blender."""

    def __init__(self, cmd: list[str], cwd: Path | None = None) -> None:
        self.cmd = cmd
        self._log_dir = Path(tempfile.mkdtemp(prefix="log3d-serve-"))  # 0700, unpredictable name
        self.log_path = self._log_dir / "serve.log"
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}  # Blender's own
        kwargs: dict = {"start_new_session": True} if os.name != "nt" else {
            "creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}  # type: ignore[attr-defined]
        self._log = open(self.log_path, "wb")
        try:
            self.process = subprocess.Popen(cmd, cwd=str(cwd) if cwd else None, env=env, stdin=subprocess.DEVNULL,
                                            stdout=self._log, stderr=subprocess.STDOUT, **kwargs)
        except OSError as exc:
            self._log.close()
            raise BackendLaunchError(f"cannot run {cmd[0]}: {exc.strerror or exc}") from None

    @classmethod
    def start(cls, env_path: str, port: int, device: str = "auto", checkpoint: str = "", connection_file: str = "",
              host: str = "127.0.0.1", data_root: str = "") -> "BackendProcess":
        env = resolve_environment(env_path)
        cmd = serve_command(env, port, device, checkpoint, connection_file, host, data_root)
        # Relative paths the backend writes (training runs) land next to the environment, in the project.
        return cls(cmd, cwd=env.parent)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def log_tail(self, lines: int = 6) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def terminate(self) -> None:
        """Stop it now (``shutdown`` over the wire is the polite way; this is for Blender quitting)."""
        if self.running:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self._log.close()

