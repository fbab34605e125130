"""Training shapes that the project makes itself: a seeded procedural generator, plus the real
meshes of a folder.

``generate_shapes(count, seed)`` yields ``(name, Mesh)`` pairs. Shape ``i`` depends only on
``(seed, i)`` (its random stream is ``SeedSequence([seed, i])``), so any prefix of a longer run is
the shorter run, and workers may build disjoint index ranges with :func:`make_shape`.

Families (see docs/synthetic.md for the weights and the reasons):

* ``primitive``   boxes, rounded boxes, cylinders, cones, spheres/ellipsoids, tori, capsules, prisms, pyramids
* ``csg``         real booleans of primitives (drilled hole patterns, pockets, slots, bosses, trims)
* ``extrusion``   stars, gears, random polygons and rectilinear outlines with holes, extruded (twist/taper)
* ``sweep``       polygonal profiles swept along smooth curves; lathe (revolved) profiles, full or cut away
* ``thin_shell``  closed thin walls: sealed hollow solids, open-top containers, pipes, offset blobs
* ``open_sheet``  zero-thickness displaced/bent/folded patches with holes (open boundary)
* ``tube``        circles swept along random curves, helices and closed knots; open or capped
* ``blob``        noisy star-shaped icospheres and noisy metaballs (marching cubes)
* ``assembly``    2-5 parts of the other families, scattered apart, stacked (touching), in rows or rings

Every shape gets an anisotropic scale and a rotation (random, or one of the 24 axis-aligned ones,
so that axis-aligned sharp edges stay common), then is centred with its longest side 1.

Booleans, extrusions and revolutions use manifold3d (pinned in pyproject.toml): trimesh 5.2 has no
boolean engine of its own, and emulating CSG with overlapping unions would put interior walls into
the data (the UDF is unsigned, so they would be learnt as real surfaces) and could not make holes.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from model.edges import boundary_half_edges
from model.geometry import compact, signed_volumes, vertex_normals
from model.mesh import SUPPORTED_EXTENSIONS, Mesh, MeshError, load_mesh, validate_arrays

GENERATOR_VERSION = 1
"""Bumped whenever the shape made for some (seed, index) changes, so caches can be keyed on it."""

MAX_FACES = 50_000
"""No generated shape has more triangles than this (data preparation stays fast)."""

FAMILY_WEIGHTS: dict[str, float] = {
    "primitive": 0.08,
    "csg": 0.18,
    "extrusion": 0.12,
    "sweep": 0.08,
    "thin_shell": 0.12,
    "open_sheet": 0.10,
    "tube": 0.08,
    "blob": 0.10,
    "assembly": 0.14,
}
FAMILIES = tuple(FAMILY_WEIGHTS)

_ATTEMPTS = 12

Part = tuple[np.ndarray, np.ndarray]  # (vertices float64 [V, 3], faces int64 [F, 3])


class _Retry(Exception):
    """This draw produced something unusable (empty boolean, too many faces): draw again."""


# --------------------------------------------------------------------------------------------
# manifold3d helpers

_MANIFOLD: Any = None


def _m() -> Any:
    global _MANIFOLD
    if _MANIFOLD is None:
        try:
            import manifold3d
        except ImportError as exc:  # pragma: no cover - the dependency is pinned
            raise ImportError("backend.synthetic needs manifold3d (pinned in pyproject.toml): "
                              "pip install manifold3d==3.5.4") from exc
        _MANIFOLD = manifold3d
    return _MANIFOLD


def _from_manifold(solid: Any) -> Part:
    mesh = solid.to_mesh64()
    vertices = np.asarray(mesh.vert_properties, dtype=np.float64)[:, :3].copy()
    faces = np.asarray(mesh.tri_verts, dtype=np.int64).copy()
    if faces.shape[0] == 0:
        raise _Retry("empty solid")
    return vertices, faces


def _affine(matrix: np.ndarray, offset: np.ndarray | None = None) -> np.ndarray:
    out = np.zeros((3, 4))
    out[:, :3] = matrix
    if offset is not None:
        out[:, 3] = offset
    return out


def _segments(rng: np.random.Generator, detail: float, lo: int = 20, hi: int = 72) -> int:
    return max(8, int(rng.integers(lo, hi + 1) * detail))


# --------------------------------------------------------------------------------------------
# random transforms

def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Uniform on SO(3) (a normalised Gaussian quaternion)."""
    w, x, y, z = _unit(rng.normal(size=4))
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def _axis_rotation(rng: np.random.Generator) -> np.ndarray:
    """One of the 24 rotations that map the coordinate axes onto themselves."""
    matrix = np.eye(3)[rng.permutation(3)] * rng.choice([-1.0, 1.0], size=3)[:, None]
    if np.linalg.det(matrix) < 0:
        matrix[2] *= -1.0
    return matrix


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-12 else np.eye(len(v))[0]


def _orientation(rng: np.random.Generator, p_axis: float = 0.4) -> np.ndarray:
    return _axis_rotation(rng) if rng.random() < p_axis else _random_rotation(rng)


def _normalize(part: Part, size: float = 1.0) -> Part:
    vertices, faces = part
    used = vertices[np.unique(faces)]
    lo, hi = used.min(axis=0), used.max(axis=0)
    extent = float((hi - lo).max())
    if not np.isfinite(extent) or extent <= 0.0:
        raise _Retry("zero extent")
    return (vertices - (lo + hi) / 2.0) * (size / extent), faces


def _compact(part: Part) -> Part:
    return compact(*part)


def _concat(parts: list[Part]) -> Part:
    offsets = np.cumsum([0] + [p[0].shape[0] for p in parts[:-1]])
    vertices = np.concatenate([p[0] for p in parts])
    faces = np.concatenate([p[1] + o for p, o in zip(parts, offsets)])
    return vertices, faces


def _finish(rng: np.random.Generator, part: Part, size: float = 1.0, p_axis: float = 0.4) -> Part:
    """Anisotropic scale (in the shape's own axes), then a rotation, then centre/size."""
    vertices, faces = part
    if rng.random() < 0.6:
        vertices = vertices * np.exp(rng.uniform(-0.35, 0.35, size=3))
    vertices = vertices @ _orientation(rng, p_axis).T
    return _normalize((vertices, faces), size)


# --------------------------------------------------------------------------------------------
# solid primitives (manifold3d), roughly unit-sized and centred

SOLID_KINDS = ("box", "rounded_box", "cylinder", "cone", "sphere", "ellipsoid", "torus", "capsule", "prism", "pyramid")


