"""Closing the holes a surface has where its field has none.

A surface extracted from a decoded field opens where the field misleads the extraction — most often
along a seam between two blocks whose values disagree, where the zero set rises. The field itself
still says the surface runs through such a hole; a real hole of the input says the opposite, its
middle as far from the zero set as the hole is wide. So a hole is closed only when the patch that
closes it lies near the zero set by the field.

The patch: a fan from the hole's centroid to its boundary, one boundary being a simple cycle
(:func:`model.edges.simple_cycles`: holes touching at a vertex are closed apart, or that vertex's
spoke would get four faces). It is kept when the field puts the centroid, and the points a third and
two thirds of the way from it to each boundary vertex, within ``max_distance`` voxels of the zero
set. With ``settle`` (a function that moves points onto the zero set: the pipeline passes
:func:`model.zero_set.settled_points`'s) the fan starts from the centroid settled: the centroid of a
hole in a curved or folded surface lies off it though the surface runs through the hole (on the
exact field of Suzanne at N=512, four holes where the eyes pass through the head: centroids 0.8–1.9
voxels off, the fans from the settled centres within 1.5–1.6 voxels). A real hole's settled centre
is no point of the zero set: on the axis of a round hole of radius r every point is r or more from
the rim, so the settled centre must also lie within :data:`SETTLED_ON_SURFACE` of the zero set (a
pot's opening 4.3 voxels across, whose fan from the settled centre passes the 1.6-voxel test, stays
open).

(Ear clipping instead of the fan — shortest new edge first — closed fewer holes on the decoded fields
of the shared meshes: its new edges often join two sides of a crack already joined elsewhere, which
would give an edge three faces, and the bunny kept 51 loops against the fan's 25.)
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .cleanup import add_fans, loop_centres, loop_perimeters, sample_field
from .edges import boundary_half_edges, simple_cycles
from .grid import TRUNCATION_VOXELS, SparseField

SETTLED_ON_SURFACE = 0.75
"""Voxels: how near the zero set a hole's settled centre must lie for the surface to run through the
hole (the four holes at Suzanne's eyes: 0.24–0.43; a sample of the field between voxels reads up to
half a voxel on the surface itself, where the distance's V is rounded by the interpolation)."""


def close_false_holes(vertices: np.ndarray, faces: np.ndarray, field: SparseField, max_perimeter: float,
                      max_distance: float,
                      settle: Callable[[np.ndarray, SparseField], np.ndarray] | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """The mesh with each hole shorter than ``max_perimeter`` voxels closed by a fan (one new vertex
    per hole) where the field puts the fan within ``max_distance`` voxels of its zero set (see the
    module's docstring). Faces must be oriented consistently around each hole: a fan face runs its
    boundary edge the other way."""
    if len(faces) == 0:
        return vertices, faces
    half, on_border = boundary_half_edges(len(vertices), faces)
    border = half[on_border]
    cycle, count = simple_cycles(border, len(vertices))
    border, cycle = border[cycle >= 0], cycle[cycle >= 0]
    if count == 0:
        return vertices, faces
    centre = loop_centres(vertices, border, cycle, count)
    if settle is not None:
        centre = settle(centre, field)
    at_centre = sample_field(field, centre)
    farthest = at_centre.copy()
    for t in (1.0 / 3.0, 2.0 / 3.0):
        np.maximum.at(farthest, cycle, sample_field(field, (1.0 - t) * centre[cycle] + t * vertices[border[:, 0]]))
    close = (loop_perimeters(vertices, border, cycle, count) < max_perimeter) & (np.bincount(cycle, minlength=count) >= 3)
    close &= farthest * TRUNCATION_VOXELS <= max_distance
    if settle is not None:  # the surface runs through the hole only if the settled centre lies on it
        close &= at_centre * TRUNCATION_VOXELS <= SETTLED_ON_SURFACE
    if not close.any():
        return vertices, faces
    return add_fans(vertices, faces, border, cycle, close, centre)


__all__ = ["close_false_holes"]
