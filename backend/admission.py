"""Whether a compute job fits in memory, decided before it is queued.

A job that cannot fit must be refused at once with a message that says why, not admitted to die
(or to push the machine into swap) minutes later. The estimate is coarse on purpose: it reads only
the request (surface area, resolution, chunk size, mode), costs microseconds, and errs towards
admitting; what it reliably catches is the request that is off by orders of magnitude (a
``chunk_blocks`` of a million through the network, a 2048³ job on a small machine).

Model (bytes), with A the input's area in voxel² at resolution N (the mesh scaled so its longest
side spans the grid, as the pipeline does):

* active blocks L ≈ A / 32 (the 8-voxel band around the surface, 8³ voxels a block, overlap ×2),
  capped by the grid's (N/8)³ blocks;
* the sparse field and its index: ≈ 3 KiB per block;
* the blocks of one chunk in flight: 12³ float32 × 3 buffers (direct), or ≈ 400 KiB per block for
  the network's activations (vae, fp32 on a CPU; less under autocast on a GPU);
* the extracted surface: ≈ 4 triangles per voxel² of area (the ε-surface is two-sided), ≈ 40 bytes
  a triangle with its vertices;
* the input arrays themselves.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

FIELD_BYTES_PER_BLOCK = 3 * 1024
DIRECT_CHUNK_BYTES_PER_BLOCK = 12**3 * 4 * 3
VAE_CHUNK_BYTES_PER_BLOCK = 400 * 1024
BYTES_PER_OUTPUT_TRIANGLE = 40
HEADROOM = 0.9  # of the memory available when the job is admitted


@dataclass(frozen=True)
class Estimate:
    blocks: int
    bytes: int

    def describe(self) -> str:
        return f"about {self.blocks:,} active blocks and {self.bytes / 2**30:.1f} GiB"


SAMPLED_FACES = 65_536


def surface_area(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Total triangle area of the mesh, in units of its longest bounding-box side squared; from an
    even sample of at most 65,536 faces, scaled up (an estimate needs no more, and the I/O thread
    computes it for every request)."""
    v = np.asarray(vertices, dtype=np.float32)
    extent = float((v.max(axis=0) - v.min(axis=0)).max()) if len(v) else 0.0
    if extent <= 0.0 or not np.isfinite(extent):
        return 0.0
    f = np.asarray(faces)
    step = max(1, len(f) // SAMPLED_FACES)
    tri = v[f[::step]].astype(np.float64) / extent
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1).sum()
    return float(area * len(f) / max(1, len(tri)))


def estimate_job(area_unit: float, resolution: int, chunk_blocks: int, mode: str, input_bytes: int) -> Estimate:
    """Peak memory of one remesh / encode job (see the module docstring for the model)."""
    area_vox = area_unit * resolution**2
    grid_blocks = (resolution // 8) ** 3
    blocks = int(min(grid_blocks, max(1.0, area_vox / 32.0)))
    per_block = VAE_CHUNK_BYTES_PER_BLOCK if mode == "vae" else DIRECT_CHUNK_BYTES_PER_BLOCK
    total = (blocks * FIELD_BYTES_PER_BLOCK + min(chunk_blocks, blocks) * per_block
             + int(4 * area_vox) * BYTES_PER_OUTPUT_TRIANGLE + input_bytes)
    return Estimate(blocks=blocks, bytes=int(total))


def estimate_decode(num_blocks: int, chunk_blocks: int, input_bytes: int) -> Estimate:
    """Peak memory of a decode job: the latents' blocks through the decoder, then extraction (a
    block holds at most a few voxel² of surface: 16 triangles a block is generous)."""
    total = (num_blocks * FIELD_BYTES_PER_BLOCK + min(chunk_blocks, num_blocks) * VAE_CHUNK_BYTES_PER_BLOCK
             + num_blocks * 64 * 16 * BYTES_PER_OUTPUT_TRIANGLE // 16 + input_bytes)
    return Estimate(blocks=num_blocks, bytes=int(total))


def available_bytes() -> int | None:
    """Memory the system can give without swapping (Linux: MemAvailable); None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(estimate: Estimate, reserved_bytes: int = 0, available: int | None = None) -> str | None:
    """None if the job fits next to ``reserved_bytes`` (jobs admitted before it), else why not."""
    free = available_bytes() if available is None else available
    if free is None:
        return None
    budget = int(HEADROOM * free) - reserved_bytes
    if estimate.bytes <= budget:
        return None
    return (f"the job needs {estimate.describe()} of memory; {max(budget, 0) / 2**30:.1f} GiB is free for it "
            f"({free / 2**30:.1f} GiB available, {reserved_bytes / 2**30:.1f} GiB held by jobs ahead of it): "
            "lower the resolution or chunk_blocks")