def _regular_polygon(n: int, radius: float, phase: float = 0.0) -> np.ndarray:
    a = phase + 2.0 * np.pi * np.arange(n) / n
    return np.stack([radius * np.cos(a), radius * np.sin(a)], axis=1)


def _rounded_box(size: np.ndarray, radius: float, segments: int) -> Any:
    M = _m().Manifold
    radius = float(min(radius, 0.49 * float(np.min(size))))
    half = np.asarray(size) / 2.0 - radius
    ball = M.sphere(radius, max(8, segments // 2))
    corners = [ball.translate(tuple(half * np.array(s))) for s in np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1])).reshape(3, -1).T]
    return M.batch_hull(corners)


def _capsule(length: float, radius: float, segments: int) -> Any:
    M = _m().Manifold
    ball = M.sphere(radius, segments)
    return M.batch_hull([ball.translate((0, 0, -length / 2)), ball.translate((0, 0, length / 2))])


def _torus(major: float, minor: float, segments: int) -> Any:
    m = _m()
    return m.CrossSection.circle(minor, max(8, segments // 2)).translate((major, 0.0)).revolve(segments)


def _solid(rng: np.random.Generator, kind: str, detail: float) -> Any:
    """A solid primitive of the given kind with random proportions; longest side about 0.5-1."""
    m = _m()
    M = m.Manifold
    segs = _segments(rng, detail)
    if kind == "box":
        return M.cube(tuple(rng.uniform(0.3, 1.0, 3)), True)
    if kind == "rounded_box":
        size = rng.uniform(0.35, 1.0, 3)
        return _rounded_box(size, rng.uniform(0.04, 0.35) * float(size.min()), segs)
    if kind == "cylinder":
        r = rng.uniform(0.15, 0.5)
        return M.cylinder(rng.uniform(0.2, 1.0), r, r, segs, True)
    if kind == "cone":
        r = rng.uniform(0.2, 0.5)
        top = 0.0 if rng.random() < 0.4 else r * rng.uniform(0.1, 0.8)
        return M.cylinder(rng.uniform(0.3, 1.0), r, top, segs, True)
    if kind == "sphere":
        return M.sphere(rng.uniform(0.3, 0.5), segs)
    if kind == "ellipsoid":
        return M.sphere(0.5, segs).scale(tuple(rng.uniform(0.3, 1.0, 3)))
    if kind == "torus":
        major = rng.uniform(0.25, 0.45)
        return _torus(major, major * rng.uniform(0.12, 0.6), segs)
    if kind == "capsule":
        return _capsule(rng.uniform(0.1, 0.7), rng.uniform(0.1, 0.3), segs)
    if kind == "prism":
        n = int(rng.integers(3, 9))
        cs = m.CrossSection([_regular_polygon(n, rng.uniform(0.2, 0.5), rng.uniform(0, np.pi))])
        height = rng.uniform(0.2, 1.0)
        return cs.extrude(height).translate((0, 0, -height / 2))
    if kind == "pyramid":
        n = int(rng.integers(3, 7))
        return M.cylinder(rng.uniform(0.3, 1.0), rng.uniform(0.25, 0.55), 0.0, n, True)
    raise ValueError(f"unknown solid kind {kind}")


def _solid_bounds(solid: Any) -> tuple[np.ndarray, np.ndarray]:
    b = solid.bounding_box()
    return np.array(b[:3]), np.array(b[3:])


def _place(solid: Any, rotation: np.ndarray, center: np.ndarray) -> Any:
    return solid.transform(_affine(rotation, center))


# --------------------------------------------------------------------------------------------
# families

def _primitive(rng: np.random.Generator, detail: float) -> Part:
    kind = str(rng.choice(SOLID_KINDS))
    return _from_manifold(_solid(rng, kind, detail))


def _csg_tool(rng: np.random.Generator, op: str, lo: np.ndarray, hi: np.ndarray, detail: float) -> Any:
    """A tool solid for one boolean against a body with bounds [lo, hi]."""
    m = _m()
    M = m.Manifold
    extent = hi - lo
    size = float(extent.max())
    segs = _segments(rng, detail, 16, 48)
    if op == "intersection":  # trim: a large rounded/rotated body around the centre
        kind = str(rng.choice(["sphere", "cylinder", "rotated_box", "rounded_box"]))
        center = (lo + hi) / 2 + rng.uniform(-0.15, 0.15, 3) * extent
        if kind == "sphere":
            return M.sphere(0.5 * float(np.linalg.norm(extent)) * rng.uniform(0.7, 0.95), segs).translate(tuple(center))
        if kind == "cylinder":
            r = 0.5 * float(np.linalg.norm(extent)) * rng.uniform(0.6, 0.9)
            return _place(M.cylinder(2 * size, r, r, segs, True), _axis_rotation(rng), center)
        if kind == "rounded_box":
            return _rounded_box(extent * rng.uniform(0.8, 1.0, 3), rng.uniform(0.1, 0.3) * float(extent.min()), segs).translate(tuple(center))
        return _place(M.cube(tuple(extent * rng.uniform(0.9, 1.3, 3)), True), _random_rotation(rng), center)
    axis_aligned = rng.random() < 0.75
    rotation = _axis_rotation(rng) if axis_aligned else _random_rotation(rng)
    if op == "difference":
        kind = str(rng.choice(["drill", "drill_pattern", "pocket", "slot", "dent", "any"], p=[0.25, 0.15, 0.2, 0.15, 0.1, 0.15]))
        if kind in ("drill", "drill_pattern"):
            axis = int(rng.integers(3))
            others = [a for a in range(3) if a != axis]
            r = rng.uniform(0.03, 0.15) * float(extent[others].min())
            rot = np.eye(3)  # the cylinder's z axis onto `axis`
            if axis == 0:
                rot = np.array([[0, 0, 1], [0, 1, 0], [-1, 0, 0]], dtype=float)
            elif axis == 1:
                rot = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], dtype=float)
            centers = []
            if kind == "drill":
                c = (lo + hi) / 2
                c[others] += rng.uniform(-0.35, 0.35, 2) * extent[others]
                centers.append(c)
            else:
                pattern = str(rng.choice(["grid", "circle"]))
                if pattern == "grid":
                    nu, nv = int(rng.integers(1, 4)), int(rng.integers(2, 5))
                    for a in np.linspace(-0.3, 0.3, nu) if nu > 1 else [0.0]:
                        for b in np.linspace(-0.3, 0.3, nv):
                            c = (lo + hi) / 2
                            c[others[0]] += a * extent[others[0]]
                            c[others[1]] += b * extent[others[1]]
                            centers.append(c)
                else:
                    k = int(rng.integers(3, 9))
                    ring = rng.uniform(0.2, 0.35) * float(extent[others].min())
                    for t in 2 * np.pi * np.arange(k) / k:
                        c = (lo + hi) / 2
                        c[others[0]] += ring * math.cos(t)
                        c[others[1]] += ring * math.sin(t)
                        centers.append(c)
                r = min(r, 0.5 * float(extent[others].min()) / max(len(centers), 3))
            cyl = M.cylinder(3 * size, r, r, segs, True)
            return M.batch_boolean([_place(cyl, rot, c) for c in centers], m.OpType.Add)
        if kind == "pocket":  # a box entering from one face
            axis = int(rng.integers(3))
            tool_size = extent * rng.uniform(0.2, 0.7, 3)
            tool_size[axis] = extent[axis]
            center = (lo + hi) / 2 + rng.uniform(-0.2, 0.2, 3) * extent
            depth = rng.uniform(0.2, 0.7) * extent[axis]
            center[axis] = hi[axis] + extent[axis] / 2 - depth if rng.random() < 0.5 else lo[axis] - extent[axis] / 2 + depth
            return M.cube(tuple(tool_size), True).translate(tuple(center))
        if kind == "slot":
            width = rng.uniform(0.05, 0.2) * float(extent.min())
            length = rng.uniform(0.2, 0.6) * size
            stadium = m.CrossSection.batch_hull([m.CrossSection.circle(width / 2, segs).translate((-length / 2, 0)),
                                                 m.CrossSection.circle(width / 2, segs).translate((length / 2, 0))])
            tool = stadium.extrude(3 * size).translate((0, 0, -1.5 * size))
            center = (lo + hi) / 2 + rng.uniform(-0.25, 0.25, 3) * extent
            return _place(tool, rotation, center)
        if kind == "dent":
            r = rng.uniform(0.15, 0.4) * size
            face = rng.uniform(lo, hi)
            axis = int(rng.integers(3))
            face[axis] = hi[axis] if rng.random() < 0.5 else lo[axis]
            return M.sphere(r, segs).translate(tuple(face))
    # union (a boss) or any other difference tool: a small random primitive near the surface
    tool = _solid(rng, str(rng.choice(SOLID_KINDS)), detail * 0.7).scale(tuple([rng.uniform(0.25, 0.6) * size] * 3))
    center = rng.uniform(lo, hi)
    axis = int(rng.integers(3))
    center[axis] = hi[axis] if rng.random() < 0.5 else lo[axis]
    return _place(tool, rotation, center)


