"""What this CPU is and which precision trains fastest on it.

Machines of one "kind" differ: an Intel Xeon with AMX or AVX512-BF16 runs bf16 matrix products in
hardware, an AMD EPYC with AVX2 only emulates them through oneDNN (sometimes faster than fp32
because the reordered kernels are better, sometimes slower). Nothing here assumes: the flags are
recorded for the benchmark tables. The trainer decides from the flags (``default_cpu_precision``),
which give the same answer on every run of a machine; ``choose_cpu_precision`` times both for
benchmarks, where a choice that varies with the load does no harm.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable

BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile", "avx512f", "avx2", "avx_vnni")


def _cpuinfo() -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if ":" in line:
                k, v = line.split(":", 1)
                out.setdefault(k.strip(), v.strip())
    except OSError:
        pass
    return out


def cpu_features() -> dict[str, Any]:
    """Model name, core count and the instruction-set flags that decide bf16 speed."""
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    return {
        "model": info.get("model name") or platform.processor() or platform.machine(),
        "vendor": info.get("vendor_id", ""),
        "cores": os.cpu_count() or 1,
        "flags": {f: f in flags for f in BF16_FLAGS},
    }


def autocast_context(device_type: str, precision: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for fp16/bf16, a no-op for fp32/no."""
    import torch

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    return torch.autocast(device_type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def bf16_works_on_cpu() -> bool:
    """True when a bf16 autocast matmul runs here and gives a sane result (old torch builds or
    exotic CPUs may raise or return garbage)."""
    import torch

    try:
        a = torch.randn(64, 64)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            c = a @ a.T
        ref = a @ a.T
        return bool(c.dtype == torch.bfloat16 and torch.allclose(c.float(), ref, rtol=5e-2, atol=0.5))
    except Exception:
        return False


def default_cpu_precision() -> tuple[str, str]:
    """("bf16" or "no", why): bf16 where the CPU multiplies bf16 matrices in hardware (AMX bf16
    tiles) and a bf16 matmul checks out here, fp32 otherwise (an AVX2-only CPU emulates bf16, up to
    18× slower). A property of the machine, so the same training command chooses the same
    precision on every run of it."""
    flags = cpu_features()["flags"]
    if not flags.get("amx_bf16"):
        return "no", "no AMX bf16 on this CPU"
    if not bf16_works_on_cpu():
        return "no", "AMX bf16 present but a bf16 matmul failed its check"
    return "bf16", "AMX bf16 on this CPU"


def choose_cpu_precision(step: Callable[[str], None], repeats: int = 2,
                         log: Callable[[str], None] | None = None) -> tuple[str, dict[str, float]]:
    """Time ``step(precision)`` (one forward + backward, no optimiser update) for fp32 and, where it
    works, bf16; return the faster ("no" or "bf16") and the seconds each took (best of ``repeats``
    after one warm-up). bf16 must win by 5% to be chosen: its rounding is a cost, paid only for speed."""
    timings: dict[str, float] = {}
    candidates = ["no"] + (["bf16"] if bf16_works_on_cpu() else [])
    for precision in candidates:
        t0 = time.perf_counter()
        step(precision)  # warm-up: oneDNN primitive creation, allocator
        warm = time.perf_counter() - t0
        if "no" in timings and warm > 3.0 * timings["no"]:
            timings[precision] = warm  # far slower even counting one-off costs: not worth repeating
            continue
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            step(precision)
            best = min(best, time.perf_counter() - t0)
        timings[precision] = best
    choice = "bf16" if "bf16" in timings and timings["bf16"] < 0.95 * timings["no"] else "no"
    if log is not None:
        log("cpu precision probe: " + ", ".join(f"{k} {v:.2f} s/step" for k, v in timings.items()) + f" -> {choice}")
    return choice, timings
