"""The whole remesh on one torch device: the twin of :func:`model.pipeline.remesh`.

Why a second driver rather than swapping stages into the numba one: the numba driver hands numpy
arrays from stage to stage, so plugging a CUDA stage into it would copy every intermediate to the
host and back. Here each stage consumes the previous stage's device tensors directly:

    compute_udf_torch   → TorchField (+ the input's candidate triangles in direct mode)
    iter_ublocks_torch  → padded blocks [l, 12³] and their coordinates, a chunk at a time
    (vae) encode_tensors / decode_tensors → latents [L, 16] → decoded blocks [L, 12³]
    PadAverageTorch     → TorchField of the averaged blocks

and the averaged field is copied to the host, where the extraction that stays whole runs
(:func:`model.pipeline._extract_direct` / ``_extract_field``: dual contouring of open sheets, the
outside flood of decoded fields). ``marching_cubes_torch`` and ``clean_surface_torch`` remain,
tested against the numba kernels, for the unified pipeline to bring the extraction onto the device. The stage names, their order, the
progress reports and the cancellation points are the numba driver's, so callers (CLI, server,
Blender add-on) cannot tell the engines apart except by speed.

On CUDA every stage ends with a device synchronisation before its clock is read, so the timings
are the stages' own rather than their kernel launches; the peak of allocated device memory over
the whole run is reported in :attr:`RemeshResult.peak_gpu_bytes`.
"""

from __future__ import annotations

import time
from typing import Callable, Iterator, TypeVar

import numpy as np
import torch

from ..grid import PADDED_SIZE, SparseField, unit_margin, unit_to_voxel, voxel_to_unit
from ..mesh import Mesh, MeshError, fit_unit_cube, used_vertices, validate_arrays
from ..pipeline import RemeshOptions, RemeshResult, extract_surface, network_for
from ..stages import ProgressCallback, Report, Stages
from .blocks import PadAverageTorch, active_indices_torch, iter_ublocks_torch
from .field import TorchField, keys_to_coords
from .udf import compute_udf_torch

T = TypeVar("T")

Chunks = Iterator[tuple[torch.Tensor, torch.Tensor]]
"""(padded blocks [l, 12, 12, 12], int64 block coordinates [l, 3]) on the device."""


class _DeviceStages(Stages):
    """The numba driver's stage bookkeeping, plus a device synchronisation at the end of each stage
    (CUDA kernels are asynchronous: without it a stage's time would land in the next one)."""

    def __init__(self, progress: ProgressCallback | None, should_cancel: Callable[[], bool] | None,
                 device: torch.device) -> None:
        super().__init__(progress, should_cancel)
        self.device = device

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def run(self, name: str, work: Callable[[Report], T]) -> T:
        def synced(report: Report) -> T:
            result = work(report)
            self.sync()
            return result

        return super().run(name, synced)

    def timed(self, chunks: Chunks, stage: str) -> Chunks:
        """Yield chunks while booking the time spent producing them under ``stage`` (they are made
        lazily inside Pad-Average, so the two stages interleave), checking for cancellation. The
        clock starts after a synchronisation too, or it would also wait for the previous chunk's
        Pad-Average kernels."""
        while True:
            self.check()
            self.sync()
            start = time.perf_counter()
            chunk = next(chunks, None)
            self.sync()
            self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - start
            if chunk is None:
                return
            yield chunk


def _pad_average(chunks: Chunks, resolution: int, coords: torch.Tensor,
                 report: Callable[[float], None]) -> TorchField:
    """Accumulate the chunks into the averaged field; reports per chunk (and so can be cancelled)."""
    total = max(int(coords.shape[0]), 1)
    assembler = PadAverageTorch(resolution, coords)
    done = 0
    for blocks, chunk_coords in chunks:
        assembler.add(blocks, chunk_coords)
        done += int(chunk_coords.shape[0])
        report(done / total)
    return assembler.finish()


def _slices(blocks: torch.Tensor, coords: torch.Tensor, chunk: int) -> Chunks:
    """Views of ``chunk`` decoded blocks at a time, so Pad-Average widens one chunk to float32 at once."""
    for start in range(0, int(coords.shape[0]), chunk):
        yield blocks[start:start + chunk], coords[start:start + chunk]


def _gather_all(field: TorchField, active: torch.Tensor, chunk: int) -> torch.Tensor:
    """All active padded blocks [L, 12³] for the encoder, filled chunk by chunk so that the
    gathering's index tensors (twice the size of the blocks) never exist for the whole shape."""
    blocks = torch.empty((int(active.numel()),) + (PADDED_SIZE,) * 3, dtype=torch.float32, device=field.device)
    start = 0
    for part, _ in iter_ublocks_torch(field, chunk):
        blocks[start:start + part.shape[0]] = part
        start += part.shape[0]
    return blocks