def _csg(rng: np.random.Generator, detail: float) -> Part:
    body = _solid(rng, str(rng.choice(["box", "rounded_box", "cylinder", "sphere", "torus", "capsule", "prism", "ellipsoid"],
                                      p=[0.3, 0.15, 0.2, 0.08, 0.05, 0.07, 0.1, 0.05])), detail)
    body = body.transform(_affine(_axis_rotation(rng)))
    n_ops = int(rng.integers(1, 5))
    changed = 0
    for _ in range(n_ops + 3):
        if changed == n_ops:
            break
        op = str(rng.choice(["difference", "union", "intersection"], p=[0.6, 0.25, 0.15]))
        lo, hi = _solid_bounds(body)
        tool = _csg_tool(rng, op, lo, hi, detail)
        if op == "difference":
            result = body - tool
        elif op == "union":
            result = body + tool
        else:
            result = body ^ tool
        if result.is_empty() or result.num_tri() > MAX_FACES * 0.8 * detail:
            continue
        if op != "union" and result.volume() < 0.15 * body.volume():
            continue
        if abs(result.volume() - body.volume()) < 1e-6 * body.volume():
            continue
        body = result
        changed += 1
    if changed == 0:
        raise _Retry("no boolean changed the body")
    return _from_manifold(body)


def _star(rng: np.random.Generator) -> np.ndarray:
    n = int(rng.integers(3, 13))
    ratio = rng.uniform(0.35, 0.9)
    a = np.pi * np.arange(2 * n) / n
    r = np.where(np.arange(2 * n) % 2 == 0, 1.0, ratio)
    return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)


def _gear(rng: np.random.Generator) -> np.ndarray:
    teeth = int(rng.integers(8, 25))
    depth = rng.uniform(0.08, 0.2)
    pts = []
    for k in range(teeth):
        base = 2 * np.pi * k / teeth
        step = 2 * np.pi / teeth
        for frac, r in ((0.0, 1 - depth), (0.2, 1.0), (0.5, 1.0), (0.7, 1 - depth)):
            a = base + frac * step
            pts.append((r * math.cos(a), r * math.sin(a)))
    return np.array(pts)


def _radial_polygon(rng: np.random.Generator) -> np.ndarray:
    n = int(rng.integers(5, 15))
    a = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = rng.uniform(0.5, 1.0, n)
    return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)


def _rectilinear(rng: np.random.Generator) -> Any:
    m = _m()
    rects = []
    for _ in range(int(rng.integers(2, 5))):
        size = rng.uniform(0.2, 1.0, 2)
        rects.append(m.CrossSection.square(tuple(size), True).translate(tuple(rng.uniform(-0.4, 0.4, 2))))
    return m.CrossSection.batch_boolean(rects, m.OpType.Add)


