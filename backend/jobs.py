"""Job bookkeeping for `log3d serve`: the compute queue, progress throttling, and training runs.

Kept apart from the socket code so the rules (one compute job at a time, FIFO, cancellation of
queued and running jobs, a bounded history, child-process training) can be read and tested without
ZeroMQ. The I/O thread and the worker thread share a :class:`JobQueue`; every method takes its lock.
"""

from __future__ import annotations

import csv
import io
import itertools
import os
import secrets
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINAL_STATES = (DONE, FAILED, CANCELLED)


class QueueFull(Exception):
    """More compute jobs are waiting than the server's limit allows."""


class JobIds:
    """Job ids unique across server restarts (a random instance prefix), so a stale id kept by a
    client never names a new job."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(3)
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    def next(self, kind: str) -> str:
        with self._lock:
            return f"{kind}-{self._prefix}-{next(self._counter)}"


@dataclass(eq=False)
class Job:
    """A compute request (remesh / encode / decode) from a client, and what became of it."""

    id: str
    type: str
    owner: bytes  # the ROUTER routing identity of the client that submitted it
    request_id: Any
    options: dict[str, Any]
    arrays: dict[str, np.ndarray] | None
    state: str = QUEUED
    stage: str | None = None
    fraction: float = 0.0
    error: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    cancel_requested: threading.Event = field(default_factory=threading.Event)

    @property
    def nbytes(self) -> int:
        """What the job holds in memory while it waits: its input arrays."""
        return sum(int(a.nbytes) for a in (self.arrays or {}).values())

    def summary(self) -> dict[str, Any]:
        return {"job": self.id, "type": self.type, "state": self.state, "stage": self.stage,
                "fraction": round(self.fraction, 4), "error": self.error, "created": self.created,
                "started": self.started, "finished": self.finished,
                "options": {k: v for k, v in self.options.items()}}


class JobQueue:
    """Compute jobs for one worker, fair between clients: each client may hold at most
    ``max_per_client`` queued jobs and ``max_bytes_per_client`` bytes of queued input, and the worker
    takes the oldest job of the client served least recently, so one client's flood delays
    another's job by at most one job per flooding client. Plus the running job and the last
    ``max_history`` finished ones."""

    def __init__(self, max_queued: int = 32, max_history: int = 100, max_per_client: int = 8,
                 max_bytes_per_client: int = 4 << 30) -> None:
        self._max_queued = max_queued
        self._max_per_client = max_per_client
        self._max_bytes_per_client = max_bytes_per_client
        self._queued: deque[Job] = deque()
        self._running: Job | None = None
        self._history: deque[Job] = deque(maxlen=max_history)
        self._served: dict[bytes, int] = {}
        self._turn = 0
        self._cond = threading.Condition()

    def submit(self, job: Job) -> int:
        """Queue a job; returns its position (0: it starts as soon as the worker is free of others)."""
        with self._cond:
            if len(self._queued) >= self._max_queued:
                raise QueueFull(f"{len(self._queued)} jobs are already waiting (limit {self._max_queued})")
            mine = [j for j in self._queued if j.owner == job.owner]
            if len(mine) >= self._max_per_client:
                raise QueueFull(f"this client already has {len(mine)} jobs waiting (limit {self._max_per_client} "
                                "per client); wait for one to finish")
            held = sum(j.nbytes for j in mine)
            if held + job.nbytes > self._max_bytes_per_client:
                raise QueueFull(f"this client's waiting jobs would hold {(held + job.nbytes) / 2**20:.0f} MiB of input "
                                f"(limit {self._max_bytes_per_client / 2**20:.0f} MiB per client)")
            self._queued.append(job)
            self._cond.notify()
            return self._position(job)

    def next(self, timeout_s: float) -> Job | None:
        """The next job (fair between clients), now marked running; ``None`` if none came in time."""
        with self._cond:
            if not self._queued:
                self._cond.wait(timeout_s)
            if not self._queued:
                return None
            job = self._pick(self._queued, self._served)
            self._queued.remove(job)
            self._turn += 1
            self._served[job.owner] = self._turn
            if len(self._served) > 4096:  # forget long-gone clients
                for owner in sorted(self._served, key=self._served.__getitem__)[:2048]:
                    del self._served[owner]
            job.state, job.started = RUNNING, time.time()
            self._running = job
            return job

    @staticmethod
    def _pick(queued: list[Job], served: dict[bytes, int]) -> Job:
        """The fair choice: the oldest job of the client served least recently."""
        return min(queued, key=lambda j: served.get(j.owner, -1))

    def _position(self, job: Job) -> int:
        """How many jobs run before ``job`` under the fair schedule if no other job arrives (the
        running one included): the scheduler played forward, not the job's place in arrival order."""
        queued, served, turn = list(self._queued), dict(self._served), self._turn
        ahead = 1 if self._running is not None else 0
        while queued:
            nxt = self._pick(queued, served)
            if nxt is job:
                return ahead
            queued.remove(nxt)
            turn += 1
            served[nxt.owner] = turn
            ahead += 1
        return ahead

    def progress(self, job: Job, stage: str, fraction: float) -> None:
        with self._cond:
            job.stage, job.fraction = stage, fraction

    def finish(self, job: Job, state: str, error: str | None = None) -> None:
        """Record the end of a job and drop its input arrays (the only large thing it holds)."""
        assert state in FINAL_STATES
        with self._cond:
            job.state, job.error, job.finished, job.arrays = state, error, time.time(), None
            if self._running is job:
                self._running = None
            if job in self._queued:
                self._queued.remove(job)
            self._history.append(job)

    def cancel(self, job_id: str) -> tuple[Job | None, str]:
        """Cancel a job: a queued one is removed at once (``dequeued``; its state is now
        ``cancelled``); a running one is flagged and stops at its next stage boundary
        (``cancelling``); a finished one is left as it is (its final state is returned).
        Returns the job (``None`` if unknown) and that outcome."""
        with self._cond:
            job = self._find(job_id)
            if job is None:
                return None, "unknown"
            if job.state == QUEUED:
                self._queued.remove(job)
                job.cancel_requested.set()
                job.state, job.finished, job.arrays = CANCELLED, time.time(), None
                self._history.append(job)
                return job, "dequeued"
            if job.state == RUNNING:
                job.cancel_requested.set()
                return job, "cancelling"
            return job, job.state

    def drain(self) -> list[Job]:
        """Remove and cancel every queued job (server shutdown); flag the running one."""
        with self._cond:
            drained = list(self._queued)
            self._queued.clear()
            for job in drained:
                job.cancel_requested.set()
                job.state, job.finished, job.arrays = CANCELLED, time.time(), None
                self._history.append(job)
            if self._running is not None:
                self._running.cancel_requested.set()
            return drained

    def get(self, job_id: str) -> Job | None:
        with self._cond:
            return self._find(job_id)

    def queued_bytes(self) -> int:
        """Input bytes held by the jobs waiting to run."""
        with self._cond:
            return sum(j.nbytes for j in self._queued)

    def counts(self) -> dict[str, int]:
        with self._cond:
            return {"queued": len(self._queued), "running": int(self._running is not None)}

    def summaries(self, owner: bytes | None = None) -> list[dict[str, Any]]:
        """Every job, or only ``owner``'s (what a client may see)."""
        with self._cond:
            jobs = list(self._history) + ([self._running] if self._running else []) + list(self._queued)
            out = []
            for job in jobs:
                if owner is not None and job.owner != owner:
                    continue
                s = job.summary()
                if job.state == QUEUED:
                    s["queue_position"] = self._position(job)
                out.append(s)
            return out

    def _find(self, job_id: str) -> Job | None:
        if self._running is not None and self._running.id == job_id:
            return self._running
        for job in itertools.chain(self._queued, self._history):
            if job.id == job_id:
                return job
        return None


