"""A Python client for `log3d serve`, used by `log3d batch`, tests, scripts and the Blender add-on.

Needs only pyzmq, msgpack and numpy (Blender has no torch and no ``model`` package), so nothing
here imports them. One DEALER socket per client; a lock makes the object safe to share between
threads, but the intended use is one client per thread (the add-on: one worker thread that calls
``submit`` and then ``poll`` without blocking, or ``wait``).

Blocking calls raise :class:`BackendError` with the server's stable error code (docs/protocol.md),
``cancelled`` for a cancelled job, ``timeout`` when the server does not answer in time, and
``not_running`` when there is no connection file this client can trust for the port: then it sends
nothing at all (a process that listens on the port without the server's key gets no byte of a mesh,
and its answers are never read).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import zmq

from . import auth
from . import protocol as proto
from .protocol import DEFAULT_HOST, DEFAULT_PORT, Event

ProgressCallback = Callable[[str, float], None]


class BackendError(Exception):
    """An error event from the server (or ``timeout`` from this client), with its stable code."""

    def __init__(self, code: str, message: str, job: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.job = job


@dataclass
class EncodedShape:
    """What ``encode`` returns: latents [L, C] on block coordinates [L, 3] at ``resolution``, and the
    normalisation (``unit = (world - center) * scale``) that ``decode`` needs to return to the
    mesh's frame."""

    latents: np.ndarray
    coords: np.ndarray
    resolution: int
    center: list[float]
    scale: float
    info: dict[str, Any] = field(default_factory=dict)


