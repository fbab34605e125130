"""Where `log3d serve` listens: a Unix-domain socket in the user's private runtime folder, or TCP.

**ipc (the default on Linux and macOS).** The socket ``server-<port>.sock`` sits beside the
connection file, in the 0700 folder ``backend.auth.private_dir`` checks. The kernel lets nobody but
this user (and root) reach a socket in that folder: another local user cannot open even one
connection, so cannot fill the server's descriptors with idle ones (issue 29: 1,106 idle TCP
connections once kept keyed clients waiting 17 s), cannot reach the CURVE handshake, and cannot
listen in the server's place. The "port" is then just the server's number: it names the two files,
and ``--port`` / the add-on's port setting pick the server as before.

**tcp.** Loopback TCP (or beyond, with ``--allow-remote``): what Windows uses, what a remote client
needs, and the fallback when the socket's path would be longer than the platform allows. Any local
user can connect to it; CURVE keeps them from delivering a message and ``backend.handshakes``
bounds what their idle connections cost.
"""

from __future__ import annotations

import errno
import os
import random
import socket
import sys
from pathlib import Path

import zmq

from backend import auth

# sun_path holds 108 bytes on Linux and 104 on macOS, the terminating NUL included.
IPC_PATH_MAX = 103 if sys.platform == "darwin" else 107
TRANSPORTS = ("ipc", "tcp")


class BindError(RuntimeError):
    """The address cannot be listened on (port in use, no such interface, another server there)."""


def ipc_available() -> bool:
    """Unix sockets whose folder's permissions the kernel enforces: POSIX with libzmq's ipc."""
    return os.name == "posix" and zmq.has("ipc")


def ipc_fits(path: Path) -> bool:
    return len(os.fsencode(str(path))) <= IPC_PATH_MAX


def _files(number: int, connection_file: Path | None) -> tuple[Path, Path]:
    """(connection file, ipc socket) of server ``number``: the socket beside the file."""
    file = Path(connection_file) if connection_file else auth.default_connection_file(number)
    return file, auth.socket_path(file)


def choose_transport(requested: str | None, loopback: bool, connection_file: Path | None, port: int) -> str:
    """``requested`` when given (checked by the caller), else ipc where it is possible and the
    server is local, else tcp."""
    if requested:
        return requested
    if not loopback or not ipc_available():
        return "tcp"
    return "ipc" if ipc_fits(_files(port or 65535, connection_file)[1]) else "tcp"  # 0: the longest number


def socket_in_use(path: Path) -> bool:
    """True when a process accepts connections at ``path`` (a live server); False when nothing is
    there or the file is left over from a server that died (nobody listens)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
        return True
    except (FileNotFoundError, ConnectionRefusedError):
        return False
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK):
            return False
        raise
    finally:
        probe.close()


def claim_socket(path: Path) -> None:
    """Make ``path`` free for a new socket: refuse when a live server listens there (libzmq would
    silently unlink its socket and take its place), remove a dead server's left-over file."""
    if not os.path.lexists(path):
        return
    if not path.is_socket() or path.is_symlink():
        raise BindError(f"{path} exists and is not a socket; refusing to replace it")
    if socket_in_use(path):
        raise BindError(f"another server is listening at {path} (choose another --port)")
    path.unlink()


def release_socket(path: Path, inode: int) -> None:
    """Remove our socket file at shutdown (libzmq removes it too, but later, from its I/O thread),
    unless a newer server has bound the same path since (another inode)."""
    try:
        if os.lstat(path).st_ino == inode:
            os.unlink(path)
    except OSError:
        pass


def free_number(folder: Path, rng: random.Random | None = None) -> int:
    """A server number (ipc's stand-in for "any free port") whose files do not exist in ``folder``."""
    rng = rng or random.SystemRandom()
    for _ in range(1000):
        number = rng.randint(49152, 65535)
        if not any(os.path.lexists(folder / f"server-{number}{ext}") for ext in (".json", ".sock")):
            return number
    raise BindError(f"no free server number in {folder}")


def bind_ipc(router: zmq.Socket, port: int, connection_file: Path | None) -> tuple[str, int, Path]:
    """Bind ``router`` to the ipc socket of server ``port`` (0: a free number); returns (endpoint,
    port, connection file path). The folder is checked (ours, 0700, not a symlink) before binding."""
    folder = _files(port, connection_file)[0].parent
    try:
        auth.private_dir(folder)
    except (OSError, auth.AuthError) as exc:
        raise BindError(f"cannot keep the server's socket in {folder}: {exc}") from None
    number = port or free_number(folder)
    file, path = _files(number, connection_file)
    if not ipc_fits(path):
        raise BindError(f"the socket path {path} is longer than the {IPC_PATH_MAX} bytes a Unix socket allows; "
                        "use a shorter LOG3D_RUNTIME_DIR or --connection-file, or --transport tcp")
    claim_socket(path)
    endpoint = f"ipc://{path}"
    try:
        router.bind(endpoint)
    except zmq.ZMQError as exc:
        raise BindError(f"cannot listen on {endpoint}: {exc}") from None
    os.chmod(path, 0o600)  # the folder is the gate; the socket itself is private as well
    return endpoint, number, file