def _profile(rng: np.random.Generator, detail: float) -> Any:
    """A 2D outline with 0-4 holes, about unit size."""
    m = _m()
    kind = str(rng.choice(["star", "gear", "radial", "rectilinear", "circle"], p=[0.25, 0.2, 0.2, 0.25, 0.1]))
    if kind == "star":
        cs = m.CrossSection([_star(rng)])
    elif kind == "gear":
        cs = m.CrossSection([_gear(rng)])
    elif kind == "radial":
        cs = m.CrossSection([_radial_polygon(rng)])
    elif kind == "rectilinear":
        cs = _rectilinear(rng)
    else:
        cs = m.CrossSection.circle(1.0, _segments(rng, detail))
    if rng.random() < 0.25:  # 2D fillets: round the outline's convex or concave corners
        d = rng.uniform(0.02, 0.08)
        cs = cs.offset(-d, m.JoinType.Round, 2.0, 32).offset(d, m.JoinType.Round, 2.0, 32) if rng.random() < 0.5 \
            else cs.offset(d, m.JoinType.Round, 2.0, 32).offset(-d, m.JoinType.Round, 2.0, 32)
    area = cs.area()
    if area <= 1e-3:
        raise _Retry("empty profile")
    lo = np.array(cs.bounds()[:2])
    hi = np.array(cs.bounds()[2:])
    for _ in range(int(rng.choice([0, 1, 2, 3, 4], p=[0.25, 0.35, 0.2, 0.1, 0.1]))):
        r = rng.uniform(0.04, 0.2) * float((hi - lo).min())
        center = rng.uniform(lo + 0.2 * (hi - lo), hi - 0.2 * (hi - lo))
        hole = m.CrossSection.circle(r, _segments(rng, detail, 12, 40)) if rng.random() < 0.6 else \
            m.CrossSection([_regular_polygon(int(rng.integers(3, 7)), r, rng.uniform(0, np.pi))])
        candidate = cs - hole.translate(tuple(center))
        if candidate.area() > 0.5 * area:
            cs = candidate
    return cs


def _extrusion(rng: np.random.Generator, detail: float) -> Part:
    cs = _profile(rng, detail)
    height = rng.uniform(0.08, 1.5)
    twist, divisions, scale_top = 0.0, 0, (1.0, 1.0)
    u = rng.random()
    if u < 0.15:
        twist = rng.uniform(-150, 150)
        divisions = int(max(4, rng.integers(8, 32) * detail))
    elif u < 0.35:
        s = rng.uniform(0.2, 1.0)
        scale_top = (s, s) if rng.random() < 0.7 else (s, rng.uniform(0.2, 1.0))
    solid = cs.extrude(height, divisions, twist, scale_top)
    if solid.num_tri() > MAX_FACES * 0.8 * detail:
        raise _Retry("too many faces")
    return _from_manifold(solid)


def _resample(points: np.ndarray, count: int, closed: bool) -> np.ndarray:
    """``count`` points evenly spaced along a dense polyline."""
    pts = np.concatenate([points, points[:1]]) if closed else points
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    if s[-1] <= 0:
        raise _Retry("degenerate curve")
    targets = np.linspace(0.0, s[-1], count, endpoint=not closed)
    return np.stack([np.interp(targets, s, pts[:, k]) for k in range(3)], axis=1)


def _curve(rng: np.random.Generator, kind: str, count: int) -> np.ndarray:
    """A smooth 3D curve of length about 1.5-4 sampled at ``count`` even steps."""
    from scipy.interpolate import CubicSpline

    t = np.linspace(0.0, 1.0, 2000, endpoint=kind != "loop")
    if kind == "spline":
        n = int(rng.integers(3, 8))
        direction = _unit(rng.normal(size=3))
        pts = [np.zeros(3)]
        for _ in range(n - 1):  # a random walk whose turns stay below ~70 degrees: smooth, no kinks
            direction = _unit(direction + rng.normal(size=3) * 0.8)
            pts.append(pts[-1] + direction * rng.uniform(0.3, 0.6))
        dense = CubicSpline(np.linspace(0, 1, n), np.array(pts), bc_type="natural")(t)
        return _resample(dense, count, closed=False)
    if kind == "helix":
        turns = rng.uniform(1.0, 5.0)
        radius = rng.uniform(0.2, 0.5)
        pitch = rng.uniform(0.12, 0.4)
        a = 2 * np.pi * turns * t
        taper = 1.0 + rng.uniform(-0.5, 0.3) * t
        dense = np.stack([radius * taper * np.cos(a), radius * taper * np.sin(a), pitch * turns * t], axis=1)
        return _resample(dense, count, closed=False)
    # closed loop: a torus knot or a random trigonometric loop
    a = 2 * np.pi * t
    if rng.random() < 0.5:
        p, q = [(2, 3), (3, 2), (2, 5), (3, 4), (1, 3), (1, 1)][int(rng.integers(6))]
        major, minor = rng.uniform(0.35, 0.5), rng.uniform(0.12, 0.25)
        r = major + minor * np.cos(q * a)
        dense = np.stack([r * np.cos(p * a), r * np.sin(p * a), minor * np.sin(q * a)], axis=1)
    else:
        dense = np.zeros((t.size, 3))
        dense[:, 0], dense[:, 1] = 0.5 * np.cos(a), 0.5 * np.sin(a)
        for k in (2, 3):
            dense += rng.normal(size=(1, 3)) * 0.08 * np.cos(k * a[:, None] + rng.uniform(0, 2 * np.pi, 3))
    return _resample(dense, count, closed=True)


def _frames(path: np.ndarray, closed: bool) -> tuple[np.ndarray, np.ndarray]:
    """Rotation-minimising normals and binormals along a polyline (double reflection, Wang et al.
    2008); on closed curves the leftover twist is spread evenly so the frames meet."""
    n = path.shape[0]
    if closed:
        tangents = np.roll(path, -1, axis=0) - np.roll(path, 1, axis=0)
    else:
        tangents = np.gradient(path, axis=0)
    tangents /= np.maximum(np.linalg.norm(tangents, axis=1, keepdims=True), 1e-12)
    t0 = tangents[0]
    helper = np.eye(3)[int(np.argmin(np.abs(t0)))]
    normals = np.empty_like(path)
    normals[0] = _unit(np.cross(t0, helper))
    steps = n if closed else n - 1
    final = normals[0]
    for i in range(steps):
        j = (i + 1) % n
        v1 = path[j] - path[i]
        c1 = float(v1 @ v1)
        r = normals[i]
        if c1 > 1e-20:
            r_l = r - (2.0 / c1) * (v1 @ r) * v1
            t_l = tangents[i] - (2.0 / c1) * (v1 @ tangents[i]) * v1
        else:
            r_l, t_l = r, tangents[i]
        v2 = tangents[j] - t_l
        c2 = float(v2 @ v2)
        r_next = r_l - (2.0 / c2) * (v2 @ r_l) * v2 if c2 > 1e-20 else r_l
        r_next = _unit(r_next - (r_next @ tangents[j]) * tangents[j])
        if j == 0:
            final = r_next
        else:
            normals[j] = r_next
    binormals = np.cross(tangents, normals)
    if closed:  # twist left over after one round trip, removed gradually
        angle = math.atan2(float(final @ binormals[0]), float(final @ normals[0]))
        phi = -angle * np.arange(n) / n
        c, s = np.cos(phi)[:, None], np.sin(phi)[:, None]
        normals, binormals = c * normals - s * binormals, s * normals + c * binormals
    return normals, binormals