class ProgressThrottle:
    """Lets a progress report through when the stage changes, a stage completes, or at most once
    per ``interval_s`` otherwise: clients see every stage without a flood of messages."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval_s
        self._clock = clock
        self._stage: str | None = None
        self._last = -float("inf")
        self._last_fraction = -1.0

    def allow(self, stage: str, fraction: float) -> bool:
        now = self._clock()
        if stage != self._stage or (fraction >= 1.0 > self._last_fraction) or now - self._last >= self._interval:
            self._stage, self._last, self._last_fraction = stage, now, fraction
            return True
        return False


# ----------------------------------------------------------------------------------------------
# Training runs (child processes)
# ----------------------------------------------------------------------------------------------


class MetricsReader:
    """Reads RUN_DIR/metrics.csv incrementally as a trainer appends to it.

    The file is a header row then one row per logged step, with at least ``step`` and ``loss``.
    Only complete lines are consumed, so a row being written is picked up on the next poll.
    """

    def __init__(self, path: Path, keep: int = 10_000) -> None:
        self.path = path
        self._offset = 0
        self._columns: list[str] | None = None
        self.rows: deque[dict[str, float]] = deque(maxlen=keep)

    def poll(self) -> list[dict[str, float]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        end = chunk.rfind(b"\n")
        if end < 0:
            return []
        self._offset += end + 1
        new: list[dict[str, float]] = []
        for record in csv.reader(io.StringIO(chunk[: end + 1].decode("utf-8", errors="replace"))):
            if not record:
                continue
            if self._columns is None:
                self._columns = [c.strip() for c in record]
                continue
            row = self._parse(record)
            if row is not None:
                new.append(row)
        self.rows.extend(new)
        return new

    def _parse(self, record: Sequence[str]) -> dict[str, float] | None:
        assert self._columns is not None
        row: dict[str, float] = {}
        for name, text in zip(self._columns, record):
            try:
                row[name] = float(text)
            except ValueError:
                continue
        if "step" not in row or "loss" not in row:
            return None
        row["step"] = int(row["step"])
        return row


@dataclass(eq=False)
class TrainRun:
    """A training job: a child process writing RUN_DIR/metrics.csv, and its owner for events."""

    id: str
    owner: bytes
    request_id: Any
    run_dir: Path
    command: list[str]
    process: subprocess.Popen
    metrics: MetricsReader
    log_path: Path
    state: str = RUNNING
    started: float = field(default_factory=time.time)
    finished: float | None = None
    stop_requested_at: float | None = None

    @classmethod
    def start(cls, job_id: str, owner: bytes, request_id: Any, command: Sequence[str], run_dir: Path) -> "TrainRun":
        """Spawn ``command`` (the server built it, ``server.training_command``) with its output
        appended to RUN_DIR/train.log, opened without following a symlink placed at that name.

        The child gets its own process group (POSIX) so stopping it also stops any workers it spawned.
        """
        log_path = run_dir / "train.log"
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "ab") as log:
            kwargs: dict[str, Any] = {"start_new_session": True} if os.name == "posix" else {
                "creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)}
            process = subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       **kwargs)
        return cls(id=job_id, owner=owner, request_id=request_id, run_dir=run_dir, command=list(command),
                   process=process, metrics=MetricsReader(run_dir / "metrics.csv"), log_path=log_path)

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def poll(self, kill_after_s: float) -> tuple[list[dict[str, float]], bool]:
        """New metric rows, and whether the run has just ended (its final state is then set).
        Escalates a stop that the child ignores to a kill after ``kill_after_s``."""
        rows = self.metrics.poll()
        if self.state not in FINAL_STATES and self.process.poll() is None:
            if self.stop_requested_at is not None and time.time() - self.stop_requested_at > kill_after_s:
                self._signal(kill=True)
            return rows, False
        if self.state in FINAL_STATES:
            return rows, False
        rows += self.metrics.poll()
        code = self.process.returncode
        self.state = CANCELLED if self.stop_requested_at is not None else (DONE if code == 0 else FAILED)
        self.finished = time.time()
        return rows, True

    def stop(self, wait_s: float = 0.5) -> None:
        """Ask the child to stop (SIGTERM to its group) and wait briefly; :meth:`poll` kills it
        later if it does not go."""
        if self.process.poll() is not None:
            return
        if self.stop_requested_at is None:
            self.stop_requested_at = time.time()
        self._signal(kill=False)
        try:
            self.process.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            pass

    def kill(self) -> None:
        if self.process.poll() is None:
            self._signal(kill=True)
            try:
                self.process.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                pass

    def _signal(self, kill: bool) -> None:
        try:
            if os.name == "posix":
                os.killpg(self.process.pid, signal.SIGKILL if kill else signal.SIGTERM)
            elif kill:
                self.process.kill()
            else:
                self.process.terminate()
        except (ProcessLookupError, PermissionError):
            pass

    def last(self) -> dict[str, float] | None:
        return self.metrics.rows[-1] if self.metrics.rows else None

    def log_tail(self, chars: int = 2000) -> str:
        try:
            fd = os.open(self.log_path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            return ""
        with os.fdopen(fd, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - 4 * chars))
            return f.read().decode("utf-8", errors="replace")[-chars:]

    def status(self, last: int = 20) -> dict[str, Any]:
        latest = self.last()
        rows = list(self.metrics.rows)[-last:] if last else []
        return {"job": self.id, "type": "train", "state": self.state, "pid": self.process.pid,
                "returncode": self.returncode, "run_dir": str(self.run_dir),
                "step": None if latest is None else latest["step"], "loss": None if latest is None else latest["loss"],
                "rows": rows, "started": self.started, "finished": self.finished,
                "elapsed_s": round((self.finished or time.time()) - self.started, 3)}
