"""Reconstruction metrics: Chamfer distance, F-score, NMSE and SNE (see docs/metrics.md).

Why the choices below (details and citations in docs/metrics.md):

* Both meshes are put in the ground truth's ``[-0.5, 0.5]³`` frame (``fit_unit_cube`` of the GT with
  margin 0), so every number is in units of the GT's longest bounding-box side.
* Points are sampled on the *outer* surface (what can be seen from outside, TRELLIS-style) or, as a
  clearly named alternative, uniformly by area on the whole surface.
* Distances are by default measured from each sample to the *other mesh's surface* (exact closest
  point on a triangle), not to the other mesh's samples. The seed's formula takes the minimum over
  the other *sample set*; that converges to the same number as the sample count grows, but with a
  finite sample it adds a floor of about half the sample spacing (≈ 1e-3 at 1M points, the size of
  the errors we want to measure at N = 1024). Point-to-surface has no such floor. The literal
  point-to-point variant is kept as ``distance="point_to_point"``.
* Normal errors are orientation-free, ``min(|n1 - n2|², |n1 + n2|²) = 2 (1 - |cos|)`` in ``[0, 2]``:
  the meshes a UDF produces have no consistent inside.
* Everything random draws from one seeded generator: the same inputs and seed give the same numbers.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Literal

import numba
import numpy as np
from scipy.spatial import cKDTree

from model.bvh import PrimitiveIndex, SurfaceIndex
from model.mesh import Mesh, MeshError, face_normals_and_areas, fit_unit_cube, used_vertices, validate_arrays

Sampling = Literal["outer", "uniform"]
Distance = Literal["point_to_surface", "point_to_point"]


_RENDER_HALF = math.sqrt(3.0) / 2.0 * 1.001
"""Half the side of the square each view renders: the cube's circumsphere, with a margin."""


@dataclass(frozen=True)
class VisibilityConfig:
    """How "outer surface" is decided: orthographic depth renders from ``views`` directions spread
    evenly over the sphere (a Fibonacci lattice), each ``resolution`` pixels square.

    A point counts as outer when, in at least one view that looks at its face no more obliquely
    than ``max_view_angle_deg``, nothing rendered within one pixel of it lies in front of it by
    more than ``tolerance`` (unit-cube units). ``tolerance`` must stay below the gap between the
    two walls of a double-walled UDF surface (2/N: 2e-3 at N = 1024) so the inner wall is rejected.
    """

    views: int = 64
    resolution: int = 1024
    tolerance: float = 2.5e-4
    max_view_angle_deg: float = 72.5
    drop_enclosed: bool = False
    """Also count as hidden a point with solid on both sides (:func:`enclosed_mask`, half a pixel
    off the surface): a wall inside another closed body of the same mesh (parts of an assembly that
    pass through each other: a chair's seat inside its backrest), or where two bodies touch face to
    face or come closer than a pixel (a pin in its bore), as the renders hide a gap narrower than a
    pixel. The depth test lets some of those through near where the bodies meet (on armchair.obj
    2.5 % of the outer samples, all inside another body), which charges a remesh that unites the
    bodies for surface no one can see. Off in the reported protocol, so its numbers stay comparable;
    ``bench_pipeline`` and ``bench_union_quality`` report both."""

    @property
    def pixel(self) -> float:
        """A render pixel's side in unit-cube units."""
        return 2.0 * _RENDER_HALF / self.resolution


@dataclass(frozen=True)
class MetricsConfig:
    """Everything that changes a metric's value; the defaults are the project's reported protocol."""

    num_samples: int = 1_000_000
    """Points sampled on each mesh for CD, F1 and NMSE."""
    sharp_samples: int = 200_000
    """Points sampled on the GT near its sharp edges, for SNE."""
    seed: int = 0
    sampling: Sampling = "outer"
    distance: Distance = "point_to_surface"
    fscore_thresholds: tuple[float, ...] = (0.01, 0.001)
    sharp_angle_deg: float = 15.0
    """An edge is sharp when the angle between its two faces' normals exceeds this (Dora's sampling
    code is run with 15°)."""
    sharp_band: float = 0.005
    """SNE looks at surface points within this distance (unit cube) of a GT sharp edge."""
    visibility: VisibilityConfig = field(default_factory=VisibilityConfig)


