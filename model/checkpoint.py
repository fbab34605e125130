"""Safetensors checkpoints that carry their own configuration.

A checkpoint is one ``.safetensors`` file: the weights, plus string metadata holding the format
version, the preset name, the storage dtype and the model configuration as JSON. The file alone is
enough to rebuild the model (``model.vae.load_model``), and a mismatch between a file and an
existing model is reported field by field instead of as a wall of shape errors.

This module knows nothing about the network; ``model.vae`` builds on it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ConfigMismatchError",
    "CheckpointError",
    "write_checkpoint",
    "read_checkpoint",
    "read_metadata",
    "config_differences",
]

FORMAT = "log3d-vae"
FORMAT_VERSION = 1

_STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class CheckpointError(ValueError):
    """The file is not a LoG3D checkpoint this code can read."""


class ConfigMismatchError(ValueError):
    """The checkpoint was written for a differently configured network."""

    def __init__(self, fields: dict[str, tuple[Any, Any]], path: str | Path | None = None) -> None:
        self.fields = fields
        where = f" in {path}" if path is not None else ""
        detail = "; ".join(f"{k}: model={m!r} checkpoint={c!r}" for k, (m, c) in fields.items())
        super().__init__(f"checkpoint{where} was saved with a different config ({', '.join(fields)}): {detail}")


def config_differences(
    model_cfg: Mapping[str, Any], ckpt_cfg: Mapping[str, Any], ignore: Iterable[str] = ()
) -> dict[str, tuple[Any, Any]]:
    """Fields whose values differ (lists and tuples compare equal), as {name: (model, checkpoint)}."""

    def norm(v: Any) -> Any:
        return [norm(x) for x in v] if isinstance(v, (list, tuple)) else v

    skip = set(ignore)
    out: dict[str, tuple[Any, Any]] = {}
    for key in sorted(set(model_cfg) | set(ckpt_cfg)):
        if key in skip:
            continue
        a, b = model_cfg.get(key, "<absent>"), ckpt_cfg.get(key, "<absent>")
        if norm(a) != norm(b):
            out[key] = (a, b)
    return out


def write_checkpoint(
    path: str | Path,
    state_dict: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    preset: str,
    dtype: torch.dtype = torch.float32,
) -> None:
    """Write weights (floating tensors cast to ``dtype``) and the embedded config to ``path``."""
    names = {v: k for k, v in _STORAGE_DTYPES.items()}
    if dtype not in names:
        raise ValueError(f"storage dtype must be one of {list(_STORAGE_DTYPES)}, got {dtype}")
    tensors = {}
    for k, t in state_dict.items():
        t = t.detach().to("cpu")
        if t.is_floating_point():
            t = t.to(dtype)
        tensors[k] = t.contiguous()
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "preset": preset,
        "dtype": names[dtype],
        "config": json.dumps(dict(config), sort_keys=True),
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The checkpoint's metadata, with ``config`` decoded from JSON; validates format and version."""
    with safe_open(str(path), framework="pt", device="cpu") as f:
        meta = dict(f.metadata() or {})
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} checkpoint (format={meta.get('format')!r})")
    try:
        version = int(meta.get("format_version", "-1"))
    except ValueError as exc:
        raise CheckpointError(f"{path}: bad format_version {meta.get('format_version')!r}") from exc
    if version > FORMAT_VERSION or version < 1:
        raise CheckpointError(f"{path} has format version {version}; this code reads up to {FORMAT_VERSION}")
    try:
        meta["config"] = json.loads(meta["config"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} has no readable embedded config") from exc
    return meta


def read_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict upcast to float32 on ``device``, metadata) of a checkpoint."""
    meta = read_metadata(path)
    state: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt", device="cpu") as f:
        for k in f.keys():
            t = f.get_tensor(k)
            if t.is_floating_point():
                t = t.float()
            state[k] = t.to(device)
    return state, meta
