"""Engines: the kernels below the one driver (:mod:`model.pipeline`) whose implementation depends on
the hardware, behind one interface.

Every remesh runs the same stages in the same order, whichever engine is chosen::

    vae:     udf → ublocks → encode → decode → pad_average → extract → cleanup → (decimate)
    direct:  (udf, when a clean-up step is off) → extract → cleanup → (decimate)

An engine supplies the kernels of the stages up to Pad-Average — the ones that are flat, regular
work over blocks and voxels, where a GPU wants flat tensor batches and a CPU wants compiled loops
over blocks with early exits. The numba engine (here) keeps arrays in numpy; the torch engine
(:class:`model.gpu.engine.TorchEngine`) keeps them as tensors on one device, so no intermediate
crosses to the host until the averaged field does. The extraction and the clean-up that follow
are graph walks (dual contouring's sheet pairing, the outside flood's worklist, half-edge
grouping, union-find) and run on the host for both engines (:func:`model.pipeline.extract_surface`).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, ContextManager, Protocol

import numpy as np

from .grid import Array, SparseField
from .stages import Report
from .ublocks import Assembler, PadAverage, UBlocks, active_indices, extract_ublocks
from .udf import compute_udf

if TYPE_CHECKING:
    import torch

ENGINES = ("auto", "numba", "torch")


class Engine(Protocol):
    """The kernels one engine supplies; arrays stay in the engine's kind (numpy or device tensors)."""

    def udf(self, unit_vertices: np.ndarray, faces: np.ndarray, resolution: int, report: Report) -> SparseField:
        """The narrow-band UDF blocks of a mesh already in the unit cube."""

    def active_coords(self, field: SparseField) -> Array:
        """Block coordinates [L, 3] of the UBlocks (blocks with a voxel below FAR), in key order."""

    def all_ublocks(self, field: SparseField, chunk_blocks: int) -> UBlocks:
        """Every padded UBlock at once (the encoder's transformer mixes all tokens of a shape),
        gathered at most ``chunk_blocks`` at a time where the engine bounds its scratch memory."""

    def adopt(self, resolution: int, blocks: "torch.Tensor", coords: np.ndarray) -> UBlocks:
        """The network's decoded blocks (on its device, in its dtype) at the block coordinates
        ``coords`` as UBlocks of this engine's arrays."""

    def assembler(self, resolution: int, coords: Array) -> Assembler:
        """Pad-Average's accumulator for the blocks ``coords``."""

    def sync(self) -> None:
        """Wait for queued device work (so that stage clocks are the stages' own)."""

    def session(self) -> ContextManager[Any]:
        """The context the stages up to Pad-Average run in."""

    def reset_peak(self) -> None:
        """Start counting peak device memory."""

    def peak_bytes(self) -> int | None:
        """Peak device memory since :meth:`reset_peak`; None where there is no device memory."""


class NumbaEngine:
    """The CPU engine: numba kernels over numpy arrays (:mod:`model.udf`, :mod:`model.ublocks`)."""

    def udf(self, unit_vertices: np.ndarray, faces: np.ndarray, resolution: int, report: Report) -> SparseField:
        return compute_udf(unit_vertices, faces, resolution, report)

    def active_coords(self, field: SparseField) -> np.ndarray:
        return field.coords[active_indices(field)]

    def all_ublocks(self, field: SparseField, chunk_blocks: int) -> UBlocks:
        return extract_ublocks(field)

    def adopt(self, resolution: int, blocks: "torch.Tensor", coords: np.ndarray) -> UBlocks:
        return UBlocks(resolution, blocks.float().cpu().numpy(), np.asarray(coords, dtype=np.int32))

    def assembler(self, resolution: int, coords: Array) -> Assembler:
        return PadAverage(resolution, coords)

    def sync(self) -> None:
        pass

    def session(self) -> ContextManager[Any]:
        return contextlib.nullcontext()

    def reset_peak(self) -> None:
        pass

    def peak_bytes(self) -> int | None:
        return None


def check_engine(engine: str) -> None:
    if engine not in ENGINES:
        raise ValueError(f"unknown engine '{engine}' (choose from: {', '.join(ENGINES)})")


class DeferredEngine:
    """:func:`engine_for`'s choice, made when a kernel is first needed. Direct mode's contouring
    reads no field, so a remesh that only contours never asks — and deciding ``auto`` imports
    torch to look for CUDA, over a second of start-up that every ``log3d remesh`` of a small mesh
    paid for nothing. Until then there is no device work to wait for or to count."""

    def __init__(self, engine: str = "auto", device: str = "auto") -> None:
        check_engine(engine)  # a wrong name fails now, not at the first kernel
        self.choice = (engine, device)
        self.resolved: Engine | None = None

    def resolve(self) -> Engine:
        if self.resolved is None:
            self.resolved = engine_for(*self.choice)
            self.resolved.reset_peak()
        return self.resolved

    def udf(self, unit_vertices: np.ndarray, faces: np.ndarray, resolution: int, report: Report) -> SparseField:
        return self.resolve().udf(unit_vertices, faces, resolution, report)

    def active_coords(self, field: SparseField) -> Array:
        return self.resolve().active_coords(field)

    def all_ublocks(self, field: SparseField, chunk_blocks: int) -> UBlocks:
        return self.resolve().all_ublocks(field, chunk_blocks)

    def adopt(self, resolution: int, blocks: "torch.Tensor", coords: np.ndarray) -> UBlocks:
        return self.resolve().adopt(resolution, blocks, coords)

    def assembler(self, resolution: int, coords: Array) -> Assembler:
        return self.resolve().assembler(resolution, coords)

    def session(self) -> ContextManager[Any]:
        return self.resolve().session()

    def sync(self) -> None:
        if self.resolved is not None:
            self.resolved.sync()

    def reset_peak(self) -> None:
        if self.resolved is not None:
            self.resolved.reset_peak()

    def peak_bytes(self) -> int | None:
        return None if self.resolved is None else self.resolved.peak_bytes()


def engine_for(engine: str = "auto", device: str = "auto") -> Engine:
    """The engine a remesh runs on: ``numba`` on the CPU; ``torch`` on ``device``; ``auto`` picks
    torch when ``device`` resolves to CUDA, numba otherwise (and with ``device="cpu"`` decides
    without importing torch, which takes a second to load)."""
    check_engine(engine)
    if engine == "numba" or (engine == "auto" and device == "cpu"):
        return NumbaEngine()
    from .autoencode import resolve_device

    resolved = resolve_device(device)
    if engine == "auto" and resolved.type != "cuda":
        return NumbaEngine()
    from .gpu.engine import TorchEngine

    return TorchEngine(resolved)


__all__ = ["DeferredEngine", "ENGINES", "Engine", "NumbaEngine", "check_engine", "engine_for"]
