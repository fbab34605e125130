"""How a mesh with quads is stored, numpy only (the Blender add-on carries this file as it is).

A mesh with quads is a triangle mesh whose first ``2·Q`` faces are ``Q`` quads, each as the
consecutive pair ``(a, b, c), (a, c, d)`` (the quad ``a b c d`` split along ``a–c``): every consumer
that wants triangles reads ``faces`` as it always did, and a writer or the wire that can carry
polygons reads quad ``q`` as ``faces[2q]`` plus the last corner of ``faces[2q + 1]``
(:func:`quad_corners`). :mod:`model.quads` makes such meshes.
"""

from __future__ import annotations

import numpy as np


def quad_corners(faces: np.ndarray, num_quads: int) -> np.ndarray:
    """The quads [Q, 4] of a mesh stored as :func:`model.quads.pair_quads` leaves it."""
    pairs = np.asarray(faces)[: 2 * num_quads].reshape(num_quads, 2, 3)
    return np.concatenate([pairs[:, 0, :], pairs[:, 1, 2:]], axis=1)


def check_quad_pairs(faces: np.ndarray, num_quads: int) -> None:
    """Raise ValueError unless the first ``2·num_quads`` faces are quads as :func:`model.quads.pair_quads` stores
    them (what a reader of the wire or of a file must be able to rely on)."""
    faces = np.asarray(faces)
    if num_quads < 0 or 2 * num_quads > len(faces):
        raise ValueError(f"{num_quads} quads need {2 * num_quads} faces, the mesh has {len(faces)}")
    pairs = faces[: 2 * num_quads].reshape(num_quads, 2, 3)
    bad = (pairs[:, 0, 0] != pairs[:, 1, 0]) | (pairs[:, 0, 2] != pairs[:, 1, 1])
    if bad.any():
        q = int(np.flatnonzero(bad)[0])
        raise ValueError(f"quad {q}: faces {2 * q} and {2 * q + 1} are not one quad split along its first diagonal")


__all__ = ["check_quad_pairs", "quad_corners"]