def _assemble(unit_vertices: np.ndarray, faces: np.ndarray, options: RemeshOptions, device: torch.device,
              network: object | None, udf_dtype: torch.dtype, stages: _DeviceStages) -> tuple[TorchField, int]:
    """UDF → UBlocks → (encode → decode) → Pad-Average: (averaged field, number of UBlocks). One function so that each big intermediate (the
    exact field, the padded blocks, the latents) is dropped as soon as the next one exists.

    Direct mode gathers lazily inside Pad-Average, so the gathering's time is taken out of
    Pad-Average's as in the numba driver. In vae mode the transformer mixes all tokens of a shape,
    so the network sees the whole shape at once (it runs its local conv stacks in chunks itself);
    its decoded blocks stay in its output dtype and are widened one chunk at a time.
    """
    from ..autoencode import decode_tensors, encode_tensors

    n, chunk = options.resolution, options.chunk_blocks
    field = stages.run("udf", lambda report: compute_udf_torch(unit_vertices, faces, n, device, dtype=udf_dtype))
    active = active_indices_torch(field)
    if active.numel() == 0:
        raise MeshError("the mesh produced no active UBlocks")
    coords = keys_to_coords(field.keys[active], field.grid)
    count = int(coords.shape[0])
    if options.mode == "direct":
        chunks = stages.timed(iter_ublocks_torch(field, chunk), "ublocks")
        assembled = stages.run("pad_average", lambda report: _pad_average(chunks, n, coords, report))
        stages.timings["pad_average"] -= stages.timings.get("ublocks", 0.0)
        return assembled, count
    blocks = stages.run("ublocks", lambda report: _gather_all(field, active, chunk))
    del field, active
    latents = stages.run("encode", lambda report: encode_tensors(network, blocks, coords))
    del blocks
    decoded = stages.run("decode", lambda report: decode_tensors(network, latents, coords).to(device))
    del latents
    assembled = stages.run("pad_average", lambda report: _pad_average(_slices(decoded, coords, chunk), n, coords, report))
    return assembled, count


def _default_udf_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "cuda" else torch.float64


def _peak_start(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_bytes(device: torch.device) -> int | None:
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def remesh_torch(mesh: Mesh, options: RemeshOptions, device: torch.device | str,
                 progress: ProgressCallback | None = None, should_cancel: Callable[[], bool] | None = None,
                 vae: object | None = None, udf_dtype: torch.dtype | None = None) -> RemeshResult:
    """:func:`model.pipeline.remesh` with every stage on ``device``; see the module docstring.

    ``udf_dtype``: the precision of the UDF's distance stage; by default float32 on CUDA and float64
    elsewhere. On a CPU float64 costs about twice the time and gives the numba path's field bit for
    bit, so the torch engine there reproduces the numba engine; GPUs run float64 at 1/2 (H100) to
    1/64 (consumer cards) of the float32 rate, and float32 is within ~1.4e-6 voxel of the exact
    distance (which moves a vertex by up to ~1e-4 voxel where the surface grazes a cell edge).

    ``vae``: an already loaded LoG-VAE (it may live on another device; its output is moved to
    ``device``), otherwise ``options.checkpoint`` or the shipped weights are loaded on
    ``options.device`` for ``mode="vae"``.
    """
    options = options.validate()
    device = torch.device(device)
    network = network_for(options, vae) if options.mode == "vae" else None  # fail before any work
    mesh = validate_arrays(mesh.vertices, mesh.faces)
    stages = _DeviceStages(progress, should_cancel, device)
    _peak_start(device)
    n = options.resolution
    normalization = fit_unit_cube(used_vertices(mesh), unit_margin(n))
    unit_vertices = normalization.to_unit(mesh.vertices)
    with torch.inference_mode():
        assembled, num_blocks = _assemble(unit_vertices, mesh.faces, options, device, network,
                                          udf_dtype or _default_udf_dtype(device), stages)
        # The extraction that stays whole (dual contouring of open sheets, the outside flood of
        # decoded fields) runs on the host for now: the device clean-up's slab cut tore shapes
        # (see model/pipeline.py); moving it onto the device is the unified pipeline's work.
        host_field = SparseField(n, assembled.keys.cpu().numpy(), assembled.values.float().cpu().numpy())
        del assembled
    exact = Mesh(vertices=unit_to_voxel(unit_vertices, n), faces=mesh.faces) if options.mode == "direct" else None
    host_vertices, host_faces = extract_surface(host_field, exact, options, stages)
    out = Mesh(vertices=normalization.from_unit(voxel_to_unit(host_vertices, n)), faces=host_faces)
    return RemeshResult(mesh=out, timings=stages.timings, num_blocks=num_blocks, peak_gpu_bytes=_peak_bytes(device))


__all__ = ["remesh_torch"]
