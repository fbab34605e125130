"""Triangle meshes in and out of LoG3D: loading, validation and the unit-cube normalisation.

Everything downstream (UDF, UBlocks, the network, the metrics) assumes a clean triangle soup with
finite coordinates and valid indices, so all checks happen here, once, with messages that name the
problem; a broken input must never reach a numba kernel or a GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numba as nb
import numpy as np

SUPPORTED_EXTENSIONS = (".obj", ".ply", ".stl", ".off", ".glb", ".gltf")


class MeshError(ValueError):
    """A mesh that cannot be used, with a message a user can act on."""


@dataclass(frozen=True)
class Mesh:
    """A triangle mesh: float64 vertices [V, 3] and int64 triangle indices [F, 3].

    ``num_quads``: the first ``2·num_quads`` triangles are quads, each as two consecutive triangles
    split along its first diagonal (:mod:`model.quad_layout`); a reader that wants triangles ignores it."""

    vertices: np.ndarray
    faces: np.ndarray
    num_quads: int = 0

    @property
    def num_vertices(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])


@dataclass(frozen=True)
class Normalization:
    """The similarity transform into the unit cube: ``unit = (world - center) * scale``.

    Kept beside every normalised mesh so the result can be returned in the caller's own frame.
    """

    center: np.ndarray
    scale: float

    def to_unit(self, points: np.ndarray) -> np.ndarray:
        return (np.asarray(points, dtype=np.float64) - self.center) * self.scale

    def from_unit(self, points: np.ndarray) -> np.ndarray:
        return np.asarray(points, dtype=np.float64) / self.scale + self.center


MAX_COORDINATE = 1e30
"""Inputs beyond this are refused: the output returns to the input's frame in float32 (max 3.4e38),
and a mesh that large in any unit is a unit mistake, not a model."""
DEGENERATE_AREA = 1e-14
"""Twice a face's area, relative to the mesh's extent squared, below which it counts as zero."""


def validate_arrays(vertices: object, faces: object, name: str = "mesh") -> Mesh:
    """Check raw arrays (from a file, Blender or the wire) and return them as a :class:`Mesh`.

    Raises :class:`MeshError` naming the first problem found: wrong shape, empty mesh,
    NaN/Inf coordinates, indices out of range, or a mesh with no extent.
    """
    try:
        verts = np.asarray(vertices, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise MeshError(f"{name}: vertices are not numeric: {exc}") from None
    try:
        tris = np.asarray(faces)
    except (TypeError, ValueError) as exc:
        raise MeshError(f"{name}: faces are not an array: {exc}") from None
    if verts.ndim != 2 or verts.shape[1] != 3:
        raise MeshError(f"{name}: vertices must have shape [V, 3], got {list(verts.shape)}")
    if tris.size == 0 or verts.shape[0] == 0:
        raise MeshError(f"{name}: the mesh is empty ({verts.shape[0]} vertices, {tris.shape[0] if tris.ndim else 0} faces)")
    if tris.ndim != 2 or tris.shape[1] != 3:
        raise MeshError(f"{name}: faces must be triangles with shape [F, 3], got {list(tris.shape)}")
    if not np.issubdtype(tris.dtype, np.integer):
        if not np.issubdtype(tris.dtype, np.floating) or not np.all(np.isfinite(tris)) or np.any(tris != np.round(tris)):
            raise MeshError(f"{name}: face indices must be integers, got dtype {tris.dtype}")
    tris = tris.astype(np.int64)
    finite = np.isfinite(verts).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise MeshError(f"{name}: {bad.size} vertices have NaN or Inf coordinates (first: vertex {int(bad[0])})")
    lo, hi = int(tris.min()), int(tris.max())
    if lo < 0 or hi >= verts.shape[0]:
        offending = lo if lo < 0 else hi
        raise MeshError(
            f"{name}: face index {offending} is out of range for {verts.shape[0]} vertices (valid: 0..{verts.shape[0] - 1})"
        )
    big = np.abs(verts).max(axis=1) > MAX_COORDINATE
    if big.any():
        first = int(np.flatnonzero(big)[0])
        raise MeshError(f"{name}: {int(big.sum())} vertices lie beyond ±{MAX_COORDINATE:g} (first: vertex {first} at "
                        f"{verts[first].tolist()}); results are float32, whose range ends at 3.4e38: scale the mesh down")
    used = verts[np.unique(tris)]
    extent = float((used.max(axis=0) - used.min(axis=0)).max())
    if extent <= 0.0:
        raise MeshError(f"{name}: all faces collapse to a single point (zero extent)")
    if not _has_area(verts, tris, extent):
        raise MeshError(f"{name}: all {tris.shape[0]} faces have zero area (collinear or repeated vertices): "
                        "there is no surface to remesh")
    return Mesh(vertices=verts, faces=tris)


def _has_area(verts: np.ndarray, tris: np.ndarray, extent: float, first: int = 4096) -> bool:
    """Whether any face has non-zero area. Nearly every mesh answers yes within its first faces, so
    those are tried alone before all of them (this runs on every remesh, on millions of faces)."""
    for chunk in (tris[:first], tris[first:]):
        if len(chunk):
            p0, p1, p2 = (verts[chunk[:, k]] / extent for k in range(3))
            if (np.linalg.norm(np.cross(p1 - p0, p2 - p0), axis=1) > DEGENERATE_AREA).any():
                return True
    return False


def load_mesh(path: str | os.PathLike[str]) -> Mesh:
    """Read a mesh file; multi-body scenes are concatenated (with their node transforms) and
    polygons are triangulated (by trimesh's loaders, and :mod:`model.ply_reader` for binary PLY)."""
    import trimesh  # local: keeps `import model` light for the Blender-free server start-up

    file_path = Path(path)
    if not file_path.is_file():
        raise MeshError(f"file not found: {file_path}")
    suffix = file_path.suffix.lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        raise MeshError(f"{file_path}: unsupported format '{suffix}' (supported: {', '.join(SUPPORTED_EXTENSIONS)})")
    if suffix == ".ply":  # trimesh cannot read a binary PLY whose faces differ in length (ours)
        from .ply_reader import read_binary_ply

        try:
            arrays = read_binary_ply(file_path)
        except ValueError as exc:  # PlyError, or a header number that is not one
            raise MeshError(f"{file_path}: cannot read the file: {exc}") from None
        if arrays is not None:
            return validate_arrays(*arrays, name=str(file_path))
    try:
        loaded = trimesh.load(str(file_path), process=False)
    except Exception as exc:  # trimesh raises many types for broken files
        raise MeshError(f"{file_path}: cannot read the file: {type(exc).__name__}: {exc}") from None
    if isinstance(loaded, trimesh.Scene):
        bodies = [g for g in loaded.dump(concatenate=False) if isinstance(g, trimesh.Trimesh) and len(g.faces)]
        if not bodies:
            raise MeshError(f"{file_path}: the file holds no triangles")
        loaded = trimesh.util.concatenate(bodies)
    if not isinstance(loaded, trimesh.Trimesh):
        raise MeshError(f"{file_path}: the file holds no triangle mesh (found {type(loaded).__name__})")
    return validate_arrays(loaded.vertices, loaded.faces, name=str(file_path))


def save_mesh(mesh: Mesh, path: str | os.PathLike[str]) -> None:
    """Write a mesh; the format follows the file extension. OBJ, PLY and OFF are written by
    :mod:`model.polygon_files` (quads kept as quads); glTF and STL get triangles, through trimesh."""
    import trimesh

    from .polygon_files import POLYGON_FORMATS, write_polygons

    file_path = Path(path)
    if file_path.suffix.lower() not in SUPPORTED_EXTENSIONS:
        raise MeshError(f"{file_path}: unsupported output format (supported: {', '.join(SUPPORTED_EXTENSIONS)})")
    file_path.parent.mkdir(parents=True, exist_ok=True)
    if file_path.suffix.lower() in POLYGON_FORMATS:  # triangles too: the fast writers (a 1.4M-face OBJ 0.66 s through trimesh)
        write_polygons(file_path, mesh.vertices, mesh.faces, mesh.num_quads)
        return
    trimesh.Trimesh(vertices=mesh.vertices, faces=mesh.faces, process=False).export(str(file_path))


def bounding_box(vertices: np.ndarray) -> tuple[np.ndarray, float]:
    """The centre of the points' bounding box and its longest side; a clear error when that is 0."""
    pts = np.asarray(vertices, dtype=np.float64)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    extent = float((hi - lo).max())
    if extent <= 0.0:
        raise MeshError("cannot normalise a mesh with zero extent")
    return (lo + hi) / 2.0, extent


def fit_unit_cube(vertices: np.ndarray, margin: float = 0.0) -> Normalization:
    """The transform that centres the bounding box and scales its longest side to ``1 - 2*margin``,
    so the points land in ``[-0.5 + margin, 0.5 - margin]³``."""
    if not 0.0 <= margin < 0.5:
        raise ValueError(f"margin must be in [0, 0.5), got {margin}")
    center, extent = bounding_box(vertices)
    return Normalization(center=center, scale=(1.0 - 2.0 * margin) / extent)


def used_vertices(mesh: Mesh) -> np.ndarray:
    """Vertices referenced by at least one face (unreferenced ones must not move the bounding box)."""
    return mesh.vertices[np.unique(mesh.faces)]


@nb.njit(parallel=True, cache=True)
def _normals_and_areas(vertices, faces, normals, areas):
    for f in nb.prange(faces.shape[0]):
        a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
        ux, uy, uz = vertices[b, 0] - vertices[a, 0], vertices[b, 1] - vertices[a, 1], vertices[b, 2] - vertices[a, 2]
        wx, wy, wz = vertices[c, 0] - vertices[a, 0], vertices[c, 1] - vertices[a, 1], vertices[c, 2] - vertices[a, 2]
        cx, cy, cz = uy * wz - uz * wy, uz * wx - ux * wz, ux * wy - uy * wx
        norm = np.sqrt(cx * cx + cy * cy + cz * cz)
        inverse = 1.0 / norm if norm > 0 else 0.0
        normals[f, 0], normals[f, 1], normals[f, 2] = cx * inverse, cy * inverse, cz * inverse
        areas[f] = 0.5 * norm


def face_normals_and_areas(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit face normals [F, 3] (zero for degenerate triangles) and triangle areas [F]. One compiled
    pass per face: the clean-up calls it a dozen times on surfaces of millions of faces, where numpy's
    gathers and temporaries cost ten times the arithmetic."""
    vertices = np.ascontiguousarray(vertices, dtype=np.float64)
    faces = np.ascontiguousarray(faces, dtype=np.int64).reshape(-1, 3)
    normals = np.empty((len(faces), 3))
    areas = np.empty(len(faces))
    if len(faces):
        if faces.min() < 0 or faces.max() >= len(vertices):
            raise IndexError(f"face indices must lie in [0, {len(vertices)}), got {faces.min()}..{faces.max()}")
        _normals_and_areas(vertices, faces, normals, areas)
    return normals, areas
