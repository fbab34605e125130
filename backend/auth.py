"""Who may talk to `log3d serve`: CURVE keys in a per-user connection file, checked by ZeroMQ itself.

The model is Jupyter's kernel connection file. At start the server makes two CURVE key pairs (its
own and the one its clients use) and writes them to ``<runtime dir>/server-<port>.json``, readable by
the user alone (0600 in a 0700 folder). The add-on, ``log3d batch`` and ``Log3DClient`` read that
file. ZeroMQ does the rest at connection time:

* the server's ROUTER is a CURVE server whose ZAP handler admits exactly the client key of the
  file, so a peer without it completes no handshake and delivers **no message at all**;
* with ZAP on, libzmq refuses the legacy ZMTP/1.0 and 2.0 framings, so an HTTP request (what a web
  page's ``fetch(..., {mode: "no-cors"})`` sends) is not parsed as a message;
* the client pins the server's public key, so a process that squats on the port cannot pose as the
  backend: both sides prove who they are, and traffic is encrypted (CurveZMQ), which is also what
  makes listening beyond loopback safe.

This module needs only pyzmq and the standard library: the Blender add-on carries it (install.py
copies it with the wire client).
"""

from __future__ import annotations

import json
import os
import stat
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import zmq

CONNECTION_FORMAT = "log3d-connection"
CONNECTION_VERSION = 1
ZAP_DOMAIN = "log3d"


class AuthError(RuntimeError):
    """The connection file is missing, unsafe (readable or writable by others, not ours) or malformed."""


@dataclass(frozen=True)
class ConnectionInfo:
    """What a client needs to reach and authenticate one server (and to be authenticated by it)."""

    host: str
    port: int
    server_public: str
    client_public: str
    client_secret: str
    pid: int = 0
    created: float = 0.0
    endpoint: str = ""
    """Where the server listens: ``ipc://<runtime folder>/server-<port>.sock`` (the default on
    POSIX: only this user can reach a socket in a 0700 folder) or ``tcp://host:port``; empty in
    files written before the ipc transport, which meant TCP."""

    def to_json(self) -> str:
        return json.dumps({"format": CONNECTION_FORMAT, "version": CONNECTION_VERSION, **asdict(self)}, indent=1)


@dataclass(frozen=True)
class ServerKeys:
    """The server's half: its secret key and the one client key it admits."""

    server_public: str
    server_secret: str
    client_public: str
    client_secret: str


def new_keys() -> ServerKeys:
    """Fresh CURVE key pairs for one server run (a restarted server invalidates old files)."""
    server_public, server_secret = zmq.curve_keypair()
    client_public, client_secret = zmq.curve_keypair()
    return ServerKeys(server_public.decode(), server_secret.decode(), client_public.decode(), client_secret.decode())


