"""Reading binary PLY files whose faces differ in corner count.

Our own polygon output (:mod:`model.polygon_files`) is a binary PLY of quads and triangles, and so
are files from Blender, MeshLab and scanners. trimesh reads a binary face list only when every face
has the same number of corners ("PLY is unexpected length!"), so ``load_mesh`` reads binary PLY here:
the vertex element as one numpy record array, the face lists with one compiled scan (each face's
length decides where the next begins, so the walk is sequential). Polygons are fanned into triangles
from their first corner, in file order. Headers this reader does not cover (ASCII files, list
properties outside the face element) return ``None`` and go to trimesh.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numba as nb
import numpy as np

_SCALARS = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
_INDEX_NAMES = ("vertex_indices", "vertex_index")


class PlyError(ValueError):
    """A binary PLY that is broken where this reader looks (header, lengths, indices)."""


@dataclass(frozen=True)
class _Element:
    name: str
    count: int
    scalars: list[tuple[str, str]]  # (name, numpy type) in file order, before any list
    face_list: tuple[str, str] | None = None  # (count type, index type) of the face's index list
    after_list: list[tuple[str, str]] | None = None  # scalars after that list


def _parse_header(data: bytes) -> tuple[str, list[_Element], int] | None:
    """(byte order, elements, offset of the body), or None for a file trimesh should read."""
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        return None
    body = data.index(b"\n", end) + 1
    lines = data[:end].decode("ascii", errors="replace").splitlines()
    order = None
    elements: list[_Element] = []
    for line in lines[1:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format":
            order = {"binary_little_endian": "<", "binary_big_endian": ">"}.get(words[1] if len(words) > 1 else "")
            if order is None:
                return None  # ASCII
        elif words[0] == "element" and len(words) == 3:
            elements.append(_Element(words[1], int(words[2]), []))
        elif words[0] == "property" and elements:
            element = elements[-1]
            if words[1] == "list" and len(words) == 5:
                if element.name != "face" or words[4] not in _INDEX_NAMES or element.face_list is not None:
                    return None
                count_type, index_type = _SCALARS.get(words[2]), _SCALARS.get(words[3])
                if count_type is None or index_type is None or "f" in count_type + index_type:
                    return None
                elements[-1] = _Element(element.name, element.count, element.scalars, (count_type, index_type), [])
            elif len(words) == 3 and words[1] in _SCALARS:
                (element.after_list if element.face_list else element.scalars).append((words[2], _SCALARS[words[1]]))
            else:
                return None
        else:
            return None
    names = [e.name for e in elements]
    if order is None or "vertex" not in names or "face" not in names or elements[names.index("face")].face_list is None:
        return None
    if not {"x", "y", "z"} <= {name for name, _ in elements[names.index("vertex")].scalars}:
        return None
    return order, elements, body


@nb.njit(cache=True, inline="always")
def _read_int(data, at, size, signed, big):
    value = 0
    for k in range(size):
        byte = data[at + (k if big else size - 1 - k)]
        value = value * 256 + byte
    if signed and value >= 1 << (8 * size - 1):
        value -= 1 << (8 * size)
    return value


@nb.njit(cache=True)
def _scan_faces(data, start, count, before, after, count_size, count_signed, index_size, index_signed, big, fill, out):
    """Walk ``count`` faces from ``start``. ``fill`` False: (triangles the fans make, end offset,
    -1 or the face whose data runs past the file); True: write the fans into ``out``."""
    at = start
    made = 0
    for face in range(count):
        at += before
        if at + count_size > data.shape[0]:
            return made, at, face
        corners = _read_int(data, at, count_size, count_signed, big)
        at += count_size
        if corners < 0 or at + corners * index_size + after > data.shape[0]:
            return made, at, face
        if fill:
            first = _read_int(data, at, index_size, index_signed, big)
            for k in range(1, corners - 1):
                out[made + k - 1, 0] = first
                out[made + k - 1, 1] = _read_int(data, at + k * index_size, index_size, index_signed, big)
                out[made + k - 1, 2] = _read_int(data, at + (k + 1) * index_size, index_size, index_signed, big)
        if corners >= 3:
            made += corners - 2
        at += corners * index_size + after
    return made, at, -1


def _uniform_faces(data: np.ndarray, at: int, count: int, before: int, after: int, count_type: np.dtype,
                   index_type: np.dtype) -> np.ndarray | None:
    """The fans of a face list whose faces all have the first face's corner count, read as one
    strided array (most files: all triangles); None when the counts differ."""
    if count == 0 or at + before + count_type.itemsize > len(data):
        return None
    corners = int(data[at + before:at + before + count_type.itemsize].view(count_type)[0])
    stride = before + count_type.itemsize + corners * index_type.itemsize + after
    if corners < 3 or at + count * stride > len(data):
        return None
    rows = data[at:at + count * stride].reshape(count, stride)
    start = before + count_type.itemsize
    counts = np.ascontiguousarray(rows[:, before:start]).view(count_type)[:, 0]
    if (counts != corners).any():
        return None
    index = np.ascontiguousarray(rows[:, start:start + corners * index_type.itemsize]).view(index_type).astype(np.int64)
    fans = [index[:, [0, k, k + 1]] for k in range(1, corners - 1)]
    return fans[0] if len(fans) == 1 else np.stack(fans, axis=1).reshape(-1, 3)


def read_binary_ply(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(vertices [V, 3] float64, triangles [F, 3] int64) of a binary PLY, or None when the header
    is one for trimesh. Raises :class:`PlyError` for a file cut short."""
    with open(path, "rb") as file:
        parsed = _parse_header(file.read(1 << 16))
    if parsed is None:  # trimesh reads it: the body is not read here first
        return None
    data = np.fromfile(path, dtype=np.uint8)
    order, elements, at = parsed
    vertices = triangles = None
    for element in elements:
        if element.name == "face":
            before = sum(np.dtype(t).itemsize for _, t in element.scalars)
            after = sum(np.dtype(t).itemsize for _, t in element.after_list or [])
            count_type, index_type = (np.dtype(t) for t in element.face_list)
            triangles = _uniform_faces(data, at, element.count, before, after, count_type.newbyteorder(order),
                                       index_type.newbyteorder(order))
            if triangles is None:
                args = (element.count, before, after, count_type.itemsize, count_type.kind == "i",
                        index_type.itemsize, index_type.kind == "i", order == ">")
                made, end, short = _scan_faces(data, at, *args, False, np.empty((0, 3), np.int64))
                if short >= 0:
                    raise PlyError(f"face {short} of {element.count} runs past the end of the file")
                triangles = np.empty((made, 3), dtype=np.int64)
                _scan_faces(data, at, *args, True, triangles)
        else:
            record = np.dtype([(f"{i}_{name}", order + t) for i, (name, t) in enumerate(element.scalars)])
            size = record.itemsize * element.count
            if at + size > len(data):
                raise PlyError(f"the {element.name} element ({element.count} × {record.itemsize} bytes) runs past the end of the file")
            if element.name == "vertex":
                rows = np.frombuffer(data, dtype=record, count=element.count, offset=at)
                columns = {name: f"{i}_{name}" for i, (name, _) in enumerate(element.scalars)}
                vertices = np.stack([rows[columns[axis]].astype(np.float64) for axis in "xyz"], axis=1)
            at += size
        if vertices is not None and triangles is not None:
            break
    return vertices, triangles


__all__ = ["PlyError", "read_binary_ply"]