def _sweep(path: np.ndarray, profile: np.ndarray, closed: bool, cap: bool, scale: np.ndarray | None = None) -> Part:
    """A 2D profile (star-shaped around its origin, counter-clockwise) swept along a path."""
    n, k = path.shape[0], profile.shape[0]
    normals, binormals = _frames(path, closed)
    s = np.ones(n) if scale is None else scale
    rings = path[:, None, :] + s[:, None, None] * (profile[None, :, 0, None] * normals[:, None, :]
                                                   + profile[None, :, 1, None] * binormals[:, None, :])
    vertices = rings.reshape(-1, 3)
    i = np.arange(n if closed else n - 1)[:, None]
    j = np.arange(k)[None, :]
    a = i * k + j
    b = i * k + (j + 1) % k
    c = ((i + 1) % n) * k + (j + 1) % k
    d = ((i + 1) % n) * k + j
    faces = np.concatenate([np.stack([a, c, b], -1).reshape(-1, 3), np.stack([a, d, c], -1).reshape(-1, 3)])
    if cap and not closed:
        start, end = len(vertices), len(vertices) + 1
        vertices = np.concatenate([vertices, path[:1], path[-1:]])
        ring0 = np.arange(k)
        ring1 = (n - 1) * k + np.arange(k)
        faces = np.concatenate([
            faces,
            np.stack([np.full(k, start), ring0, np.roll(ring0, -1)], axis=1),
            np.stack([np.full(k, end), np.roll(ring1, -1), ring1], axis=1),
        ])
        if _signed_volume(vertices, faces) < 0:
            faces = faces[:, ::-1]
    return vertices, faces.astype(np.int64)


def _signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    return float(signed_volumes(vertices, faces, np.zeros(len(faces), dtype=np.int64), 1)[0])


def _polygon_profile(rng: np.random.Generator) -> np.ndarray:
    kind = str(rng.choice(["square", "rectangle", "triangle", "hexagon", "star"]))
    if kind == "square":
        return _regular_polygon(4, 1.0, np.pi / 4)
    if kind == "rectangle":
        return _regular_polygon(4, 1.0, np.pi / 4) * np.array([1.0, rng.uniform(0.25, 0.8)])
    if kind == "triangle":
        return _regular_polygon(3, 1.0, np.pi / 2)
    if kind == "hexagon":
        return _regular_polygon(6, 1.0)
    return _star(rng) if rng.random() < 0.5 else _regular_polygon(5, 1.0)


def _sweep_family(rng: np.random.Generator, detail: float) -> Part:
    m = _m()
    if rng.random() < 0.55:  # a sharp-edged profile along a smooth curve
        kind = str(rng.choice(["spline", "helix", "loop"], p=[0.55, 0.25, 0.2]))
        count = max(24, int(rng.integers(80, 240) * detail))
        path = _curve(rng, kind, count)
        profile = _polygon_profile(rng) * rng.uniform(0.025, 0.09)
        return _sweep(path, profile, closed=kind == "loop", cap=True)
    # lathe: a profile revolved about z, with steps (sharp) and slopes; sometimes cut away
    n = int(rng.integers(3, 9))
    z = np.sort(rng.uniform(0.0, 1.0, n))
    z[0], z[-1] = 0.0, 1.0
    r = rng.uniform(0.1, 0.5, n)
    pts = [(0.0, 0.0)]
    for zi, ri, z_next in zip(z, r, np.append(z[1:], 1.0)):
        pts.append((ri, zi))
        if rng.random() < 0.5:  # a vertical step: sharp rims
            pts.append((ri, z_next))
    pts.append((float(r[-1]) * rng.uniform(0.3, 1.0), 1.0))
    pts.append((0.0, 1.0))
    cs = m.CrossSection([np.array(pts)])
    if cs.area() <= 1e-4:
        raise _Retry("empty lathe profile")
    degrees = 360.0 if rng.random() < 0.75 else rng.uniform(120.0, 320.0)
    return _from_manifold(cs.revolve(_segments(rng, detail, 24, 96), degrees))


def _tube(rng: np.random.Generator, detail: float) -> Part:
    kind = str(rng.choice(["spline", "helix", "loop"], p=[0.55, 0.25, 0.2]))
    count = max(24, int(rng.integers(80, 300) * detail))
    path = _curve(rng, kind, count)
    sides = max(8, int(rng.integers(12, 33) * detail))
    radius = rng.uniform(0.015, 0.09)
    profile = _regular_polygon(sides, radius)
    scale = None
    if rng.random() < 0.35:  # a radius that swells and narrows along the tube
        u = np.linspace(0, 2 * np.pi, count, endpoint=kind != "loop")
        k = 1 if kind == "loop" else rng.uniform(0.5, 2.5)
        scale = 1.0 + rng.uniform(0.15, 0.45) * np.sin(k * u + rng.uniform(0, 2 * np.pi))
    return _sweep(path, profile, closed=kind == "loop", cap=rng.random() < 0.5, scale=scale)


def _icosphere(subdivisions: int) -> Part:
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=subdivisions, radius=1.0)
    return np.asarray(sphere.vertices, dtype=np.float64), np.asarray(sphere.faces, dtype=np.int64)


def _noise_radius(rng: np.random.Generator, directions: np.ndarray, amplitude: float, terms: int = 8) -> np.ndarray:
    """Low-frequency noise on the unit sphere: a sum of random plane waves, amplitude falling with frequency."""
    r = np.ones(directions.shape[0])
    for _ in range(terms):
        w = _unit(rng.normal(size=3))
        freq = rng.uniform(1.0, 4.0)
        r += amplitude / freq * np.sin(freq * (directions @ w) * np.pi + rng.uniform(0, 2 * np.pi))
    return np.maximum(r, 0.25)


def _radial_blob(rng: np.random.Generator, detail: float) -> Part:
    subdivisions = 5 if rng.random() < 0.4 * detail else (4 if detail > 0.4 else 3)
    directions, faces = _icosphere(subdivisions)
    r = _noise_radius(rng, directions, rng.uniform(0.1, 0.35), int(rng.integers(4, 12)))
    vertices = directions * r[:, None]
    if rng.random() < 0.3:  # a gentle twist about z: organic asymmetry
        angle = rng.uniform(-1.0, 1.0) * vertices[:, 2]
        c, s = np.cos(angle), np.sin(angle)
        vertices = np.stack([c * vertices[:, 0] - s * vertices[:, 1], s * vertices[:, 0] + c * vertices[:, 1], vertices[:, 2]], axis=1)
    return vertices, faces


