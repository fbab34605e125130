"""Writing meshes with quads to the formats that hold polygons (OBJ, PLY, OFF).

trimesh exports triangles only, so a mesh with quads (:mod:`model.quad_layout`) is written here; glTF and
STL hold triangles only and keep going through trimesh (the quads are written as their two
triangles). The files read back with trimesh (and Blender), which triangulate polygons on import.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .quad_layout import quad_corners

POLYGON_FORMATS = (".obj", ".ply", ".off")
_ROWS = 200_000  # rows formatted per chunk of text: bounded memory on a 20M-face result


def _write_rows(out, prefix: str, rows: np.ndarray, number: str) -> None:
    """``rows`` as text lines ``prefix v0 v1 ...`` (numbers in ``number`` format), in chunks."""
    if len(rows) == 0:
        return
    line = prefix + " ".join([number] * rows.shape[1]) + "\n"
    for start in range(0, len(rows), _ROWS):
        chunk = rows[start:start + _ROWS]
        out.write((line * len(chunk)) % tuple(chunk.ravel().tolist()))


def _obj(path: Path, vertices: np.ndarray, quads: np.ndarray, triangles: np.ndarray) -> None:
    with open(path, "w", encoding="ascii") as out:
        out.write(f"# LoG3D Studio: {len(vertices)} vertices, {len(quads)} quads, {len(triangles)} triangles\n")
        _write_rows(out, "v ", vertices, "%.17g")
        _write_rows(out, "f ", quads + 1, "%d")
        _write_rows(out, "f ", triangles + 1, "%d")


def _counted(path: Path, header: str, vertices: np.ndarray, quads: np.ndarray, triangles: np.ndarray) -> None:
    """OFF and ASCII PLY: ``header``, the vertices, then each face as its corner count and corners."""
    with open(path, "w", encoding="ascii") as out:
        out.write(header)
        _write_rows(out, "", vertices, "%.17g")
        _write_rows(out, "4 ", quads, "%d")
        _write_rows(out, "3 ", triangles, "%d")


def _off(path: Path, vertices: np.ndarray, quads: np.ndarray, triangles: np.ndarray) -> None:
    _counted(path, f"OFF\n{len(vertices)} {len(quads) + len(triangles)} 0\n", vertices, quads, triangles)


def _ply(path: Path, vertices: np.ndarray, quads: np.ndarray, triangles: np.ndarray) -> None:
    """ASCII: a binary PLY whose faces differ in length is valid, but trimesh (our own reader) cannot
    read one back."""
    header = (f"ply\nformat ascii 1.0\ncomment LoG3D Studio\nelement vertex {len(vertices)}\n"
              "property double x\nproperty double y\nproperty double z\n"
              f"element face {len(quads) + len(triangles)}\nproperty list uchar int vertex_indices\nend_header\n")
    _counted(path, header, vertices, quads, triangles)


def write_polygons(path: Path, vertices: np.ndarray, faces: np.ndarray, num_quads: int) -> None:
    """Write ``faces`` (triangles, the first ``2·num_quads`` of them quads) as polygons to ``path``
    (.obj, .ply or .off)."""
    quads = quad_corners(faces, num_quads).astype(np.int64)
    triangles = np.asarray(faces[2 * num_quads:], dtype=np.int64)
    writer = {".obj": _obj, ".ply": _ply, ".off": _off}[path.suffix.lower()]
    writer(path, np.asarray(vertices, dtype=np.float64), quads, triangles)


__all__ = ["POLYGON_FORMATS", "write_polygons"]