@dataclass(frozen=True)
class SurfaceSamples:
    """Points on a mesh with the index and unit normal of the triangle each lies on."""

    points: np.ndarray
    face_ids: np.ndarray
    normals: np.ndarray

    def __len__(self) -> int:
        return int(self.points.shape[0])

    def subset(self, mask: np.ndarray) -> "SurfaceSamples":
        return SurfaceSamples(self.points[mask], self.face_ids[mask], self.normals[mask])

    @staticmethod
    def concatenate(parts: list["SurfaceSamples"]) -> "SurfaceSamples":
        return SurfaceSamples(
            np.concatenate([p.points for p in parts]),
            np.concatenate([p.face_ids for p in parts]),
            np.concatenate([p.normals for p in parts]),
        )


# --------------------------------------------------------------------------------------------------
# Geometry helpers
# --------------------------------------------------------------------------------------------------


def sample_surface(vertices: np.ndarray, faces: np.ndarray, count: int, rng: np.random.Generator) -> SurfaceSamples:
    """``count`` points uniform by area over the whole surface (inner walls included)."""
    normals, areas = face_normals_and_areas(vertices, faces)
    total = float(areas.sum())
    if not total > 0.0:
        raise MeshError("cannot sample a mesh whose triangles all have zero area")
    cdf = np.cumsum(areas)
    face_ids = np.searchsorted(cdf, rng.random(count) * cdf[-1], side="right")
    np.minimum(face_ids, faces.shape[0] - 1, out=face_ids)
    r1 = np.sqrt(rng.random(count))
    r2 = rng.random(count)
    tri = vertices[faces[face_ids]]
    points = (
        (1.0 - r1)[:, None] * tri[:, 0]
        + (r1 * (1.0 - r2))[:, None] * tri[:, 1]
        + (r1 * r2)[:, None] * tri[:, 2]
    )
    return SurfaceSamples(points, face_ids.astype(np.int64), normals[face_ids])


