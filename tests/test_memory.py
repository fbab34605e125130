"""The process memory policy of `log3d` (model.memory): freed arrays are reused without new page
faults, the platform's policy stays available, and the command applies it (a library import does not)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from model.memory import AllocatorPolicy

REPO = Path(__file__).resolve().parents[1]

FAULTS = """
import json, resource, sys
import numpy as np
from model.memory import configure_allocator
applied = configure_allocator()
def faults_of_a_fresh_array():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a = np.ones(16 << 20)  # 128 MiB, every page touched
    del a
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
first, second = faults_of_a_fresh_array(), faults_of_a_fresh_array()
print(json.dumps({"applied": applied, "first": first, "second": second}))
"""


def run_policy(value: str) -> dict:
    done = subprocess.run([sys.executable, "-c", FAULTS], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO), "LOG3D_ALLOCATOR": value})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_a_freed_array_is_reused_without_page_faults_and_the_system_policy_faults_again():
    tuned, system = run_policy("tuned"), run_policy("system")
    pages = (128 << 20) // 4096
    assert tuned["applied"]["keep_freed_memory"] is True and tuned["applied"]["numpy_huge_pages"] is False
    assert tuned["first"] > pages // 600  # the first array is faulted in (huge pages or small)...
    assert tuned["second"] < pages // 50, tuned  # ...the second reuses its pages
    assert "keep_freed_memory" not in system["applied"] and "numpy_huge_pages" not in system["applied"]
    assert system["second"] > pages // 600, system  # munmap'd and faulted in again


def test_the_policy_comes_from_the_environment_and_a_bad_value_is_named(monkeypatch):
    monkeypatch.delenv("LOG3D_ALLOCATOR", raising=False)
    assert AllocatorPolicy.from_env() == AllocatorPolicy(keep_freed_memory=True, huge_pages=False)
    monkeypatch.setenv("LOG3D_ALLOCATOR", "system")
    assert AllocatorPolicy.from_env() == AllocatorPolicy(keep_freed_memory=False, huge_pages=None)
    monkeypatch.setenv("LOG3D_ALLOCATOR", "jemalloc")
    with pytest.raises(ValueError, match="LOG3D_ALLOCATOR must be 'tuned' or 'system', got 'jemalloc'"):
        AllocatorPolicy.from_env()
    done = subprocess.run([sys.executable, "-m", "backend.cli", "info"], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(REPO), "LOG3D_ALLOCATOR": "jemalloc"})
    assert done.returncode == 2 and "LOG3D_ALLOCATOR" in done.stderr


def test_importing_the_library_leaves_the_allocator_alone():
    code = ("import json, numpy as np; import model, model.pipeline, backend.server; "
            "print(json.dumps(bool(np.core.multiarray._get_madvise_hugepage())))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    default = subprocess.run([sys.executable, "-c", "import numpy as np; print(bool(np.core.multiarray._get_madvise_hugepage()))"],
                             capture_output=True, text=True, timeout=60)
    assert done.stdout.strip().lower() == default.stdout.strip().lower()
