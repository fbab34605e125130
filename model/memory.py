"""How a LoG3D process gets its memory from the system: freed arrays reused, small pages.

A remesh at N = 1024 allocates and frees gigabytes of short-lived numpy and numba arrays (the
contour's crossings, cells, faces; the clean-up's edge tables). By default glibc serves each block
over 128 KiB with a fresh ``mmap`` and returns it with ``munmap`` when freed, so every array is
faulted in page by page again; numpy also asks for transparent huge pages on arrays over 4 MiB.
Measured on this project's 2-core machine (a virtual machine, where first touches are dear):
spot at 1024 spent 5.4 s of system time against 6.5 s of computation, the Stanford bunny and the
armchair 16–17 s against 10 s (docs/architecture.md, "Memory"). The policy here:

* ``keep_freed_memory``: large blocks come from the heap (``M_MMAP_MAX`` 0) and the heap is never
  trimmed on ``free`` (``M_TRIM_THRESHOLD`` −1), so a freed array's pages are reused by the next one
  without a fault. The cost is a higher peak (about 13 % at 1024: freed space in the middle of the
  heap is reused but not returned) and memory kept until the process ends or calls
  :func:`release_free_memory` (the server does after every job).
* ``huge_pages``: numpy's ``madvise(MADV_HUGEPAGE)``. Off by default: on the measuring machine each
  huge-page fault cost more than the 512 small ones it replaces (remesh wall time 5.2–10.5 s with it,
  3.8 s without, same arithmetic).

Only entry points apply it (the ``log3d`` command and the processes it starts: the server, batch,
training), never an import: a library must not change its host's allocator. glibc only; elsewhere
(macOS, Windows, musl) it does nothing and says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform
from dataclasses import dataclass

# mallopt(3) parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

ENV = "LOG3D_ALLOCATOR"
"""``system`` leaves the allocator as the platform has it (to compare, or where memory is tight)."""


@dataclass(frozen=True)
class AllocatorPolicy:
    keep_freed_memory: bool = True
    huge_pages: bool | None = False
    """numpy's huge-page advice on large arrays; None leaves numpy's own default."""

    @classmethod
    def from_env(cls) -> "AllocatorPolicy":
        """The default policy, or the system's own with ``LOG3D_ALLOCATOR=system``."""
        value = os.environ.get(ENV, "").strip().lower()
        if value in ("", "tuned"):
            return cls()
        if value == "system":
            return cls(keep_freed_memory=False, huge_pages=None)
        raise ValueError(f"{ENV} must be 'tuned' or 'system', got {value!r}")


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """glibc, looked up once (the server trims after every job)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def _set_numpy_huge_pages(enabled: bool) -> bool:
    """numpy's switch (what ``NUMPY_MADVISE_HUGEPAGE`` sets at import); False where it has none."""
    import numpy as np

    for module in ("_core", "core"):
        setter = getattr(getattr(getattr(np, module, None), "multiarray", None), "_set_madvise_hugepage", None)
        if setter is not None:
            setter(enabled)
            return True
    return False


def configure_allocator(policy: AllocatorPolicy | None = None) -> dict[str, object]:
    """Apply ``policy`` (default: ``AllocatorPolicy.from_env()``) to this process; returns what was
    applied, for logs and benchmarks."""
    policy = policy or AllocatorPolicy.from_env()
    applied: dict[str, object] = {"policy": policy.__dict__.copy(), "glibc": False}
    libc = _glibc()
    if libc is not None:
        applied["glibc"] = True
        if policy.keep_freed_memory:
            applied["keep_freed_memory"] = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, -1))
    if policy.huge_pages is not None:
        applied["numpy_huge_pages"] = policy.huge_pages if _set_numpy_huge_pages(policy.huge_pages) else "unknown"
    return applied


def release_free_memory() -> None:
    """Give the heap's free pages back to the system (glibc's ``malloc_trim``): a long-lived process
    (the server) calls it between jobs so that an idle server does not hold a finished job's memory."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


__all__ = ["ENV", "AllocatorPolicy", "configure_allocator", "release_free_memory"]
