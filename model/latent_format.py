"""Reading a LoG3D latent file with numpy alone (format: docs/latents.md).

Latent files are safetensors files, written by the ``safetensors`` library (``model.latent_file``).
This reader needs only numpy and the standard library because Blender's Python has neither torch
nor safetensors, and the add-on must open a generator's samples to send them to the backend:
``install.py`` copies this file into the add-on with the wire client. ``model.latent_file`` reads
through it too, so there is one reader; the test suite checks it against the library's.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "log3d-latents"
FORMAT_VERSION = 1
METADATA_KEY = "log3d_latents"
_DTYPES = {"F16": np.float16, "F32": np.float32, "I16": np.int16, "I32": np.int32}
MAX_HEADER_BYTES = 1 << 20


class LatentFormatError(ValueError):
    """Not a readable LoG3D latent file; the message says what is wrong."""


def read_latent_arrays(path: str | Path) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """(header, latents float32 [L, C], coords int32 [L, 3]) of a latent file, after checking the
    container (sizes, offsets, dtypes) and the header's format and version."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise LatentFormatError(f"latent file not found: {path}") from None
    except OSError as exc:
        raise LatentFormatError(f"cannot read {path}: {exc.strerror}") from None
    if len(raw) < 8:
        raise LatentFormatError(f"{path}: not a readable safetensors file (only {len(raw)} bytes)")
    (size,) = struct.unpack("<Q", raw[:8])
    if size > MAX_HEADER_BYTES or 8 + size > len(raw):
        raise LatentFormatError(f"{path}: not a readable safetensors file (header of {size} bytes)")
    try:
        table = json.loads(raw[8:8 + size].decode("utf-8"))
        assert isinstance(table, dict)
    except (ValueError, AssertionError):
        raise LatentFormatError(f"{path}: not a readable safetensors file (bad header)") from None
    meta = table.pop("__metadata__", None) or {}
    try:
        head = json.loads(meta[METADATA_KEY])
        assert isinstance(head, dict)
    except (KeyError, ValueError, TypeError, AssertionError):
        raise LatentFormatError(f"{path} is not a LoG3D latent file (no '{METADATA_KEY}' metadata)") from None
    if head.get("format") != FORMAT:
        raise LatentFormatError(f"{path} is not a LoG3D latent file (format={head.get('format')!r})")
    if head.get("format_version") != FORMAT_VERSION:
        raise LatentFormatError(f"{path} has latent format version {head.get('format_version')!r}; "
                                f"this code reads version {FORMAT_VERSION}")
    if set(table) != {"latents", "coords"}:
        raise LatentFormatError(f"{path}: expected tensors latents and coords, found {sorted(table)}")
    data = memoryview(raw)[8 + size:]
    arrays = {}
    for name, info in table.items():
        try:
            dtype = np.dtype(_DTYPES[info["dtype"]]).newbyteorder("<")
            shape = tuple(int(x) for x in info["shape"])
            begin, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise LatentFormatError(f"{path}: tensor {name!r} has an unsupported description {info!r}") from None
        if len(shape) != 2 or not 0 <= begin <= end <= len(data) or end - begin != int(np.prod(shape)) * dtype.itemsize:
            raise LatentFormatError(f"{path}: tensor {name!r} does not fit the file (truncated?)")
        arrays[name] = np.frombuffer(data[begin:end], dtype=dtype).reshape(shape)
    latents, coords = arrays["latents"].astype(np.float32), arrays["coords"].astype(np.int32)
    if coords.shape[1] != 3 or latents.shape[0] != coords.shape[0]:
        raise LatentFormatError(f"{path}: latents {list(latents.shape)} and coords {list(coords.shape)} do not match")
    return head, latents, coords
