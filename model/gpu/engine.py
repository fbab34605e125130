"""The torch engine: every kernel up to Pad-Average on one torch device (:class:`model.engine.Engine`).

Each kernel consumes the previous one's device tensors directly, so nothing is copied to the host
before the averaged field (:meth:`model.grid.SparseField.to_host`):

    compute_udf_torch   → SparseField of tensors
    all_ublocks_torch   → UBlocks of tensors, gathered a chunk at a time
    (vae) the network   → decoded blocks stay on the device, in the network's dtype
    PadAverageTorch     → SparseField of the averaged blocks

On CUDA, :meth:`TorchEngine.sync` makes the stage clocks the stages' own (kernels are
asynchronous), and the peak of allocated device memory over a run is reported.
"""

from __future__ import annotations

from typing import Any, ContextManager

import numpy as np
import torch

from ..grid import SparseField
from ..stages import Report
from ..ublocks import Assembler, UBlocks
from .blocks import PadAverageTorch, active_indices_torch, all_ublocks_torch
from .udf import compute_udf_torch


class TorchEngine:
    """The stages up to Pad-Average as torch kernels on ``device``.

    ``udf_dtype``: the precision of the UDF's distance stage; by default float32 on CUDA and float64
    elsewhere. On a CPU float64 costs about twice the time and gives the numba engine's field bit
    for bit, so the torch engine there reproduces the numba engine; GPUs run float64 at 1/2 (H100)
    to 1/64 (consumer cards) of the float32 rate, and float32 is within ~1.4e-6 voxel of the exact
    distance (which moves a vertex by up to ~1e-4 voxel where the surface grazes a cell edge).
    """

    def __init__(self, device: torch.device | str, udf_dtype: torch.dtype | None = None) -> None:
        self.device = torch.device(device)
        self.udf_dtype = udf_dtype or (torch.float32 if self.device.type == "cuda" else torch.float64)

    def udf(self, unit_vertices: np.ndarray, faces: np.ndarray, resolution: int, report: Report) -> SparseField:
        return compute_udf_torch(unit_vertices, faces, resolution, self.device, dtype=self.udf_dtype)

    def active_coords(self, field: SparseField) -> torch.Tensor:
        return field.coords[active_indices_torch(field)]

    def all_ublocks(self, field: SparseField, chunk_blocks: int) -> UBlocks:
        return all_ublocks_torch(field, chunk_blocks)

    def adopt(self, resolution: int, blocks: torch.Tensor, coords: np.ndarray) -> UBlocks:
        # Kept in the network's dtype: Pad-Average widens one chunk at a time.
        return UBlocks(resolution, blocks.to(self.device), torch.as_tensor(coords, device=self.device).to(torch.int64))

    def assembler(self, resolution: int, coords: Any) -> Assembler:
        return PadAverageTorch(resolution, coords)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def session(self) -> ContextManager[Any]:
        return torch.inference_mode()

    def reset_peak(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_bytes(self) -> int | None:
        return int(torch.cuda.max_memory_allocated(self.device)) if self.device.type == "cuda" else None


__all__ = ["TorchEngine"]
