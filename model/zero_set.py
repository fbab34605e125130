"""Vertices of a surface extracted from an unsigned field, moved onto the field's zero set using
only the field (VAE mode, `log3d decode`, latents imported in Blender: no input mesh beside it).

Why: the ε-surface deflated along its normals by trilinear samples (:func:`model.cleanup.deflate`)
and the dual vertices of :mod:`model.udf_contour` both sit off the zero set by a few hundredths of a
voxel on smooth parts and by a tenth or more at creases and where a thin wall was crumpled. Direct
mode removes the same error by moving each vertex onto the nearest input triangle; here the field
itself names the surface: each voxel near it knows its distance d and (from
:func:`model.udf_contour.voxel_planes`) the unit direction g away from it, so it touches the surface
at c = p − d·g with tangent plane normal g — exact for a plane, and for the flat parts of a
faceted mesh. A vertex goes to the weighted mean of its projections onto the tangent planes of the
voxels around it (a window of 2·reach voxels per axis), each weighted by
(|v − c|² + spread²)^(−power): the planes that touch the surface where the vertex is count, the
planes of a wall a voxel away or of a facet beyond a crease hardly do. A few rounds re-centre the
weights on the vertex's new place. A vertex no voxel around it can place stays where it is.

A decoded field's planes are noisy: there they disagree (their offsets from the vertex spread by a
few hundredths of a voxel), and moving each vertex alone would turn that noise into a rough surface
(on spot's decoded field the normal error rose 0.0166 → 0.0214). Where they disagree the move leans
to the mean move of the vertices around it (two rings) — a vertex keeps its own move in proportion
exp(−(spread / agreement)²) —, and a move that turns a face over is undone. On five decoded fields
at N = 256 that keeps the normal error within 1 % of deflate's while the CD falls 3–8 %.

Measured: ``bench/results/exact_field_settle_256.md`` (docs/architecture.md, step 5 of the ε-path).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba as nb
import numpy as np

from .grid import BLOCK_SIZE, SparseField
from .grid_kernels import window_blocks
from .contour import unfold
from .udf_contour import voxel_planes


@dataclass(frozen=True)
class ZeroSetOptions:
    """``reach``: voxels on each side of a vertex whose tangent planes it reads (a window of
    2·reach per axis). ``spread`` (voxels) and ``power``: the weight of a voxel's plane falls as
    (|v − c|² + spread²)^(−power) with the distance from the vertex to where that voxel touches the
    surface. ``rounds``: re-weighted projections. ``band`` (voxels): voxels this near the surface
    give a plane — those whose differences are a distance's, of length within ``slope_tolerance``
    of 1 (between two walls closer than two voxels every difference crosses a kink, and the
    direction names neither wall). ``agreement`` (voxels): planes whose offsets from a vertex spread
    by about this much or more are a noisy field's, and the vertex's move leans to the mean move
    around it, over ``ring_passes`` rings."""

    reach: int = 2
    spread: float = 0.1
    power: float = 2.0
    rounds: int = 3
    band: float = 2.5
    slope_tolerance: float = 0.1
    agreement: float = 0.02
    ring_passes: int = 2

    def validate(self) -> "ZeroSetOptions":
        if not 1 <= self.reach <= 4:
            raise ValueError(f"reach must be 1..4 voxels, got {self.reach}")
        if self.spread <= 0 or self.power <= 0 or self.rounds < 0 or self.band <= 0 or self.agreement <= 0:
            raise ValueError(f"spread, power, band and agreement must be > 0 and rounds >= 0, got {self}")
        if self.ring_passes < 0:
            raise ValueError(f"ring_passes must be >= 0, got {self.ring_passes}")
        return self


@nb.njit(parallel=True, cache=True)
def _settle(keys, grid, dist, grads, vertices, reach, spread2, power, rounds, out, disagreement):
    n = grid * BLOCK_SIZE
    for q in nb.prange(vertices.shape[0]):
        vx, vy, vz = vertices[q, 0], vertices[q, 1], vertices[q, 2]
        for _ in range(rounds):
            x0, y0, z0 = int(np.floor(vx)) - reach + 1, int(np.floor(vy)) - reach + 1, int(np.floor(vz)) - reach + 1
            bx0, by0, bz0 = x0 >> 3, y0 >> 3, z0 >> 3
            blocks = window_blocks(keys, grid, x0, y0, z0)  # found once per round
            sx = sy = sz = sw = so = soo = 0.0
            for x in range(x0, x0 + 2 * reach):
                if x < 0 or x >= n:
                    continue
                for y in range(y0, y0 + 2 * reach):
                    if y < 0 or y >= n:
                        continue
                    for z in range(z0, z0 + 2 * reach):
                        if z < 0 or z >= n:
                            continue
                        b = blocks[(x >> 3) - bx0, (y >> 3) - by0, (z >> 3) - bz0]
                        if b < 0:
                            continue
                        li, lj, lk = x & 7, y & 7, z & 7
                        gx, gy, gz = grads[b, li, lj, lk, 0], grads[b, li, lj, lk, 1], grads[b, li, lj, lk, 2]
                        if gx * gx + gy * gy + gz * gz < 0.5:  # beyond the band, no direction, not a distance's
                            continue
                        d = dist[b, li, lj, lk]
                        cx, cy, cz = x - d * gx, y - d * gy, z - d * gz  # where this voxel touches the surface
                        off = gx * (vx - cx) + gy * (vy - cy) + gz * (vz - cz)
                        r2 = (vx - cx) ** 2 + (vy - cy) ** 2 + (vz - cz) ** 2
                        w = 1.0 / (r2 + spread2)
                        w = w * w if power == 2.0 else w ** power
                        sx += w * (vx - off * gx)
                        sy += w * (vy - off * gy)
                        sz += w * (vz - off * gz)
                        sw += w
                        so += w * off
                        soo += w * off * off
            if sw == 0.0:
                break
            vx, vy, vz = sx / sw, sy / sw, sz / sw
            mean = so / sw
            disagreement[q] = np.sqrt(max(soo / sw - mean * mean, 0.0))
        out[q, 0], out[q, 1], out[q, 2] = vx, vy, vz


def settle_on_zero_set(vertices: np.ndarray, faces: np.ndarray, field: SparseField,
                       options: ZeroSetOptions = ZeroSetOptions()) -> np.ndarray:
    """``vertices`` (voxel coordinates [V, 3]) of the surface ``faces`` [F, 3] moved onto the zero
    set of ``field`` (see the module's docstring); float64 [V, 3]. Where the planes around a vertex
    disagree (a decoded field's noise: their offsets spread by more than ``options.agreement``), its
    move leans towards the mean move around it, so the noise does not become a rough surface;
    a move that turns a face over is undone (:func:`model.contour.unfold`). With no faces the
    points move independently."""
    options.validate()
    vertices = np.ascontiguousarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    settled = vertices.copy()
    if len(vertices) == 0 or len(field.keys) == 0:
        return settled
    dist, grads = voxel_planes(field, options.band, options.slope_tolerance)
    disagreement = np.zeros(len(vertices))
    _settle(np.asarray(field.keys, dtype=np.int64), field.resolution // BLOCK_SIZE, dist, grads, vertices,
            options.reach, options.spread ** 2, options.power, options.rounds, settled, disagreement)
    del dist, grads
    if len(faces) == 0:
        return settled
    move = settled - vertices
    ring = move
    for _ in range(options.ring_passes):
        ring = _ring_mean(ring, faces)
    trust = np.exp(-((disagreement / options.agreement) ** 2))[:, None]
    return unfold(vertices, vertices + trust * move + (1.0 - trust) * ring, faces)


@nb.njit(cache=True)
def _ring_sums(values, faces, sums, count):
    for f in range(faces.shape[0]):
        for c in range(3):
            a, b = faces[f, c], faces[f, (c + 1) % 3]
            for k in range(3):
                sums[a, k] += values[b, k]
                sums[b, k] += values[a, k]
            count[a] += 1.0
            count[b] += 1.0


def _ring_mean(values: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Per vertex, the mean of ``values`` [V, 3] over itself and the corners of its faces (an edge
    counted once per face that has it)."""
    sums = np.ascontiguousarray(values, dtype=np.float64).copy()
    count = np.ones(len(values))
    _ring_sums(np.ascontiguousarray(values, dtype=np.float64), faces, sums, count)
    return sums / count[:, None]