def fibonacci_directions(count: int) -> np.ndarray:
    """``count`` unit vectors spread evenly over the sphere (deterministic)."""
    i = np.arange(count, dtype=np.float64) + 0.5
    z = 1.0 - 2.0 * i / count
    r = np.sqrt(np.maximum(0.0, 1.0 - z * z))
    phi = i * math.pi * (3.0 - math.sqrt(5.0))
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def _view_basis(direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    helper = np.array([1.0, 0.0, 0.0]) if abs(direction[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = np.cross(direction, helper)
    e1 /= np.linalg.norm(e1)
    return e1, np.cross(direction, e1)


@numba.njit(cache=True)
def _rasterize(px: np.ndarray, py: np.ndarray, depth: np.ndarray, faces: np.ndarray, res: int):
    """Z-buffer of triangle ids at pixel centres (orthographic; smaller depth is nearer)."""
    zbuf = np.full((res, res), np.inf, dtype=np.float32)
    fid = np.full((res, res), -1, dtype=np.int32)
    for f in range(faces.shape[0]):
        a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
        x0, y0, z0 = px[a], py[a], depth[a]
        x1, y1, z1 = px[b], py[b], depth[b]
        x2, y2, z2 = px[c], py[c], depth[c]
        area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
        if area == 0.0:
            continue
        xmin = max(int(math.ceil(min(x0, x1, x2) - 0.5)), 0)
        xmax = min(int(math.floor(max(x0, x1, x2) - 0.5)), res - 1)
        ymin = max(int(math.ceil(min(y0, y1, y2) - 0.5)), 0)
        ymax = min(int(math.floor(max(y0, y1, y2) - 0.5)), res - 1)
        inv = 1.0 / area
        for j in range(ymin, ymax + 1):
            cy = j + 0.5
            for i in range(xmin, xmax + 1):
                cx = i + 0.5
                w0 = ((x1 - cx) * (y2 - cy) - (x2 - cx) * (y1 - cy)) * inv
                w1 = ((x2 - cx) * (y0 - cy) - (x0 - cx) * (y2 - cy)) * inv
                w2 = 1.0 - w0 - w1
                if w0 < 0.0 or w1 < 0.0 or w2 < 0.0:
                    continue
                z = np.float32(w0 * z0 + w1 * z1 + w2 * z2)
                if z < zbuf[j, i]:
                    zbuf[j, i] = z
                    fid[j, i] = f
    return fid


@numba.njit(cache=True)
def _plane_depth(f: int, x: float, y: float, px, py, depth, faces) -> float:
    """Depth at (x, y) of the plane through triangle ``f`` (inf when it is seen edge-on)."""
    a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
    x0, y0 = px[a], py[a]
    area = (px[b] - x0) * (py[c] - y0) - (px[c] - x0) * (py[b] - y0)
    if abs(area) < 1e-9:
        return np.inf
    w1 = ((x - x0) * (py[c] - y0) - (px[c] - x0) * (y - y0)) / area
    w2 = ((px[b] - x0) * (y - y0) - (x - x0) * (py[b] - y0)) / area
    return (1.0 - w1 - w2) * depth[a] + w1 * depth[b] + w2 * depth[c]


@numba.njit(cache=True, parallel=True)
def _mark_visible(points, normals, point_faces, e1, e2, w, half, scale, fid, px, py, depth, faces, tol, min_cos, visible):
    """Mark points that nothing within one pixel occludes by more than ``tol`` in this view
    (already visible points are skipped)."""
    res = fid.shape[0]
    for k in numba.prange(points.shape[0]):
        if visible[k]:
            continue
        if abs(normals[k, 0] * w[0] + normals[k, 1] * w[1] + normals[k, 2] * w[2]) < min_cos:
            continue
        x = (points[k, 0] * e1[0] + points[k, 1] * e1[1] + points[k, 2] * e1[2] + half) * scale
        y = (points[k, 0] * e2[0] + points[k, 1] * e2[1] + points[k, 2] * e2[2] + half) * scale
        d = points[k, 0] * w[0] + points[k, 1] * w[1] + points[k, 2] * w[2]
        i0 = int(math.floor(x))
        j0 = int(math.floor(y))
        seen = False
        for step in range(9):  # own pixel first (cell 4 of the 3x3 block): it decides most points
            cell = 4 if step == 0 else (step - 1 if step <= 4 else step)
            j = j0 + cell // 3 - 1
            i = i0 + cell % 3 - 1
            if j < 0 or j >= res or i < 0 or i >= res:
                seen = True
                break
            f = fid[j, i]
            if f < 0 or f == point_faces[k]:
                seen = True
                break
            if d <= _plane_depth(f, x, y, px, py, depth, faces) + tol:
                seen = True
                break
        if seen:
            visible[k] = True


def outer_surface_mask(
    vertices: np.ndarray, faces: np.ndarray, samples: SurfaceSamples, config: VisibilityConfig = VisibilityConfig()
) -> np.ndarray:
    """Which samples are visible from outside the mesh (see :class:`VisibilityConfig`).

    Meant for meshes already in the unit cube: the renders cover the sphere of radius √3/2 around
    the origin, which holds the whole ``[-0.5, 0.5]³`` cube whatever the direction.
    """
    res = int(config.resolution)
    half = _RENDER_HALF
    scale = res / (2.0 * half)
    min_cos = math.cos(math.radians(config.max_view_angle_deg))
    visible = np.zeros(len(samples), dtype=np.bool_)
    if len(samples) == 0:
        return visible
    faces = np.ascontiguousarray(faces, dtype=np.int64)
    points = np.ascontiguousarray(samples.points, dtype=np.float64)
    normals = np.ascontiguousarray(samples.normals, dtype=np.float64)
    for direction in fibonacci_directions(int(config.views)):
        if visible.all():
            break
        e1, e2 = _view_basis(direction)
        px = (vertices @ e1 + half) * scale
        py = (vertices @ e2 + half) * scale
        depth = vertices @ direction
        fid = _rasterize(px, py, depth, faces, res)
        _mark_visible(points, normals, samples.face_ids, e1, e2, direction, half, scale, fid, px, py, depth,
                      faces, float(config.tolerance), min_cos, visible)
    if config.drop_enclosed and visible.any():
        visible[visible] = ~enclosed_mask(vertices, faces, samples.subset(visible), 0.5 * config.pixel)
    return visible


@numba.njit(cache=True, inline="always")
def _cell_span(lo, hi, origin, cell, cells):
    """The grid cells (i0, i1, j0, j1, inclusive) that a bounding box from ``lo`` to ``hi`` covers in x, y."""
    return (int((lo[0] - origin[0]) / cell), min(int((hi[0] - origin[0]) / cell), cells - 1),
            int((lo[1] - origin[1]) / cell), min(int((hi[1] - origin[1]) / cell), cells - 1))


@numba.njit(cache=True)
def _bin_triangles(lo, hi, origin, cell, cells):
    """Triangles per cell of a ``cells``² grid over x, y (a counting sort of their bounding boxes)."""
    n = lo.shape[0]
    count = np.zeros(cells * cells + 1, dtype=np.int64)
    for t in range(n):
        i0, i1, j0, j1 = _cell_span(lo[t], hi[t], origin, cell, cells)
        for j in range(j0, j1 + 1):
            for i in range(i0, i1 + 1):
                count[j * cells + i + 1] += 1
    start = np.cumsum(count)
    fill = start[:-1].copy()
    items = np.empty(start[-1], dtype=np.int64)
    for t in range(n):
        i0, i1, j0, j1 = _cell_span(lo[t], hi[t], origin, cell, cells)
        for j in range(j0, j1 + 1):
            for i in range(i0, i1 + 1):
                items[fill[j * cells + i]] = t
                fill[j * cells + i] += 1
    return start, items


@numba.njit(cache=True, parallel=True)
def _inside_any(points, tri, body, num_bodies, origin, cell, cells, start, items):
    """Per point: whether the ray from it along +z crosses some closed body an odd number of times
    (each body's own parity: overlapping bodies do not cancel, and winding does not matter)."""
    out = np.zeros(points.shape[0], dtype=np.bool_)
    for k in numba.prange(points.shape[0]):
        x, y, z = points[k, 0], points[k, 1], points[k, 2]
        i = int(math.floor((x - origin[0]) / cell))
        j = int(math.floor((y - origin[1]) / cell))
        if i < 0 or j < 0 or i >= cells or j >= cells:
            continue
        parity = np.zeros(num_bodies, dtype=np.bool_)
        c = j * cells + i
        for m in range(start[c], start[c + 1]):
            t = items[m]
            ax, ay = tri[t, 0, 0] - x, tri[t, 0, 1] - y
            bx, by = tri[t, 1, 0] - x, tri[t, 1, 1] - y
            cx, cy = tri[t, 2, 0] - x, tri[t, 2, 1] - y
            w0 = bx * cy - by * cx  # twice the signed areas seen from the ray: all one sign inside
            w1 = cx * ay - cy * ax
            w2 = ax * by - ay * bx
            if not ((w0 > 0 and w1 > 0 and w2 > 0) or (w0 < 0 and w1 < 0 and w2 < 0)):
                continue
            hit = (w0 * tri[t, 0, 2] + w1 * tri[t, 1, 2] + w2 * tri[t, 2, 2]) / (w0 + w1 + w2)
            if hit > z:
                parity[body[t]] = not parity[body[t]]
        for b in range(num_bodies):
            if parity[b]:
                out[k] = True
                break
    return out


def enclosed_mask(vertices: np.ndarray, faces: np.ndarray, samples: SurfaceSamples, offset: float) -> np.ndarray:
    """Which samples have solid on both sides: ``offset`` off the surface along the sample's normal,
    both ways, each point lies inside some closed body (a welded piece without boundary) of the mesh.
    That is a wall inside another body, and also the interface where two bodies touch face to face
    (a pin in its hole: the sample lies on the other body's surface, so a strict inside test cannot
    decide it). A point on a body's outer surface has air on one side; an open sheet in the open has
    air on both. A ray that grazes an edge exactly is a measure-zero event for the offset points and
    is not resolved."""
    from model.contour import InputTopology

    topology = InputTopology.of(vertices, faces)
    bodies, body = np.unique(topology.piece, return_inverse=True)  # piece labels are not consecutive
    closed_faces = np.flatnonzero(~topology.open_piece[topology.piece])
    if len(samples) == 0 or len(closed_faces) == 0:
        return np.zeros(len(samples), dtype=bool)
    tri = np.ascontiguousarray(vertices[faces[closed_faces]], dtype=np.float64)
    lo, hi = tri.min(axis=1), tri.max(axis=1)
    origin = lo.min(axis=0)
    side = float(max((hi.max(axis=0) - origin)[:2].max(), 1e-12))
    cells = int(min(512, max(8, math.sqrt(len(tri)))))
    cell = side / cells * (1.0 + 1e-9)
    start, items = _bin_triangles(lo, hi, origin, cell, cells)
    ids = body[closed_faces]
    solid = [_inside_any(np.ascontiguousarray(samples.points + sign * offset * samples.normals, dtype=np.float64),
                         tri, ids, len(bodies), origin, cell, cells, start, items) for sign in (1.0, -1.0)]
    return solid[0] & solid[1]


def exposed_share(mesh: Mesh, count: int = 200_000, seed: int = 0) -> float:
    """The share of a mesh's area that is not enclosed (:func:`enclosed_mask`, half a render pixel
    off the surface in the unit cube): the area a solid's remesh can keep. An assembly's parts that
    pass through each other (a chair's seat inside its backrest, 112 gears and pins) carry surface
    inside other bodies that no outer surface has; an output's area is compared with this share of
    the input's, beside the plain ratio."""
    vertices = fit_unit_cube(mesh.vertices).to_unit(mesh.vertices)
    samples = sample_surface(vertices, mesh.faces, count, np.random.default_rng(seed))
    return 1.0 - float(enclosed_mask(vertices, mesh.faces, samples, 0.5 * VisibilityConfig().pixel).mean())


def sample_outer_surface(
    vertices: np.ndarray,
    faces: np.ndarray,
    count: int,
    rng: np.random.Generator,
    config: VisibilityConfig = VisibilityConfig(),
    max_rounds: int = 8,
) -> SurfaceSamples:
    """``count`` points uniform by area over the part of the surface visible from outside.

    Draws uniform candidates and keeps the visible ones, drawing more until ``count`` are kept.
    Raises :class:`MeshError` when (almost) nothing is visible.
    """
    kept: list[SurfaceSamples] = []
    have = 0
    fraction = 1.0
    for _ in range(max_rounds):
        need = count - have
        if need <= 0:
            break
        draw = int(min(max(need / max(fraction, 0.05) * 1.1, 1024), 8 * count + 1024))
        candidates = sample_surface(vertices, faces, draw, rng)
        mask = outer_surface_mask(vertices, faces, candidates, config)
        fraction = max(float(mask.mean()), 1e-3)
        part = candidates.subset(mask)
        kept.append(part)
        have += len(part)
    if have == 0:
        raise MeshError("no part of the surface is visible from outside")
    merged = SurfaceSamples.concatenate(kept)
    return merged.subset(np.arange(min(count, len(merged))))


# --------------------------------------------------------------------------------------------------
# Sharp edges
# --------------------------------------------------------------------------------------------------


def sharp_edges(vertices: np.ndarray, faces: np.ndarray, angle_deg: float = 15.0) -> np.ndarray:
    """Edges ``[E, 2]`` (vertex indices) shared by exactly two faces whose normals differ by more
    than ``angle_deg`` — the dihedral-angle test of Dora's sharp-edge sampling. Vertices at the
    same position count as one.

    Boundary and non-manifold edges are never sharp. When two neighbours are wound inconsistently
    (both run the shared edge the same way) one normal is flipped first, so a badly oriented but
    flat region does not look like a 180° crease.
    """
    normals, _ = face_normals_and_areas(vertices, faces)
    # Weld exact duplicates first: STL files and OBJ files with UV seams repeat a position per
    # triangle or per seam, which would hide every edge between the copies.
    _, first_copy, weld = np.unique(vertices, axis=0, return_index=True, return_inverse=True)
    faces = first_copy[weld.ravel()][faces]
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    owner = np.tile(np.arange(faces.shape[0]), 3)
    key = np.sort(directed, axis=1)
    code = key[:, 0] * np.int64(vertices.shape[0]) + key[:, 1]
    _, inverse, counts = np.unique(code, return_inverse=True, return_counts=True)
    manifold = counts[inverse] == 2
    idx = np.flatnonzero(manifold)
    order = idx[np.argsort(inverse[idx], kind="stable")]
    first, second = order[0::2], order[1::2]
    n1 = normals[owner[first]]
    n2 = normals[owner[second]]
    same_direction = directed[first, 0] == directed[second, 0]
    n2 = np.where(same_direction[:, None], -n2, n2)
    cos = np.einsum("ij,ij->i", n1, n2)
    valid = (np.linalg.norm(n1, axis=1) > 0) & (np.linalg.norm(n2, axis=1) > 0)
    sharp = valid & (cos < math.cos(math.radians(angle_deg)))
    return key[first[sharp]]


# --------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------


def normal_error(n1: np.ndarray, n2: np.ndarray) -> np.ndarray:
    """Orientation-free squared normal error ``min(|n1-n2|², |n1+n2|²) = 2(1 - |n1·n2|)`` in [0, 2]."""
    return 2.0 * (1.0 - np.minimum(np.abs(np.einsum("ij,ij->i", n1, n2)), 1.0))


def fscore(precision: float, recall: float) -> float:
    """Harmonic mean of precision and recall (0 when both are 0)."""
    return 0.0 if precision + recall == 0.0 else 2.0 * precision * recall / (precision + recall)


@dataclass
class _Target:
    """What distances are measured to: the other mesh's surface, or its sample set."""

    samples: SurfaceSamples
    index: SurfaceIndex | None = None
    tree: cKDTree | None = None

    def nearest(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Distance from each point to the target, the unit normal there, and the nearest point."""
        if self.index is not None:
            dist, prim, closest = self.index.closest_points(points)
            return dist, self.index.normals[prim], closest
        dist, idx = self.tree.query(points, k=1, workers=-1)
        return dist, self.samples.normals[idx], self.samples.points[idx]


def normalize_pair(gt: Mesh, pred: Mesh) -> tuple[Mesh, Mesh]:
    """Both meshes in the GT's ``[-0.5, 0.5]³`` frame (margin 0)."""
    norm = fit_unit_cube(used_vertices(gt), margin=0.0)
    return (
        Mesh(norm.to_unit(gt.vertices), gt.faces),
        Mesh(norm.to_unit(pred.vertices), pred.faces),
    )


def sample_mesh(mesh: Mesh, count: int, rng: np.random.Generator, config: MetricsConfig = MetricsConfig()) -> SurfaceSamples:
    """Samples as the metrics take them: outer surface or uniform, per ``config.sampling``."""
    if config.sampling == "outer":
        return sample_outer_surface(mesh.vertices, mesh.faces, count, rng, config.visibility)
    if config.sampling == "uniform":
        return sample_surface(mesh.vertices, mesh.faces, count, rng)
    raise ValueError(f"unknown sampling '{config.sampling}' (expected 'outer' or 'uniform')")


def sample_sharp_band(gt: Mesh, edges: np.ndarray, count: int, rng: np.random.Generator,
                      config: MetricsConfig = MetricsConfig()) -> SurfaceSamples:
    """Points uniform by area on ``gt`` within ``config.sharp_band`` of one of ``edges`` (and, with
    outer sampling, visible from outside). Candidates come only from the triangles near the edges
    (a vertex or the centroid within the band, or a corner on a sharp edge), so thin bands are cheap.
    """
    band = config.sharp_band
    edge_index = PrimitiveIndex(gt.vertices, edges)
    on_edge = np.zeros(gt.num_vertices, dtype=bool)
    on_edge[np.unique(edges)] = True
    near_vertex = edge_index.distance(gt.vertices) < band
    centroid_near = edge_index.distance(gt.vertices[gt.faces].mean(axis=1)) < band
    touching = (on_edge | near_vertex)[gt.faces].any(axis=1) | centroid_near
    faces_idx = np.flatnonzero(touching)
    sub_faces = gt.faces[faces_idx]
    kept: list[SurfaceSamples] = []
    have = 0
    fraction = 1.0
    for _ in range(8):
        need = count - have
        if need <= 0:
            break
        draw = int(min(max(need / max(fraction, 0.02) * 1.1, 1024), 20 * count + 1024))
        cand = sample_surface(gt.vertices, sub_faces, draw, rng)
        cand = SurfaceSamples(cand.points, faces_idx[cand.face_ids], cand.normals)
        mask = edge_index.distance(cand.points) < band
        if config.sampling == "outer" and mask.any():
            idx = np.flatnonzero(mask)
            mask[idx] = outer_surface_mask(gt.vertices, gt.faces, cand.subset(idx), config.visibility)
        fraction = max(float(mask.mean()), 1e-3)
        part = cand.subset(mask)
        kept.append(part)
        have += len(part)
    merged = SurfaceSamples.concatenate(kept)
    return merged.subset(np.arange(min(count, len(merged))))


def _streams(seed: int) -> list[np.random.Generator]:
    """Independent generators for GT samples, prediction samples and SNE samples."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)]


def sample_pair(gt: Mesh, pred: Mesh, config: MetricsConfig = MetricsConfig()
                ) -> tuple[Mesh, Mesh, SurfaceSamples, SurfaceSamples]:
    """Validate both meshes, put them in the GT's unit cube and sample them exactly as
    :func:`compute_metrics` does (same seed, same points): ``(gt_n, pred_n, gt_samples, pred_samples)``."""
    gt = validate_arrays(gt.vertices, gt.faces, name="ground truth")
    pred = validate_arrays(pred.vertices, pred.faces, name="prediction")
    gt_n, pred_n = normalize_pair(gt, pred)
    streams = _streams(config.seed)
    return gt_n, pred_n, sample_mesh(gt_n, config.num_samples, streams[0], config), sample_mesh(
        pred_n, config.num_samples, streams[1], config
    )


def compute_metrics(gt: Mesh, pred: Mesh, config: MetricsConfig = MetricsConfig()) -> dict[str, float]:
    """CD, F1@ξ, NMSE and SNE of ``pred`` against ``gt`` (definitions in docs/metrics.md).

    Returns a dict with ``CD``, ``F1@<ξ>`` for each threshold, ``NMSE``, ``SNE`` and extras:
    ``Comp``, ``Acc``, ``CD_squared``, ``P@<ξ>``/``R@<ξ>``, ``NMSE_gt_to_pred``/``NMSE_pred_to_gt``,
    ``SNE_gt_to_pred``/``SNE_pred_to_gt``, point counts, the number of GT sharp edges and the
    seconds spent. F-scores are fractions in [0, 1]. SNE is NaN when the GT has no sharp edge.
    Raises :class:`MeshError` for an empty or broken mesh.
    """
    start = time.perf_counter()
    if config.distance not in ("point_to_surface", "point_to_point"):
        raise ValueError(f"unknown distance '{config.distance}' (expected 'point_to_surface' or 'point_to_point')")
    gt_n, pred_n, gt_samples, pred_samples = sample_pair(gt, pred, config)

    def target(mesh: Mesh, samples: SurfaceSamples) -> _Target:
        if config.distance == "point_to_surface":
            return _Target(samples, index=SurfaceIndex(mesh.vertices, mesh.faces))
        return _Target(samples, tree=cKDTree(samples.points))

    to_gt, to_pred = target(gt_n, gt_samples), target(pred_n, pred_samples)
    comp_d, comp_n, _ = to_pred.nearest(gt_samples.points)  # GT -> prediction (completeness)
    acc_d, acc_n, acc_foot = to_gt.nearest(pred_samples.points)  # prediction -> GT (accuracy)
    comp_err = normal_error(gt_samples.normals, comp_n)
    acc_err = normal_error(pred_samples.normals, acc_n)

    result: dict[str, float] = {}
    comp, acc = float(comp_d.mean()), float(acc_d.mean())
    result["CD"] = 0.5 * (comp + acc)
    for xi in config.fscore_thresholds:
        precision = float((acc_d < xi).mean())
        recall = float((comp_d < xi).mean())
        result[f"F1@{xi:g}"] = fscore(precision, recall)
        result[f"P@{xi:g}"] = precision
        result[f"R@{xi:g}"] = recall
    result["NMSE"] = 0.5 * (float(comp_err.mean()) + float(acc_err.mean()))
    result["SNE"] = float("nan")
    result["Comp"] = comp
    result["Acc"] = acc
    result["CD_squared"] = 0.5 * (float(np.mean(comp_d**2)) + float(np.mean(acc_d**2)))
    result["NMSE_gt_to_pred"] = float(comp_err.mean())
    result["NMSE_pred_to_gt"] = float(acc_err.mean())

    edges = sharp_edges(gt_n.vertices, gt_n.faces, config.sharp_angle_deg)
    result["sharp_edges"] = float(len(edges))
    result["num_sharp_points"] = 0.0
    if len(edges) and config.sharp_samples > 0:
        band = sample_sharp_band(gt_n, edges, config.sharp_samples, _streams(config.seed)[2], config)
        if len(band):
            _, band_n, _ = to_pred.nearest(band.points)
            gt_to_pred = float(normal_error(band.normals, band_n).mean())
            result["SNE_gt_to_pred"] = gt_to_pred
            # The other direction: prediction samples whose closest GT point lies in the band.
            in_band = PrimitiveIndex(gt_n.vertices, edges).distance(acc_foot) < config.sharp_band
            if in_band.any():
                result["SNE_pred_to_gt"] = float(acc_err[in_band].mean())
                result["SNE"] = 0.5 * (gt_to_pred + result["SNE_pred_to_gt"])
            else:
                result["SNE"] = gt_to_pred
            result["num_sharp_points"] = float(len(band))
    result["num_gt_points"] = float(len(gt_samples))
    result["num_pred_points"] = float(len(pred_samples))
    result["seconds"] = time.perf_counter() - start
    headline = ["CD", *[f"F1@{xi:g}" for xi in config.fscore_thresholds], "NMSE", "SNE"]
    return {**{k: result[k] for k in headline}, **{k: v for k, v in result.items() if k not in headline}}


def with_overrides(config: MetricsConfig, **overrides: object) -> MetricsConfig:
    """A copy of ``config`` with the given fields replaced (``None`` values are ignored)."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    return replace(config, **clean) if clean else config
