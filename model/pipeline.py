"""mesh → UDF → UBlocks → (encode → decode) → Pad-Average → ε-surface → mesh.

The one entry point that the CLI, the server, the benchmarks and the tests share, so that every
caller runs exactly the same stages, reports progress the same way and can be cancelled between
any two of them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from .extract import extract_surface
from .grid import SparseField, check_resolution, iso_level, unit_margin
from .mesh import Mesh, MeshError, fit_unit_cube, used_vertices, validate_arrays
from .udf import compute_udf
from .ublocks import UBlocks, active_indices, iter_ublocks, pad_average

MODES = ("direct", "vae")

ProgressCallback = Callable[[str, float], None]
"""Called with (stage name, fraction of that stage done in [0, 1])."""


class Cancelled(Exception):
    """The caller asked to stop; raised at the next stage or chunk boundary."""


class ModeUnavailable(RuntimeError):
    """A remesh mode that this installation cannot run (e.g. no trained weights)."""


@dataclass
class RemeshOptions:
    """What to do with a mesh. ``direct`` skips the network (exact UDF blocks straight to
    Pad-Average); ``vae`` round-trips the blocks through the LoG-VAE."""

    resolution: int = 256
    mode: str = "direct"
    chunk_blocks: int = 16384
    device: str = "auto"
    checkpoint: str | None = None

    def validate(self) -> "RemeshOptions":
        check_resolution(self.resolution)
        if self.mode not in MODES:
            raise ValueError(f"unknown mode '{self.mode}' (choose from: {', '.join(MODES)})")
        if self.chunk_blocks <= 0:
            raise ValueError(f"chunk_blocks must be positive, got {self.chunk_blocks}")
        return self


@dataclass
class RemeshResult:
    mesh: Mesh
    timings: dict[str, float] = field(default_factory=dict)
    num_blocks: int = 0


class _Stages:
    """Times stages, forwards progress and polls for cancellation."""

    def __init__(self, progress: ProgressCallback | None, should_cancel: Callable[[], bool] | None) -> None:
        self.timings: dict[str, float] = {}
        self._progress = progress
        self._should_cancel = should_cancel

    def check(self) -> None:
        if self._should_cancel is not None and self._should_cancel():
            raise Cancelled("cancelled by the caller")

    def run(self, name: str, work: Callable[[Callable[[float], None]], object]) -> object:
        self.check()
        report = self._reporter(name)
        report(0.0)
        start = time.perf_counter()
        result = work(report)
        self.timings[name] = time.perf_counter() - start
        report(1.0)
        return result

    def _reporter(self, name: str) -> Callable[[float], None]:
        def report(fraction: float) -> None:
            if self._progress is not None:
                self._progress(name, float(fraction))
            if 0.0 < fraction < 1.0:
                self.check()

        return report


def mesh_to_field(mesh: Mesh, resolution: int, stages: _Stages | None = None) -> tuple[SparseField, "object"]:
    """Normalise a mesh into the unit cube and compute its narrow-band UDF blocks.

    Returns the field and the :class:`~model.mesh.Normalization` that maps results back.
    """
    stages = stages or _Stages(None, None)
    n = check_resolution(resolution)
    normalization = fit_unit_cube(used_vertices(mesh), unit_margin(n))
    unit_vertices = normalization.to_unit(mesh.vertices)
    field_ = stages.run("udf", lambda report: compute_udf(unit_vertices, mesh.faces, n, report))
    return field_, normalization  # type: ignore[return-value]


def _timed(chunks: Iterator[UBlocks], stage: str, stages: _Stages) -> Iterator[UBlocks]:
    """Yield chunks while booking the time spent producing them under ``stage`` (they are consumed
    lazily inside Pad-Average, so the two stages interleave)."""
    while True:
        stages.check()
        start = time.perf_counter()
        chunk = next(chunks, None)
        stages.timings[stage] = stages.timings.get(stage, 0.0) + time.perf_counter() - start
        if chunk is None:
            return
        yield chunk


def remesh(mesh: Mesh, options: RemeshOptions | None = None, progress: ProgressCallback | None = None,
           should_cancel: Callable[[], bool] | None = None) -> RemeshResult:
    """Remesh through the LoG3D representation at N³ and return the ε-surface in the input's frame."""
    options = (options or RemeshOptions()).validate()
    mesh = validate_arrays(mesh.vertices, mesh.faces)
    stages = _Stages(progress, should_cancel)
    field_, normalization = mesh_to_field(mesh, options.resolution, stages)
    coords = field_.coords[active_indices(field_)]
    if coords.shape[0] == 0:
        raise MeshError("the mesh produced no active UBlocks")

    if options.mode == "direct":
        chunks: Iterator[UBlocks] = _timed(iter_ublocks(field_, options.chunk_blocks), "ublocks", stages)
    else:
        from .autoencode import autoencode_chunks  # the network is only imported when it is used

        chunks = _timed(autoencode_chunks(field_, options), "vae", stages)
    assembled = stages.run("pad_average", lambda report: pad_average(chunks, options.resolution, coords, report))
    for producer in ("ublocks", "vae"):
        stages.timings["pad_average"] -= stages.timings.get(producer, 0.0)
    del field_
    unit_vertices, faces = stages.run("extract", lambda report: extract_surface(assembled, iso_level(), report))  # type: ignore[misc]
    if faces.shape[0] == 0:
        raise MeshError(f"the ε-surface at N={options.resolution} is empty")
    out = Mesh(vertices=normalization.from_unit(unit_vertices), faces=faces)
    return RemeshResult(mesh=out, timings=stages.timings, num_blocks=int(coords.shape[0]))
