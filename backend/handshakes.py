"""Connections that have not finished the CURVE handshake, bounded in time and in number.

On the TCP transport any local user can open connections to the server's port without a key (on
ipc, the default on Linux and macOS, no other user can connect at all: backend/listen.py). Each one holds a file
descriptor until its handshake ends, and libzmq gives an idle one 30 s by default: 1,106 of them
once filled the server's 1,024 descriptors, libzmq's accept then failed in a busy loop (14 s of CPU),
and keyed clients waited about 17 s for an answer (issue 29). The bounds:

* **Time.** ``ZMQ_HANDSHAKE_IVL`` = the server's ``handshake_timeout_s`` (1 s): a peer that has not
  completed the handshake by then is dropped. A keyed client completes it in milliseconds.
* **Number.** Open pre-handshake connections are at most what the server accepts within one
  handshake timeout (libzmq accepts one connection at a time in its I/O thread, behind a listen
  backlog of 100): ``bench/bench_flood.py`` measures both the rate and the count under a flood.
  At bind the soft ``RLIMIT_NOFILE`` is raised to the hard limit (at most 65,536), so that bound sits
  far below the descriptor table and accept never spins on a full one.
* **Seen.** A socket monitor counts the open connections (the monitor names each by its descriptor)
  and the handshakes completed and refused; a crowd of them is logged, and ``hello`` reports the
  counts (``connections``).

Why not a hard cap that stops accepting: libzmq can neither refuse one connection nor pause its
listener, and ``zmq_unbind`` drops every connection accepted on the endpoint — the authenticated
clients' too, with their running jobs' events — so an attacker could use such a cap to cut off the
user's own clients at will. The time bound drops only the idle.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import zmq
from zmq.utils.monitor import recv_monitor_message

log = logging.getLogger("log3d.server")

MONITORED = (zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED
             | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH)


def raise_descriptor_limit(ceiling: int = 65536) -> tuple[int, int]:
    """Raise the soft limit on open files to the hard limit (at most ``ceiling``); returns (before,
    after). A no-op where the platform has no such limit (Windows)."""
    try:
        import resource
    except ImportError:
        return (0, 0)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = ceiling if hard == resource.RLIM_INFINITY else min(hard, ceiling)
    if want > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):
            return (soft, soft)
        return (soft, want)
    return (soft, soft)


def descriptor_limit() -> int:
    try:
        import resource
    except ImportError:
        return 1 << 16
    return int(resource.getrlimit(resource.RLIMIT_NOFILE)[0])


@dataclass
class ConnectionCounts:
    open: int = 0
    """Connections accepted and not yet gone (authenticated or not)."""
    accepted: int = 0
    handshakes: int = 0
    """Handshakes completed: peers holding the key."""
    refused: int = 0
    """Handshakes that failed or timed out."""
    descriptor_limit: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class ConnectionWatch:
    """Follows ``router``'s connections through a monitor socket (``monitor``: the caller polls it
    and calls ``drain``) and logs a crowd of them once, when it reaches ``warn_open``."""

    def __init__(self, router: zmq.Socket, warn_open: int | None = None) -> None:
        self.monitor = router.get_monitor_socket(MONITORED)
        self._router = router
        self._open: set[int] = set()
        self.counts = ConnectionCounts(descriptor_limit=descriptor_limit())
        self.warn_open = warn_open or max(64, self.counts.descriptor_limit // 8)
        self._crowded = False

    def drain(self) -> None:
        """Read every monitor event that has arrived."""
        while True:
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                break
            kind = event["event"]
            if kind == zmq.EVENT_ACCEPTED:
                self._open.add(int(event["value"]))
                self.counts.accepted += 1
            elif kind == zmq.EVENT_DISCONNECTED:
                self._open.discard(int(event["value"]))
            elif kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.counts.handshakes += 1
            else:
                self.counts.refused += 1
        self.counts.open = len(self._open)
        crowded = self.counts.open >= self.warn_open
        if crowded and not self._crowded:
            log.warning("%d connections open, most of them without a key: each is dropped if its handshake is not "
                        "done within %.1f s", self.counts.open, self._router.getsockopt(zmq.HANDSHAKE_IVL) / 1000.0)
        elif self._crowded and self.counts.open <= self.warn_open // 2:
            log.warning("back to %d open connections (%d handshakes refused so far)", self.counts.open, self.counts.refused)
        self._crowded = crowded

    def close(self) -> None:
        try:
            self._router.disable_monitor()
        except zmq.ZMQError:
            pass
        self.monitor.close(linger=0)
