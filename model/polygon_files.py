"""Writing meshes with quads to the formats that hold polygons (OBJ, PLY, OFF).

trimesh exports triangles only, so a mesh with quads (:mod:`model.quad_layout`) is written here; glTF and
STL hold triangles only and keep going through trimesh (the quads are written as their two
triangles). OBJ and OFF read back with trimesh, the binary PLY with :mod:`model.ply_reader` (trimesh
cannot read its mixed face lists); Blender reads all three.
"""

from __future__ import annotations

from pathlib import Path

import numba as nb
import numpy as np

from .quad_layout import quad_corners

POLYGON_FORMATS = (".obj", ".ply", ".off")
_ROWS = 1 << 20  # rows formatted per chunk of text: bounded memory on a 20M-face result
SIGNIFICANT = 12
"""Significant digits of a written coordinate: a float32 input round-trips exactly (9 would), and a
float64 one within 5e-12 of itself — far below any voxel (``%.17g`` took 1 s per million vertices)."""


_POW10 = 10.0 ** np.arange(-308, 309)  # exact where 10^k is, and the correctly rounded double elsewhere


_DIGITS = 48  # scratch[_DIGITS:_DIGITS + SIGNIFICANT]: a coordinate's digits; scratch[_TAIL - 8:_TAIL]: an integer's
_TAIL = 40


@nb.njit(cache=True, inline="always")
def _int_text(value, scratch, end):
    """``value`` in decimal into ``scratch``, right-aligned to end just before ``end``; its length."""
    n = -value if value < 0 else value
    i = end
    while True:
        i -= 1
        scratch[i] = 48 + n % 10
        n //= 10
        if n == 0:
            break
    if value < 0:
        i -= 1
        scratch[i] = 45
    return end - i


@nb.njit(cache=True)
def _float_text(x, scratch):
    """``x`` with at most ``SIGNIFICANT`` significant digits, trailing zeros dropped, positional from
    1e-5 to 1e12 and ``1.5e-07``-style beyond, into ``scratch`` from its start (its bytes 32–63 are
    working space); its length."""
    if x == 0.0:
        scratch[0] = 48
        return 1
    pos = 0
    if x < 0.0:
        scratch[0] = 45
        pos = 1
        x = -x
    e = int(np.floor(np.log10(x)))
    top = 10 ** (SIGNIFICANT - 1)
    m = int(np.round(x * _POW10[SIGNIFICANT - 1 - e + 308])) if e < 290 else int(np.round(x / _POW10[e - SIGNIFICANT + 1 + 308]))
    if m >= 10 * top:  # log10 rounded up, or the rounding carried into a new digit
        m = (m + 5) // 10
        e += 1
    elif m < top:
        m = int(np.round(x * _POW10[SIGNIFICANT - e + 308])) if e < 290 else int(np.round(x / _POW10[e - SIGNIFICANT + 308]))
        e -= 1
    for d in range(SIGNIFICANT - 1, -1, -1):
        scratch[_DIGITS + d] = 48 + m % 10
        m //= 10
    used = SIGNIFICANT
    while used > 1 and scratch[_DIGITS + used - 1] == 48:
        used -= 1
    if -5 <= e < SIGNIFICANT:
        if e < 0:
            scratch[pos] = 48
            scratch[pos + 1] = 46
            pos += 2
            for _ in range(-e - 1):
                scratch[pos] = 48
                pos += 1
            for d in range(used):
                scratch[pos] = scratch[_DIGITS + d]
                pos += 1
        else:
            for d in range(max(used, e + 1)):
                if d == e + 1:
                    scratch[pos] = 46
                    pos += 1
                scratch[pos] = scratch[_DIGITS + d] if d < used else 48
                pos += 1
        return pos
    scratch[pos] = scratch[_DIGITS]
    pos += 1
    if used > 1:
        scratch[pos] = 46
        pos += 1
        for d in range(1, used):
            scratch[pos] = scratch[_DIGITS + d]
            pos += 1
    scratch[pos] = 101
    scratch[pos + 1] = 45 if e < 0 else 43
    pos += 2
    ae = -e if e < 0 else e
    if ae < 10:
        scratch[pos] = 48
        pos += 1
    k = _int_text(ae, scratch, _TAIL)
    for d in range(_TAIL - k, _TAIL):
        scratch[pos] = scratch[d]
        pos += 1
    return pos


@nb.njit(cache=True, inline="always")
def _number(value, scratch, is_float):
    """Bytes of one number at the start of ``scratch``; its length."""
    if is_float:
        return _float_text(value, scratch)
    k = _int_text(np.int64(value), scratch, _TAIL)
    for d in range(k):
        scratch[d] = scratch[_TAIL - k + d]
    return k


_SPANS = 64  # rows are formatted in this many spans at once, each with one scratch buffer