def _metaball(rng: np.random.Generator, detail: float) -> Part:
    """Noisy metaballs: Gaussian bumps along a random walk, iso-surfaced by marching cubes."""
    from skimage.measure import marching_cubes

    n = int(rng.integers(2, 8))
    centers = [np.zeros(3)]
    for _ in range(n - 1):
        centers.append(centers[-1] + _unit(rng.normal(size=3)) * rng.uniform(0.15, 0.35))
    centers_arr = np.array(centers)
    centers_arr -= centers_arr.mean(axis=0)
    sigmas = rng.uniform(0.08, 0.2, n)
    grid = max(24, int(rng.integers(40, 57) * detail))
    half = float(np.abs(centers_arr).max() + 3.2 * sigmas.max())
    axis = np.linspace(-half, half, grid)
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    pts = np.stack([x, y, z], axis=-1)
    field = np.zeros(x.shape)
    for c, s in zip(centers_arr, sigmas):
        field += np.exp(-np.sum((pts - c) ** 2, axis=-1) / (2 * s * s))
    noise = np.zeros(x.shape)
    for _ in range(6):
        w = _unit(rng.normal(size=3)) * rng.uniform(4.0, 14.0)
        noise += np.sin(pts @ w + rng.uniform(0, 2 * np.pi)) / 6.0
    field *= 1.0 + rng.uniform(0.1, 0.3) * noise
    field[[0, -1], :, :] = field[:, [0, -1], :] = field[:, :, [0, -1]] = 0.0  # closes the surface
    level = rng.uniform(0.35, 0.6)
    if field.max() <= level:
        raise _Retry("metaball field below the level")
    vertices, faces, _, _ = marching_cubes(field, level=level, spacing=(axis[1] - axis[0],) * 3)
    return np.asarray(vertices, dtype=np.float64), np.asarray(faces, dtype=np.int64)


def _blob(rng: np.random.Generator, detail: float) -> Part:
    return _radial_blob(rng, detail) if rng.random() < 0.6 else _metaball(rng, detail)


def _thin_shell(rng: np.random.Generator, detail: float) -> Part:
    """Closed surfaces with a thin wall: every edge has two faces."""
    m = _m()
    M = m.Manifold
    t = rng.uniform(0.006, 0.03)  # wall thickness, as a fraction of the longest side
    segs = _segments(rng, detail)
    kind = str(rng.choice(["hollow", "container", "pipe", "offset_blob"], p=[0.25, 0.35, 0.2, 0.2]))
    if kind == "offset_blob":
        vertices, faces = _radial_blob(rng, min(detail, 0.7))
        vertices = vertices / float(np.abs(vertices).max()) * 0.5
        normals = _outward_normals(vertices, faces)
        inner = vertices - t * normals
        return np.concatenate([vertices, inner]), np.concatenate([faces, faces[:, ::-1] + len(vertices)])
    shape = str(rng.choice(["box", "rounded_box", "cylinder", "sphere", "capsule"], p=[0.3, 0.15, 0.3, 0.15, 0.1]))
    size = rng.uniform(0.4, 1.0, 3)
    size /= size.max()
    if shape == "box":
        outer, inner = M.cube(tuple(size), True), M.cube(tuple(size - 2 * t), True)
    elif shape == "rounded_box":
        r = rng.uniform(0.08, 0.3) * float(size.min())
        outer, inner = _rounded_box(size, r, segs), _rounded_box(size - 2 * t, max(r - t, t), segs)
    elif shape == "cylinder":
        outer = M.cylinder(size[2], size[0] / 2, size[0] / 2, segs, True)
        inner = M.cylinder(size[2] - 2 * t, size[0] / 2 - t, size[0] / 2 - t, segs, True)
    elif shape == "sphere":
        outer = M.sphere(0.5, segs).scale(tuple(size))
        inner = M.sphere(0.5, segs).scale(tuple(size - 2 * t))
    else:
        length, radius = size[2] * 0.6, size[0] / 3
        outer, inner = _capsule(length, radius, segs), _capsule(length, radius - t, segs)
    if kind == "hollow":
        solid = outer - inner  # a sealed hollow body: two nested closed surfaces
    elif kind == "pipe":  # a wall open at both ends, sharp-edged or round
        if shape in ("box", "rounded_box"):
            solid = outer - inner.scale((1.0, 1.0, 2.0))
        else:
            outer = M.cylinder(size[2], size[0] / 2, size[0] / 2, segs, True)
            solid = outer - M.cylinder(2 * size[2], size[0] / 2 - t, size[0] / 2 - t, segs, True)
    elif shape in ("sphere", "capsule"):  # container: the hollow body cut below a random height (a bowl)
        solid = (outer - inner).trim_by_plane((0.0, 0.0, -1.0), -rng.uniform(-0.2, 0.3) * size[2])
    else:  # container: the cavity pierces the top (a cup, tray or open box)
        lo, hi = _solid_bounds(inner)
        solid = outer - inner.translate((0.0, 0.0, float(hi[2] - lo[2]) * 0.5 + 2 * t)) - inner
    if solid.is_empty():
        raise _Retry("empty shell")
    return _from_manifold(solid)


