"""Carrying an input's per-face and per-corner attributes (material indices, colours) to a remesh.

Each output face takes the material of the input face under it, and each output vertex the colour
of the input surface under it, interpolated across that input triangle's corners. "Under" is the
nearest point of the input surface (an exact closest-point query, :class:`~model.bvh.SurfaceIndex`):
in direct mode every output vertex already lies on the input (the contour puts it there), so this is
the triangle it sits on; in VAE mode the output only approximates the input, so an output vertex
takes the colour of the nearest input point — where the network moved the surface by more than
colour detail is wide, the colours blur or shift with it. A quad's two triangles share one material
(taken at the quad's centre): a polygon has one material in Blender.
"""

from __future__ import annotations

import numpy as np

from .bvh import SurfaceIndex
from .mesh import Mesh
from .quad_layout import quad_corners


def _barycentric(points: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Barycentric weights [P, 3] of points on triangles (a, b, c), clamped and renormalised (a
    closest point lies on the triangle up to rounding)."""
    v0, v1, v2 = b - a, c - a, points - a
    d00 = np.einsum("ij,ij->i", v0, v0)
    d01 = np.einsum("ij,ij->i", v0, v1)
    d11 = np.einsum("ij,ij->i", v1, v1)
    d20 = np.einsum("ij,ij->i", v2, v0)
    d21 = np.einsum("ij,ij->i", v2, v1)
    denom = d00 * d11 - d01 * d01
    safe = np.where(denom > 0, denom, 1.0)
    v = np.where(denom > 0, (d11 * d20 - d01 * d21) / safe, 1.0 / 3.0)
    w = np.where(denom > 0, (d00 * d21 - d01 * d20) / safe, 1.0 / 3.0)
    weights = np.clip(np.stack([1.0 - v - w, v, w], axis=1), 0.0, 1.0)
    return weights / np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)


def face_centres(mesh: Mesh) -> np.ndarray:
    """Per triangle, the point its material is read at: the centroid, or its quad's centre."""
    centres = mesh.vertices[mesh.faces].mean(axis=1)
    if mesh.num_quads:
        quad_centres = mesh.vertices[quad_corners(mesh.faces, mesh.num_quads)].mean(axis=1)
        centres[: 2 * mesh.num_quads] = np.repeat(quad_centres, 2, axis=0)
    return centres


def transfer_attributes(source: Mesh, target: Mesh, material: np.ndarray | None = None,
                        colors: np.ndarray | None = None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``target``'s material per face [F'] and colours per vertex [V', C] from ``source``'s material
    per face [F] and colours per face corner [F, 3, C] (both meshes in one frame; None in, None out)."""
    if material is None and colors is None:
        return None, None
    index = SurfaceIndex(source.vertices, source.faces)
    out_material = out_colors = None
    if material is not None:
        _, prim = index.query(face_centres(target))
        out_material = np.asarray(material)[index.face_ids[prim]].astype(np.int32)
    if colors is not None:
        _, prim, points = index.closest_points(target.vertices)
        face = index.face_ids[prim]
        corners = source.vertices[source.faces[face]]
        weights = _barycentric(points, corners[:, 0], corners[:, 1], corners[:, 2])
        corner_colors = np.asarray(colors, dtype=np.float64)[face]  # [V', 3, C]
        out_colors = np.einsum("vk,vkc->vc", weights, corner_colors).astype(np.float32)
    return out_material, out_colors


__all__ = ["face_centres", "transfer_attributes"]
