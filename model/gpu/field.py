"""The sparse field as device tensors: the torch twin of :class:`model.grid.SparseField`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..grid import BLOCK_SIZE, SparseField, check_resolution


@dataclass
class TorchField:
    """A normalised, truncated UDF stored on 8³ blocks, on a torch device.

    ``keys``: sorted int64 linear block keys [M] (x-major, :func:`model.grid.block_keys`);
    ``values``: float32 [M, 8, 8, 8] indexed [x, y, z]; voxels of unlisted blocks are FAR.
    """

    resolution: int
    keys: torch.Tensor
    values: torch.Tensor

    @property
    def grid(self) -> int:
        return self.resolution // BLOCK_SIZE

    @property
    def device(self) -> torch.device:
        return self.keys.device

    @property
    def num_blocks(self) -> int:
        return int(self.keys.shape[0])

    def coords(self) -> torch.Tensor:
        """int64 block coordinates [M, 3]."""
        return keys_to_coords(self.keys, self.grid)

    @classmethod
    def from_sparse(cls, field: SparseField, device: torch.device | str) -> "TorchField":
        check_resolution(field.resolution)
        keys = torch.as_tensor(np.ascontiguousarray(field.keys, dtype=np.int64), device=device)
        values = torch.as_tensor(np.ascontiguousarray(field.values, dtype=np.float32), device=device)
        return cls(resolution=field.resolution, keys=keys, values=values)

    def to_sparse(self) -> SparseField:
        """Copy to the host (tests, and the CPU-only clean-up steps)."""
        return SparseField(resolution=self.resolution, keys=self.keys.cpu().numpy(),
                           values=self.values.float().cpu().numpy())


def lookup_keys(sorted_keys: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Index of each key in ``sorted_keys`` or -1 where absent (the torch twin of
    :func:`model.grid.lookup_blocks`; callers map off-grid coordinates to a negative key first)."""
    if sorted_keys.numel() == 0:
        return torch.full_like(keys, -1)
    pos = torch.searchsorted(sorted_keys, keys).clamp_(max=sorted_keys.numel() - 1)
    found = (sorted_keys[pos] == keys) & (keys >= 0)
    return torch.where(found, pos, torch.full_like(pos, -1))


def coords_to_keys(coords: torch.Tensor, grid: int) -> torch.Tensor:
    """Linear keys of int64 block coordinates [K, 3]; -1 for coordinates off the grid."""
    inside = ((coords >= 0) & (coords < grid)).all(dim=1)
    keys = (coords[:, 0] * grid + coords[:, 1]) * grid + coords[:, 2]
    return torch.where(inside, keys, torch.full_like(keys, -1))


def keys_to_coords(keys: torch.Tensor, grid: int) -> torch.Tensor:
    """int64 block coordinates [K, 3] of linear keys [K] (the inverse of :func:`coords_to_keys`)."""
    return torch.stack([keys // (grid * grid), (keys // grid) % grid, keys % grid], dim=1)


__all__ = ["TorchField", "lookup_keys", "coords_to_keys", "keys_to_coords"]