@nb.njit(parallel=True, cache=True)
def _rows_text(prefix, rows, is_float):
    """Each row as a line ``prefix`` + its numbers separated by spaces + newline, all in one buffer:
    lengths first (in parallel), then the bytes (in parallel, each row at its offset)."""
    n, width = rows.shape
    lengths = np.empty(n + 1, dtype=np.int64)
    lengths[0] = 0
    spans = min(n, _SPANS)
    for s in nb.prange(spans):
        scratch = np.empty(64, dtype=np.uint8)
        for r in range(s * n // spans, (s + 1) * n // spans):
            total = prefix.shape[0] + width  # the spaces and the newline
            for c in range(width):
                total += _number(rows[r, c], scratch, is_float)
            lengths[r + 1] = total
    offsets = np.cumsum(lengths)
    out = np.empty(offsets[n], dtype=np.uint8)
    for s in nb.prange(spans):
        scratch = np.empty(64, dtype=np.uint8)
        for r in range(s * n // spans, (s + 1) * n // spans):
            at = offsets[r]
            for b in range(prefix.shape[0]):
                out[at + b] = prefix[b]
            at += prefix.shape[0]
            for c in range(width):
                if c:
                    out[at] = 32
                    at += 1
                k = _number(rows[r, c], scratch, is_float)
                for b in range(k):
                    out[at + b] = scratch[b]
                at += k
            out[at] = 10
    return out


def _write_rows(out, prefix: str, rows: np.ndarray, is_float: bool) -> None:
    """``rows`` as text lines ``prefix v0 v1 ...`` (coordinates to ``SIGNIFICANT`` digits, or
    integers), in chunks, to the binary file ``out``."""
    if len(rows) == 0:
        return
    head = np.frombuffer(prefix.encode("ascii"), dtype=np.uint8)
    values = np.ascontiguousarray(rows, dtype=np.float64 if is_float else np.int64)
    if is_float:
        size = np.abs(values[values != 0.0])
        if not np.isfinite(values).all() or (len(size) and (size.min() < 1e-280 or size.max() > 1e280)):
            line = prefix + " ".join([f"%.{SIGNIFICANT}g"] * values.shape[1]) + "\n"  # beyond the kernel's table
            out.write("".join(line % tuple(row) for row in values.tolist()).encode("ascii"))
            return
    for start in range(0, len(values), _ROWS):
        out.write(_rows_text(head, values[start:start + _ROWS], is_float).tobytes())


def _obj(path: Path, vertices: np.ndarray, quads: np.ndarray, triangles: np.ndarray) -> None:
    with open(path, "wb") as out:
        out.write(f"# LoG3D Studio: {len(vertices)} vertices, {len(quads)} quads, {len(triangles)} triangles\n".encode())
        _write_rows(out, "v ", vertices, True)
        _write_rows(out, "f ", quads + 1, False)
        _write_rows(out, "f ", triangles + 1, False)


def _off(path: Path, vertices: np.ndarray, quads: np.ndarray, triangles: np.ndarray) -> None:
    """The vertices, then each face as its corner count and corners."""
    with open(path, "wb") as out:
        out.write(f"OFF\n{len(vertices)} {len(quads) + len(triangles)} 0\n".encode("ascii"))
        _write_rows(out, "", vertices, True)
        _write_rows(out, "4 ", quads, False)
        _write_rows(out, "3 ", triangles, False)


_QUAD_RECORD = np.dtype([("corners", "u1"), ("index", "<i4", (4,))])  # packed: 17 bytes, as PLY lays a list out
_TRIANGLE_RECORD = np.dtype([("corners", "u1"), ("index", "<i4", (3,))])


def _ply(path: Path, vertices: np.ndarray, quads: np.ndarray, triangles: np.ndarray) -> None:
    """Binary little-endian PLY, doubles and int32 indices: a 1024 result is half the bytes of the
    same file in text and needs no formatting (cow at 1024: 0.6 s of text formatting and 115 MB).
    trimesh cannot read a binary PLY whose faces differ in corner count; :mod:`model.ply_reader`
    reads it back for ``load_mesh``, and Blender, MeshLab and Open3D read it as it is."""
    if len(vertices) > np.iinfo(np.int32).max:
        raise ValueError(f"{len(vertices)} vertices do not fit a PLY's int indices")
    header = (f"ply\nformat binary_little_endian 1.0\ncomment LoG3D Studio\nelement vertex {len(vertices)}\n"
              "property double x\nproperty double y\nproperty double z\n"
              f"element face {len(quads) + len(triangles)}\nproperty list uchar int vertex_indices\nend_header\n")
    with open(path, "wb") as out:
        out.write(header.encode("ascii"))
        out.write(np.ascontiguousarray(vertices, dtype="<f8").tobytes())
        for corners, record in ((quads, _QUAD_RECORD), (triangles, _TRIANGLE_RECORD)):
            for start in range(0, len(corners), _ROWS):  # bounded memory on a 20M-face result
                chunk = corners[start:start + _ROWS]
                rows = np.empty(len(chunk), dtype=record)
                rows["corners"] = chunk.shape[1]
                rows["index"] = chunk
                out.write(rows.tobytes())


def write_polygons(path: Path, vertices: np.ndarray, faces: np.ndarray, num_quads: int) -> None:
    """Write ``faces`` (triangles, the first ``2·num_quads`` of them quads) as polygons to ``path``
    (.obj, .ply or .off)."""
    quads = quad_corners(faces, num_quads).astype(np.int64)
    triangles = np.asarray(faces[2 * num_quads:], dtype=np.int64)
    writer = {".obj": _obj, ".ply": _ply, ".off": _off}[path.suffix.lower()]
    writer(path, np.asarray(vertices, dtype=np.float64), quads, triangles)


__all__ = ["POLYGON_FORMATS", "write_polygons"]