def runtime_dir() -> Path:
    """Where connection files live: ``$LOG3D_RUNTIME_DIR``, else ``$XDG_RUNTIME_DIR/log3d`` (a per-user
    tmpfs on Linux), else ``~/.log3d/runtime`` (``%LOCALAPPDATA%\\log3d\\runtime`` on Windows)."""
    explicit = os.environ.get("LOG3D_RUNTIME_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and Path(xdg).is_dir():
        return Path(xdg) / "log3d"
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "log3d" / "runtime"
    return Path.home() / ".log3d" / "runtime"


def default_connection_file(port: int) -> Path:
    return runtime_dir() / f"server-{int(port)}.json"


def socket_path(connection_file: Path) -> Path:
    """The server's ipc socket: beside its connection file, in the same private folder."""
    return Path(connection_file).with_suffix(".sock")


def tcp_endpoint(host: str, port: int | str) -> str:
    """``tcp://host:port`` as ZeroMQ wants it: ``localhost`` as 127.0.0.1, an IPv6 address in brackets."""
    host = "127.0.0.1" if host == "localhost" else host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"tcp://{host}:{port}"


def client_endpoint(info: ConnectionInfo, host: str, port: int) -> str:
    """Where a client connects: the file's ipc socket when the server listens on one, else
    ``tcp://host:port`` as the client was told (a remote client names the server's address itself)."""
    return info.endpoint if info.endpoint.startswith("ipc://") else tcp_endpoint(host, int(port))


def private_dir(path: Path) -> Path:
    """Create ``path`` (0700) if needed; use a folder that already existed only when it is ours, not a
    symlink and nobody else can write to it. The permissions of a folder this process did not
    create are never changed (a shared 1777 or group 2775 folder stays as it is): an unsafe one is
    refused with the reason, so the user can point the server at a private folder instead."""
    created = False
    if not os.path.lexists(path):
        try:
            path.mkdir(mode=0o700, parents=True)
            created = True
        except FileExistsError:  # another process made it meanwhile: check it as found
            pass
    if os.name == "posix":
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
            raise AuthError(f"{path} is {'a symlink' if stat.S_ISLNK(st.st_mode) else 'not a folder'}; "
                            "refusing to keep the server's keys there")
        if st.st_uid != os.getuid():
            raise AuthError(f"{path} belongs to another user (uid {st.st_uid}); refusing to keep the server's keys there")
        if st.st_mode & 0o022:
            if not created:
                who = " and ".join(w for w, bit in (("its group", 0o020), ("every user", 0o002)) if st.st_mode & bit)
                raise AuthError(
                    f"{path} can be written by {who} (mode {stat.S_IMODE(st.st_mode):o}), so the server's keys "
                    "cannot be kept there safely, and its permissions are not ours to change. Use a private "
                    "folder: --connection-file PRIVATE_DIR/server.json, or LOG3D_RUNTIME_DIR=PRIVATE_DIR "
                    "(the default is $XDG_RUNTIME_DIR/log3d or ~/.log3d/runtime, made 0700)")
            os.chmod(path, 0o700)  # made by us just now under an unusual umask
    return path


def write_connection_file(info: ConnectionInfo, path: Path | None = None) -> Path:
    """Write the file atomically, created 0600 (never world-readable, not even for an instant), and
    never through a symlink someone placed at its name."""
    path = Path(path) if path is not None else default_connection_file(info.port)
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, flags, 0o600)
    try:
        os.write(fd, info.to_json().encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def read_connection_file(path: Path) -> ConnectionInfo:
    """The file's contents, after checking it is ours and private (a secret others can read is not a
    secret: such a file is refused, with the chmod that fixes it)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise AuthError(f"no connection file at {path}: is `log3d serve` running on that port?") from None
    except OSError as exc:
        raise AuthError(f"cannot read the connection file {path}: {exc.strerror}") from None
    try:
        if os.name == "posix":
            st = os.fstat(fd)
            if st.st_uid != os.getuid():
                raise AuthError(f"the connection file {path} belongs to another user (uid {st.st_uid})")
            if st.st_mode & 0o077:
                raise AuthError(f"the connection file {path} is readable or writable by others "
                                f"(mode {stat.S_IMODE(st.st_mode):o}); run `chmod 600 {path}`")
        raw = os.read(fd, 1 << 16)
    finally:
        os.close(fd)
    try:
        doc = json.loads(raw.decode("utf-8"))
        if doc.get("format") != CONNECTION_FORMAT:
            raise ValueError("not a log3d connection file")
        info = ConnectionInfo(host=str(doc["host"]), port=int(doc["port"]), server_public=str(doc["server_public"]),
                              client_public=str(doc["client_public"]), client_secret=str(doc["client_secret"]),
                              pid=int(doc.get("pid", 0)), created=float(doc.get("created", 0.0)),
                              endpoint=str(doc.get("endpoint", "")))
        if info.endpoint and not info.endpoint.startswith(("ipc://", "tcp://")):
            raise ValueError(f"endpoint {info.endpoint!r} is neither ipc:// nor tcp://")
        for key in (info.server_public, info.client_public, info.client_secret):
            if len(key) != 40:
                raise ValueError("a CURVE key is not 40 z85 characters")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise AuthError(f"the connection file {path} is malformed: {exc}") from None
    return info


def remove_connection_file(path: Path, keys: ServerKeys) -> None:
    """Remove our file at shutdown, but not one a newer server on the same port wrote since."""
    try:
        if read_connection_file(path).server_public == keys.server_public:
            os.unlink(path)
    except (AuthError, OSError):
        pass


def secure_client_socket(sock: zmq.Socket, info: ConnectionInfo) -> None:
    """Make ``sock`` a CURVE client that authenticates itself with the file's client key and accepts
    only the server holding the file's server key."""
    sock.setsockopt(zmq.CURVE_SERVERKEY, info.server_public.encode())
    sock.setsockopt(zmq.CURVE_PUBLICKEY, info.client_public.encode())
    sock.setsockopt(zmq.CURVE_SECRETKEY, info.client_secret.encode())


class _AllowOneKey:
    """ZAP credentials provider for pyzmq's authenticator: exactly the clients' key."""

    def __init__(self, allowed: str) -> None:
        self._allowed = allowed.encode()
        self.refused = 0

    def callback(self, domain: str, key: bytes) -> bool:
        ok = key == self._allowed
        if not ok:
            self.refused += 1
        return ok


class ServerAuth:
    """The server's side: a ZAP handler thread on ``context`` and the CURVE options of its socket."""

    def __init__(self, context: zmq.Context, keys: ServerKeys | None = None) -> None:
        from zmq.auth.thread import ThreadAuthenticator

        self.keys = keys or new_keys()
        self._provider = _AllowOneKey(self.keys.client_public)
        self._authenticator = ThreadAuthenticator(context)
        self._lock = threading.Lock()
        self.connection_file: Path | None = None

    @property
    def refused(self) -> int:
        """Handshakes refused so far (a wrong or missing client key)."""
        return self._provider.refused

    def start(self) -> None:
        self._authenticator.start()
        self._authenticator.configure_curve_callback(domain=ZAP_DOMAIN, credentials_provider=self._provider)

    def secure(self, sock: zmq.Socket) -> None:
        """Before bind: a CURVE server socket whose peers are checked by the ZAP handler."""
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.keys.server_secret.encode())
        sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())

    def publish(self, host: str, port: int, path: Path | None = None, endpoint: str = "") -> Path:
        """Write the connection file clients read."""
        info = ConnectionInfo(host=host, port=port, server_public=self.keys.server_public,
                              client_public=self.keys.client_public, client_secret=self.keys.client_secret,
                              pid=os.getpid(), created=time.time(), endpoint=endpoint)
        with self._lock:
            self.connection_file = write_connection_file(info, path)
        return self.connection_file

    def stop(self) -> None:
        with self._lock:
            if self.connection_file is not None:
                remove_connection_file(self.connection_file, self.keys)
                self.connection_file = None
        self._authenticator.stop()