def _outward_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals, pointing out of the solid whichever way the faces are wound."""
    normals = vertex_normals(vertices, faces)
    return -normals if _signed_volume(vertices, faces) < 0 else normals


def _boundary_vertices(faces: np.ndarray) -> np.ndarray:
    """Indices of the vertices on edges used by exactly one face."""
    half, on_border = boundary_half_edges(int(faces.max()) + 1 if len(faces) else 0, faces)
    return np.unique(half[on_border])


def _open_sheet(rng: np.random.Generator, detail: float) -> Part:
    """A zero-thickness patch: displaced, bent, folded or wrapped, with holes and a trimmed outline.

    Built on a (u, v) grid: faces whose centre falls in a hole (or outside the outline) are dropped,
    then the vertices left on the cut are moved onto the hole's circle/square (or the outline) so the
    boundaries are smooth curves, not grid staircases, and only then is the patch embedded in 3D."""
    res = max(16, int(rng.integers(40, 111) * detail))
    aspect = rng.uniform(0.4, 1.0)
    u, v = np.meshgrid(np.linspace(-1, 1, res + 1), np.linspace(-aspect, aspect, max(8, int((res + 1) * aspect))), indexing="ij")
    nu, nv = u.shape
    grid_lines = (u[:, 0].copy(), v[0, :].copy())
    cell = 2.0 / res
    idx = np.arange(nu * nv).reshape(nu, nv)
    a, b, c, d = idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]
    faces = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    uv = np.stack([u.reshape(-1), v.reshape(-1)], axis=1)

    # cutters: (centre, radius, norm order, radius as a function of the angle or None); "inside" is removed
    cutters: list[tuple[np.ndarray, float, float, bool]] = []
    outline = None
    if rng.random() < 0.4:  # a wavy, star-shaped outline instead of the rectangle
        lobes, phase, depth = int(rng.integers(2, 7)), rng.uniform(0, 2 * np.pi), rng.uniform(0.1, 0.25)
        outline = lambda angle: (1.0 - depth) * aspect + depth * aspect * np.sin(lobes * angle + phase)  # noqa: E731
    for _ in range(int(rng.choice([0, 1, 2, 3, 4], p=[0.15, 0.3, 0.25, 0.15, 0.15]))):
        center = rng.uniform([-0.7, -0.6 * aspect], [0.7, 0.6 * aspect])
        cutters.append((center, rng.uniform(0.06, 0.3) * aspect, 2.0 if rng.random() < 0.7 else np.inf, True))

    def level(points: np.ndarray) -> list[np.ndarray]:
        """For each cutter, the normalised distance (1 on its boundary) of every point."""
        out = []
        for center, radius, order, _ in cutters:
            out.append(np.linalg.norm(points - center, ord=order, axis=1) / radius)
        if outline is not None:
            out.append(np.hypot(points[:, 0], points[:, 1]) / outline(np.arctan2(points[:, 1], points[:, 0])))
        return out

    centroids = uv[faces].mean(axis=1)
    levels = level(centroids)
    keep = np.ones(len(faces), dtype=bool)
    for k, lv in enumerate(levels):
        keep &= lv > 1.0 if k < len(cutters) else lv < 1.0
    if keep.sum() < 0.3 * len(faces):
        raise _Retry("holes removed most of the sheet")
    faces = faces[keep]
    rim = _boundary_vertices(faces)
    vertex_levels = level(uv[rim])
    if vertex_levels:
        stacked = np.abs(np.log(np.maximum(np.stack(vertex_levels), 1e-9)))
        nearest = np.argmin(stacked, axis=0)
        for k in range(len(vertex_levels)):
            sel = rim[(nearest == k) & (np.abs(vertex_levels[k] - 1.0) * (cutters[k][1] if k < len(cutters) else aspect) < 1.5 * cell)]
            if sel.size == 0:
                continue
            p = uv[sel]
            if k < len(cutters):
                center, radius, order, _ = cutters[k]
                offset = p - center
                uv[sel] = center + offset * (radius / np.maximum(np.linalg.norm(offset, ord=order, axis=1), 1e-12))[:, None]
            else:
                angle = np.arctan2(p[:, 1], p[:, 0])
                uv[sel] = np.stack([np.cos(angle), np.sin(angle)], axis=1) * outline(angle)[:, None]
    u, v = uv[:, 0], uv[:, 1]

    kind = str(rng.choice(["height", "bend", "cap", "fold", "twist"], p=[0.35, 0.2, 0.15, 0.15, 0.15]))
    h = np.zeros_like(u)
    for _ in range(int(rng.integers(2, 6))):
        w = rng.normal(size=2) * rng.uniform(0.5, 3.0)
        h += rng.uniform(0.02, 0.15) * np.sin(w[0] * u + w[1] * v + rng.uniform(0, 2 * np.pi))
    if kind == "height":
        pts = np.stack([u, v, h * rng.uniform(1.0, 2.5)], axis=-1)
    elif kind == "bend":
        angle = rng.uniform(0.5, 1.6) * np.pi
        radius = 2.0 / angle
        t = u * angle / 2
        pts = np.stack([radius * np.sin(t), v, radius * (1 - np.cos(t)) + 0.3 * h], axis=-1)
    elif kind == "cap":
        spread = rng.uniform(0.4, 1.2)
        theta, phi = u * spread, v * spread
        pts = np.stack([np.sin(theta) * np.cos(phi), np.sin(phi), np.cos(theta) * np.cos(phi)], axis=-1) * (1 + 0.3 * h)[:, None]
    elif kind == "fold":  # one or two sharp creases (folded paper), on grid lines so they stay straight
        pts = np.stack([u, v, 0.3 * h], axis=-1)
        for _ in range(int(rng.integers(1, 3))):
            axis = int(rng.integers(2))
            lines = grid_lines[axis]
            line = float(rng.choice(lines[np.abs(lines) <= 0.6 * np.abs(lines).max()]))
            pts[:, 2] += rng.uniform(0.3, 1.2) * np.abs(uv[:, axis] - line) * rng.choice([-1, 1])
    else:  # twisted strip
        k = rng.uniform(0.5, 2.5)
        pts = np.stack([u, v * np.cos(k * u), v * np.sin(k * u) + 0.3 * h], axis=-1)
    return _compact((pts, faces))


def _assembly(rng: np.random.Generator, detail: float) -> Part:
    """2-6 parts of the other families: scattered apart, stacked (touching), or one part repeated
    on a grid or a ring (optionally standing on a plate)."""
    names = [f for f in FAMILIES if f != "assembly"]
    weights = np.array([FAMILY_WEIGHTS[f] for f in names])
    layout = str(rng.choice(["scatter", "stack", "grid", "ring"], p=[0.35, 0.3, 0.2, 0.15]))
    n = int(rng.integers(2, 6)) if layout in ("scatter", "stack") else int(rng.integers(3, 7))
    part_detail = detail * (0.55 if n <= 3 else 0.4)

    def part(size: float) -> Part:
        family = str(rng.choice(names, p=weights / weights.sum()))
        return _finish(rng, _build(family, rng, part_detail), size=size, p_axis=0.6)

    parts: list[Part] = []
    total = 0
    if layout in ("grid", "ring"):  # a repeated part, like legs, spokes or a bolt pattern
        vertices, faces = part(1.0)
        gap = 0.0 if rng.random() < 0.3 else rng.uniform(0.05, 0.5)  # 0: neighbours touch
        extent = vertices.max(axis=0) - vertices.min(axis=0)
        cols = int(math.ceil(math.sqrt(n)))
        reach = float(np.linalg.norm(vertices[:, :2], axis=1).max())
        ring_radius = (reach + gap / 2) / math.sin(math.pi / n)  # neighbours' discs just clear
        for k in range(n):
            if layout == "grid":
                offset = np.array([(k % cols) * (extent[0] + gap), (k // cols) * (extent[1] + gap), 0.0])
                parts.append((vertices + offset, faces))
            else:
                angle = 2 * np.pi * k / n
                c, s = math.cos(angle), math.sin(angle)
                rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
                parts.append(((vertices + np.array([ring_radius, 0, 0])) @ rot.T, faces))
            total += len(faces)
            if total > MAX_FACES * 0.9 * detail:
                parts.pop()
                total -= len(faces)
                break
        if rng.random() < 0.5:  # something that the repeated parts stand on or around
            vertices, faces = _concat(parts)
            lo, hi = vertices.min(axis=0), vertices.max(axis=0)
            plate_size = np.append((hi - lo)[:2] * rng.uniform(1.0, 1.2), rng.uniform(0.05, 0.25))
            plate = _from_manifold(_m().Manifold.cube(tuple(plate_size), True))
            center = np.append((lo + hi)[:2] / 2, lo[2] - plate_size[2] / 2)
            if total + len(plate[1]) <= MAX_FACES * 0.9 * detail:
                parts.append((plate[0] + center, plate[1]))
    else:
        placed: list[tuple[np.ndarray, float]] = []
        for k in range(n):
            size = rng.uniform(0.3, 1.0)
            vertices, faces = part(size)
            if total + len(faces) > MAX_FACES * 0.9 * detail:
                break
            if layout == "stack":
                if parts:
                    below = parts[-1][0]
                    shift_xy = rng.uniform(-0.3, 0.3, 2) * (below.max(axis=0) - below.min(axis=0))[:2]
                    offset = np.append(shift_xy, below[:, 2].max() - vertices[:, 2].min())
                else:
                    offset = np.zeros(3)
                parts.append((vertices + offset, faces))
            else:
                radius = float(np.linalg.norm(vertices, axis=1).max())
                spread = 0.6 * n ** (1 / 3)
                for _ in range(60):
                    center = rng.uniform(-spread, spread, 3)
                    if all(np.linalg.norm(center - c) > radius + r + 0.02 for c, r in placed):
                        break
                else:
                    continue
                placed.append((center, radius))
                parts.append((vertices + center, faces))
            total += len(faces)
    if len(parts) < 2:
        raise _Retry("fewer than two parts")
    return _concat(parts)


_BUILDERS: dict[str, Callable[[np.random.Generator, float], Part]] = {
    "primitive": _primitive,
    "csg": _csg,
    "extrusion": _extrusion,
    "sweep": _sweep_family,
    "thin_shell": _thin_shell,
    "open_sheet": _open_sheet,
    "tube": _tube,
    "blob": _blob,
    "assembly": _assembly,
}


def _build(family: str, rng: np.random.Generator, detail: float) -> Part:
    vertices, faces = _BUILDERS[family](rng, detail)
    if not np.isfinite(vertices).all():
        raise _Retry("non-finite vertices")
    return vertices, faces


# --------------------------------------------------------------------------------------------
# public API

def shape_family(seed: int, index: int) -> str:
    """The family of shape ``index`` of run ``seed`` (cheap: no geometry is built)."""
    rng = np.random.default_rng(np.random.SeedSequence([_check_seed(seed), int(index)]))
    return str(rng.choice(FAMILIES, p=np.array([FAMILY_WEIGHTS[f] for f in FAMILIES])))


def make_shape(seed: int, index: int) -> tuple[str, Mesh]:
    """Shape ``index`` of run ``seed``: ``("synth_{seed}_{index:06d}_{family}", Mesh)``.

    A draw that fails (an empty boolean, too many faces) is redrawn from the next of a fixed
    sequence of sub-streams, so the result still depends only on (seed, index)."""
    seed = _check_seed(seed)
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    family = shape_family(seed, index)
    name = f"synth_{seed}_{index:06d}_{family}"
    last = ""
    for attempt in range(_ATTEMPTS):
        rng = np.random.default_rng(np.random.SeedSequence([seed, int(index), attempt + 1]))
        try:
            vertices, faces = _finish(rng, _compact(_build(family, rng, 1.0)), p_axis=0.4)
            if faces.shape[0] > MAX_FACES:
                raise _Retry(f"{faces.shape[0]} faces")
            return name, validate_arrays(vertices, faces, name=name)
        except (_Retry, MeshError) as exc:
            last = str(exc)
    raise RuntimeError(f"{name}: no valid shape after {_ATTEMPTS} draws (last: {last})")


def generate_shapes(count: int, seed: int = 0) -> Iterator[tuple[str, Mesh]]:
    """``count`` procedural shapes, lazily; shape i is ``make_shape(seed, i)``."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    seed = _check_seed(seed)
    for index in range(int(count)):
        yield make_shape(seed, index)


