"""The bookkeeping around a pipeline's stages: their clocks, progress reports and cancellation
points — one for both engines, so callers (CLI, server, Blender add-on) see the same stages
whichever engine runs them.

``sync`` is the engine's barrier (a CUDA synchronisation; nothing on the CPU): device kernels run
asynchronously, so without it a stage's time would land in the next one."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

ProgressCallback = Callable[[str, float], None]
"""Called with (stage name, fraction of that stage done in [0, 1])."""

Report = Callable[[float], None]
"""A stage's own progress: the fraction of it done; checks for cancellation between 0 and 1."""

T = TypeVar("T")


class Cancelled(Exception):
    """The caller asked to stop; raised at the next stage or chunk boundary."""


class Stages:
    """Times stages, forwards progress and polls for cancellation. :meth:`run` returns what the
    stage's work returns, typed, so drivers chain stages without casts."""

    def __init__(self, progress: ProgressCallback | None = None, should_cancel: Callable[[], bool] | None = None,
                 sync: Callable[[], None] | None = None) -> None:
        self.timings: dict[str, float] = {}
        self._progress = progress
        self._should_cancel = should_cancel
        self._sync = sync or (lambda: None)

    def check(self) -> None:
        if self._should_cancel is not None and self._should_cancel():
            raise Cancelled("cancelled by the caller")

    def run(self, name: str, work: Callable[[Report], T]) -> T:
        self.check()
        report = self._reporter(name)
        report(0.0)
        self._sync()
        start = time.perf_counter()
        result = work(report)
        self._sync()
        self.timings[name] = time.perf_counter() - start
        report(1.0)
        return result

    def _reporter(self, name: str) -> Report:
        def report(fraction: float) -> None:
            if self._progress is not None:
                self._progress(name, float(fraction))
            if 0.0 < fraction < 1.0:
                self.check()

        return report


__all__ = ["Cancelled", "ProgressCallback", "Report", "Stages"]