class Log3DClient:
    """Talks to the server numbered ``port``: at the ipc socket its connection file names (the
    default on Linux and macOS, ``backend.listen``) or at ``tcp://host:port``.

    ``timeout_s``: how long a request may wait for the server's first answer (accepted, or the
    reply to a quick request). ``job_timeout_s``: how long ``wait`` may wait for a job to end
    (``None``: as long as it takes; a 2048³ remesh can take minutes and queued jobs send nothing
    while they wait).

    ``connection_file``: the server's keys (``backend.auth``); default: the file the server on
    ``port`` wrote in this user's runtime folder. It is read again at every (re)connection, so a
    restarted server is found without a new client. Without a file that passes its checks (ours,
    0600, not a symlink, well formed) the client opens no connection: every request raises
    ``not_running`` naming the file it looked for and how to start a server.
    """

    def __init__(self, port: int = DEFAULT_PORT, host: str = DEFAULT_HOST, timeout_s: float = 10.0,
                 job_timeout_s: float | None = None, context: zmq.Context | None = None,
                 connection_file: str | Path | None = None) -> None:
        self.host, self.port = host, int(port)
        self.endpoint = f"tcp://{host}:{port}"  # until the connection file says where the server is
        self.connection_file = Path(connection_file) if connection_file else auth.default_connection_file(port)
        self.auth_problem: str | None = None
        self.timeout_s = timeout_s
        self.job_timeout_s = job_timeout_s
        self._context = context or zmq.Context.instance()
        self._lock = threading.RLock()
        self._prefix = secrets.token_hex(2)
        self._counter = 0
        self._inbox: dict[Any, deque[Event]] = {}
        self._job_requests: dict[str, Any] = {}
        self._socket: zmq.Socket | None = None
        self._connect()

    # -- connection --------------------------------------------------------------------------

    def _connect(self) -> None:
        try:
            self._socket, self.endpoint = connect_dealer(self.host, self.port, self.connection_file, self._context)
            self.auth_problem = None
        except auth.AuthError as exc:
            self._socket, self.auth_problem = None, str(exc)

    def _reconnect(self) -> None:
        """A fresh socket after the server failed to answer: requests queued in the old one are
        dropped instead of reaching a server that starts later."""
        with self._lock:
            self.close()
            self._inbox.clear()
            self._job_requests.clear()
            self._connect()

    def close(self) -> None:
        with self._lock:
            if self._socket is not None:
                self._socket.close(linger=0)
                self._socket = None

    def __enter__(self) -> "Log3DClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sending and receiving ---------------------------------------------------------------

    def send(self, kind: str, options: Mapping[str, Any] | None = None,
             arrays: Mapping[str, np.ndarray] | None = None, job: str | None = None) -> str:
        """Send one request without waiting; returns its request id."""
        with self._lock:
            if self._socket is None:
                self._connect()
            if self._socket is None:
                raise BackendError("not_running", f"{self.auth_problem}. Nothing was sent to server {self.port}. "
                                                  f"Start the server with `log3d serve --port {self.port}` "
                                                  "as this user (or set LOG3D_RUNTIME_DIR to the folder it writes to).")
            self._counter += 1
            request_id = f"{self._prefix}-{self._counter}"
            self._inbox[request_id] = deque()
            frames = proto.request_frames(kind, request_id, options, arrays, job)
            assert self._socket is not None
            self._socket.send_multipart(frames, copy=False)
            return request_id

    def _receive(self, timeout_s: float) -> bool:
        """Receive every message that arrives within ``timeout_s`` (at least one, if any) into the
        inbox; False if nothing came."""
        with self._lock:
            if self._socket is None:  # no trusted server: nothing was sent, nothing can arrive
                return False
            if not self._socket.poll(max(0, int(timeout_s * 1000)), zmq.POLLIN):
                return False
            while True:
                try:
                    frames = self._socket.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    return True
                try:
                    event = proto.parse_event(frames)
                except proto.ProtocolError as exc:
                    event = Event(proto.ERROR, None, None, {"code": exc.code, "message": exc.message})
                self._inbox.setdefault(event.id, deque()).append(event)

    def _next(self, request_id: Any, timeout_s: float | None) -> Event:
        """The next event for a request, blocking up to ``timeout_s`` (None: no limit)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            with self._lock:
                queue = self._inbox.get(request_id)
                if queue:
                    return queue.popleft()
                orphan = self._inbox.get(None)  # an error the server could not match to a request id
                if orphan:
                    return orphan.popleft()
            remaining = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
            if remaining <= 0:
                raise BackendError("timeout", f"no answer from {self.endpoint} within {timeout_s:g} s "
                                              f"(is `log3d serve` running on that port?)")
            self._receive(remaining)

    def call(self, kind: str, options: Mapping[str, Any] | None = None, job: str | None = None) -> dict[str, Any]:
        """A quick request (hello, jobs, cancel, train.*, shutdown): its result data."""
        request_id = self.send(kind, options, job=job)
        try:
            event = self._next(request_id, self.timeout_s)
        except BackendError:
            self._reconnect()
            raise
        finally:
            with self._lock:
                self._inbox.pop(request_id, None)
        return _result(event).data

    # -- jobs --------------------------------------------------------------------------------

    def submit(self, kind: str, arrays: Mapping[str, np.ndarray], **options: Any) -> str:
        """Queue a compute job (remesh, encode, decode) or start a training run (train.start) and
        return its job id once the server has accepted it; its events (``accepted`` first) are then
        read with :meth:`poll` or :meth:`wait`."""
        request_id = self.send(kind, options, arrays)
        try:
            event = self._next(request_id, self.timeout_s)
        except BackendError:
            self._reconnect()
            raise
        if event.type == proto.ERROR:
            with self._lock:
                self._inbox.pop(request_id, None)
            raise BackendError(str(event.data.get("code")), str(event.data.get("message")), event.job)
        if event.type != proto.ACCEPTED or event.job is None:
            raise BackendError("bad_message", f"expected 'accepted' for {kind}, got {event.type!r}")
        with self._lock:
            self._job_requests[event.job] = request_id
            self._inbox[request_id].appendleft(event)  # poll() shows the whole stream, accepted first
        return event.job

    def submit_remesh(self, vertices: np.ndarray, faces: np.ndarray, resolution: int = 256, mode: str = "direct",
                      material: np.ndarray | None = None, colors: np.ndarray | None = None, **options: Any) -> str:
        """Queue a remesh; ``material`` (per face [F]) and ``colors`` (per face corner [F, 3, C]) come
        back on the result as its faces' materials and its vertices' colours (docs/protocol.md)."""
        arrays = mesh_arrays(vertices, faces)
        if material is not None:
            arrays["material"] = np.ascontiguousarray(material, dtype="<i4")
        if colors is not None:
            arrays["colors"] = np.ascontiguousarray(colors, dtype="<f4")
        return self.submit("remesh", arrays, resolution=resolution, mode=mode, **options)

    def poll(self, job: str) -> list[Event]:
        """Every event of ``job`` received so far, without blocking (safe to call from a timer)."""
        self._receive(0)
        with self._lock:
            if job not in self._job_requests:
                return []
            queue = self._inbox.get(self._job_requests[job])
            events = list(queue) if queue else []
            if queue:
                queue.clear()
            if any(e.terminal for e in events):
                self.forget(job)
            return events

    def forget(self, job: str) -> None:
        """Drop the bookkeeping of a job whose events are no longer wanted."""
        with self._lock:
            request_id = self._job_requests.pop(job, None)
            queue = self._inbox.get(request_id)
            if queue is not None and not queue:
                self._inbox.pop(request_id, None)

    def wait(self, job: str, on_progress: ProgressCallback | None = None, timeout_s: float | None = None) -> Event:
        """Block until ``job`` ends; returns its result event, raises BackendError for an error or a
        cancellation. ``on_progress(stage, fraction)`` is called for each progress event."""
        request_id = self._job_requests.get(job)
        if request_id is None:
            raise BackendError("not_found", f"this client did not submit job {job!r} (or it already ended)")
        timeout_s = self.job_timeout_s if timeout_s is None else timeout_s
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            event = self._next(request_id, remaining)
            if event.type == proto.PROGRESS and on_progress is not None:
                on_progress(str(event.data.get("stage")), event.data.get("fraction"))
            if event.terminal:
                self.forget(job)
                return _result(event)

    # -- the requests ------------------------------------------------------------------------

    def hello(self) -> dict[str, Any]:
        """Protocol version, server version, device, model and capabilities (modes, limits)."""
        return self.call("hello")

    def remesh(self, vertices: np.ndarray, faces: np.ndarray, resolution: int = 256, mode: str = "direct",
               on_progress: ProgressCallback | None = None, **options: Any) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """Remesh through the server: float32 vertices [V, 3], int32 faces [F, 3] (read-only views of
        the received frames; the first ``2·info["quads"]`` faces are quads, :mod:`model.quad_layout`) and
        the result info (N, timings, block count, job id, and the result's ``material`` per face and
        ``colors`` per vertex when ``material`` / ``colors`` were sent)."""
        job = self.submit_remesh(vertices, faces, resolution, mode, **options)
        event = self.wait(job, on_progress)
        carried = {name: event.arrays[name] for name in ("material", "colors") if name in event.arrays}
        return event.arrays["vertices"], event.arrays["faces"], {**event.data, **carried, "job": job}

    def encode(self, vertices: np.ndarray, faces: np.ndarray, resolution: int = 256,
               on_progress: ProgressCallback | None = None, **options: Any) -> EncodedShape:
        job = self.submit("encode", mesh_arrays(vertices, faces), resolution=resolution, **options)
        event = self.wait(job, on_progress)
        d = event.data
        return EncodedShape(latents=event.arrays["latents"], coords=event.arrays["coords"], resolution=int(d["resolution"]),
                            center=list(d["center"]), scale=float(d["scale"]), info={**d, "job": job})

    def decode(self, latents: np.ndarray, coords: np.ndarray, resolution: int, center: Iterable[float], scale: float,
               on_progress: ProgressCallback | None = None, **options: Any) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        arrays = {"latents": np.ascontiguousarray(latents, dtype="<f4"), "coords": np.ascontiguousarray(coords, dtype="<i4")}
        job = self.submit("decode", arrays, resolution=resolution, center=[float(c) for c in center], scale=float(scale),
                          **options)
        event = self.wait(job, on_progress)
        return event.arrays["vertices"], event.arrays["faces"], {**event.data, "job": job}

    def cancel(self, job: str) -> dict[str, Any]:
        """Cancel a queued or running job (or stop a training run); returns {job, state}."""
        return self.call("cancel", job=job)

    def jobs(self) -> list[dict[str, Any]]:
        return list(self.call("jobs")["jobs"])

    def train_start(self, data: str, **options: Any) -> str:
        """Start a training child process on the cache ``data`` (a name under the server's
        ``--data-root`` folders; hello lists them as ``datasets``) with typed options (``preset``,
        ``max_steps``, ``lr``, ``init``, ``resume``…, docs/protocol.md); returns its job id (its
        step/loss stream comes as progress events)."""
        return self.submit("train.start", {}, data=data, **options)

    def train_status(self, job: str, last: int = 20) -> dict[str, Any]:
        """State, pid, latest step and loss, and the last ``last`` metric rows of a training run."""
        return self.call("train.status", {"last": last}, job=job)

    def train_stop(self, job: str) -> dict[str, Any]:
        return self.call("train.stop", job=job)

    def shutdown(self) -> dict[str, Any]:
        """Stop the server: queued jobs are cancelled, training children stopped."""
        return self.call("shutdown")


def connect_dealer(host: str, port: int, connection_file: Path,
                   context: zmq.Context | None = None) -> tuple[zmq.Socket, str]:
    """A DEALER socket to the server of ``connection_file`` — its ipc socket when it listens on one,
    else ``tcp://host:port`` — that authenticates with the file's keys and accepts only the server
    holding the file's server key (CurveZMQ: what is queued on it leaves only after that server has
    proved the key, encrypted to it); returns it with the endpoint. Raises ``auth.AuthError`` — and
    opens no connection — when the file is missing, unsafe or malformed: a client never talks to a
    server it has not verified."""
    info = auth.read_connection_file(connection_file)
    endpoint = auth.client_endpoint(info, host, port)
    sock = (context or zmq.Context.instance()).socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    auth.secure_client_socket(sock, info)
    sock.connect(endpoint)
    return sock, endpoint


def mesh_arrays(vertices: np.ndarray, faces: np.ndarray) -> dict[str, np.ndarray]:
    """A mesh as the wire wants it: float32 [V, 3] vertices and int32 [F, 3] faces."""
    return {"vertices": np.ascontiguousarray(vertices, dtype="<f4"), "faces": np.ascontiguousarray(faces, dtype="<i4")}


def _result(event: Event) -> Event:
    if event.type == proto.ERROR:
        raise BackendError(str(event.data.get("code", "internal")), str(event.data.get("message", "")), event.job)
    if event.type == proto.CANCELLED:
        raise BackendError("cancelled", f"job {event.job} was cancelled (stage {event.data.get('stage')})", event.job)
    return event