def _check_seed(seed: int) -> int:
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def default_mesh_dir() -> Path | None:
    """``../shared/meshes`` next to the repository, when it exists."""
    path = Path(__file__).resolve().parents[1].parent / "shared" / "meshes"
    return path if path.is_dir() else None


def real_meshes(mesh_dir: str | Path | None = None, max_faces: int | None = None) -> Iterator[tuple[str, Mesh]]:
    """The meshes of a folder (not recursive, sorted by file name) as ``("real_{stem}", Mesh)``.

    ``mesh_dir=None`` means ``../shared/meshes`` when present (nothing otherwise). Files that cannot
    be read, or (with ``max_faces``) are too large, are skipped with a warning."""
    if mesh_dir is None:
        found = default_mesh_dir()
        if found is None:
            return
        mesh_dir = found
    folder = Path(mesh_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"mesh folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUPPORTED_EXTENSIONS)
    stems = [p.stem for p in files]
    for path in files:
        stem = path.stem if stems.count(path.stem) == 1 else f"{path.stem}_{path.suffix[1:].lower()}"
        try:
            mesh = load_mesh(path)
        except (MeshError, OSError) as exc:
            warnings.warn(f"skipping {path}: {exc}", stacklevel=2)
            continue
        if max_faces is not None and mesh.num_faces > max_faces:
            warnings.warn(f"skipping {path}: {mesh.num_faces} faces > {max_faces}", stacklevel=2)
            continue
        yield f"real_{stem}", mesh


# --------------------------------------------------------------------------------------------
# log3d synth
