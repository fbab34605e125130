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

At a crease the mean of the projections falls between the two faces' planes and rounds the crease
off; the point where the planes meet does not. So each round also solves the planes' weighted quadric
(held near the vertex by ``regularisation`` × the total weight along the directions no plane fixes:
a crease line, or a flat patch's tangent plane) and goes there in proportion exp(−(r / crease_fit)²),
r the planes' weighted rms distance from that point: an exact field's planes meet, a decoded field's
disagree by a few hundredths of a voxel everywhere and keep the mean. Points 0.3 voxel off a box's
faces land with a fifth less error, worst and mean (``tests/test_zero_set.py``). On the exact fields
of the shared meshes at 256 VAE mode's extraction came 0.1–14 % closer (CD: spot 2.33e-5 → 2.15e-5,
fandisk 1.78e-5 → 1.65e-5, the beetle 1.07e-4 → 1.00e-4), on the decoded ones within −0.8 … +0.9 %
(the counter +0.9 %: at 0.04 voxel it was +1.5 %, which is why 0.03), pieces, loops and edges of
3+ faces unchanged on all 30 (``bench/results/crease_256.md``).

A decoded field's planes are noisy: there they disagree (their offsets from the vertex spread by a
few hundredths of a voxel), and moving each vertex alone would turn that noise into a rough surface
(on spot's decoded field the normal error rose 0.0166 → 0.0214). Where they disagree the move leans
to the mean move of the vertices around it (two rings) — a vertex keeps its own move in proportion
exp(−(spread / agreement)²) —, and a move that turns a face over is undone. On five decoded fields
at N = 256 that keeps the normal error within 1 % of deflate's while the CD falls 3–8 %. But planes
disagree by the surface's curvature and creases too, on an exact field as much as on a decoded one,
and there leaning to the ring only rounds them off: so a field whose own noise (how well the planes
agree at the quarter of the points where they agree best) lies below a floor that decoded fields
stay above keeps every vertex's own move (:func:`field_agreement`; until stop 47 the agreement grew
in proportion). On the exact fields at 256 that took 2–21 % off the CD on 12 of the 15 shared meshes
(woody −75 %) and left the decoded ones as they were (``bench/results/agree_256.md``).

Measured: ``bench/results/exact_field_settle_256.md`` (docs/architecture.md, step 5 of the ε-path).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numba as nb
import numpy as np

from .grid import BLOCK_SIZE, TRUNCATION_VOXELS, SparseField, key_coords
from .grid_kernels import window_blocks
from .contour import unfold
from .udf_contour import voxel_planes


@dataclass(frozen=True)
class ZeroSetOptions:
    """``reach``: voxels on each side of a vertex whose tangent planes it reads (a window of 2·reach
    per axis). ``spread`` (voxels) and ``power``: the weight of a voxel's plane falls as (|v − c|² +
    spread²)^(−power) with the distance from the vertex to where that voxel touches the surface.
    ``rounds``: re-weighted projections, fewer for a vertex that a round moves by less than
    ``still`` voxels (0: always all; on the exact field of the spot at N = 512 the second round
    moves half the vertices by less than 5e-4 voxel, and the rest of the rounds then move them
    less). ``band`` (voxels): voxels this near the surface give a plane — those whose differences
    are a distance's, of length within ``slope_tolerance`` of 1 (between two walls closer than two
    voxels every difference crosses a kink, and the direction names neither wall). ``agreement``
    (voxels): planes whose offsets from a vertex spread by about this much or more are a noisy
    field's, and the vertex's move leans to the mean move around it, over ``ring_passes`` rings —
    unless the field is clean: where the quarter of the points whose planes agree best still
    disagree by less than ``noise_floor`` (voxels), the disagreement elsewhere is the surface's
    curvature, not noise, and ``clean_agreement`` takes its place (see :func:`field_agreement`).
    ``crease_fit`` (voxels) and ``regularisation``: how far a vertex goes from the planes' mean
    projection to the point they meet at (see the module's docstring); ``clean_crease_fit`` takes
    ``crease_fit``'s place on a clean field, whose planes' residual is the surface's curvature, not
    noise (0.03 → 0.2 took 0.6–46 % off the CD of 14 of the 15 shared meshes' exact fields at 256 —
    Suzanne −26 %, fandisk −22 %, the armchair −18 %, the cow −15 %, the teapot −12 % — and put 7.5
    % on the turbine blade's, 0.81× direct mode's; ``bench/results/clean_creases_256.md``; 0.1
    gained less on the cow and Suzanne, 0.5 no more). ``squared_tolerance`` (voxels; 0: off): a
    voxel's plane may come from the central differences of the squared distance, exact beside a rim,
    a crease or a corner where the one-sided differences lean
    (:func:`model.udf_contour.voxel_planes`)."""

    reach: int = 2
    spread: float = 0.1
    power: float = 2.0
    rounds: int = 3
    still: float = 1e-3
    band: float = 2.5
    slope_tolerance: float = 0.1
    agreement: float = 0.02
    noise_floor: float = 0.0055
    clean_agreement: float = 1.0
    ring_passes: int = 2
    crease_fit: float = 0.03
    clean_crease_fit: float = 0.2
    regularisation: float = 0.01
    squared_tolerance: float = 0.02

    def validate(self) -> "ZeroSetOptions":
        if not 1 <= self.reach <= 4:
            raise ValueError(f"reach must be 1..4 voxels, got {self.reach}")
        if self.spread <= 0 or self.power <= 0 or self.rounds < 0 or self.band <= 0 or self.agreement <= 0:
            raise ValueError(f"spread, power, band and agreement must be > 0 and rounds >= 0, got {self}")
        if self.noise_floor <= 0 or self.clean_agreement < self.agreement:
            raise ValueError(f"noise_floor must be > 0 and clean_agreement >= agreement, got {self.noise_floor}, "
                             f"{self.clean_agreement}")
        if self.crease_fit <= 0 or self.clean_crease_fit <= 0 or self.regularisation <= 0:
            raise ValueError(f"crease_fit, clean_crease_fit and regularisation must be > 0, got {self.crease_fit}, "
                             f"{self.clean_crease_fit}, {self.regularisation}")
        if self.still < 0:
            raise ValueError(f"still must be >= 0 voxels (0: every round), got {self.still}")
        if self.squared_tolerance < 0:
            raise ValueError(f"squared_tolerance must be >= 0 (0: off), got {self.squared_tolerance}")
        if self.ring_passes < 0:
            raise ValueError(f"ring_passes must be >= 0, got {self.ring_passes}")
        return self


@nb.njit(parallel=True, cache=True)
def _settle(keys, grid, dist, grads, vertices, reach, spread2, power, rounds, still2, crease_fit, regularisation,
            out, disagreement):
    n = grid * BLOCK_SIZE
    for q in nb.prange(vertices.shape[0]):
        vx, vy, vz = vertices[q, 0], vertices[q, 1], vertices[q, 2]
        for _ in range(rounds):
            x0, y0, z0 = int(np.floor(vx)) - reach + 1, int(np.floor(vy)) - reach + 1, int(np.floor(vz)) - reach + 1
            bx0, by0, bz0 = x0 >> 3, y0 >> 3, z0 >> 3
            blocks = window_blocks(keys, grid, x0, y0, z0)  # found once per round
            # in the vertex's own frame: plane k is g_k · y + off_k = 0 for y = x − v
            m00 = m01 = m02 = m11 = m12 = m22 = 0.0  # Σ w g gᵀ
            b0 = b1 = b2 = 0.0  # −Σ w off g: the weighted sum of the projections' moves
            sw = so = soo = 0.0
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
                        m00 += w * gx * gx
                        m01 += w * gx * gy
                        m02 += w * gx * gz
                        m11 += w * gy * gy
                        m12 += w * gy * gz
                        m22 += w * gz * gz
                        b0 -= w * off * gx
                        b1 -= w * off * gy
                        b2 -= w * off * gz
                        sw += w
                        so += w * off
                        soo += w * off * off
            if sw == 0.0:
                break
            # the point the planes meet at (their quadric, held near the vertex along the directions
            # no plane fixes): on a crease the two faces' planes meet on the crease line, where the mean
            # of the projections falls between them and rounds it off
            reg = regularisation * sw
            a00, a11, a22 = m00 + reg, m11 + reg, m22 + reg
            c00 = a11 * a22 - m12 * m12
            c01 = m02 * m12 - m01 * a22
            c02 = m01 * m12 - m02 * a11
            det = a00 * c00 + m01 * c01 + m02 * c02
            mean = so / sw
            spread = np.sqrt(max(soo / sw - mean * mean, 0.0))
            ex, ey, ez = b0 / sw, b1 / sw, b2 / sw  # the mean projection's move
            fit = 0.0
            if det > 1e-12 * sw * sw * sw:
                c11 = a00 * a22 - m02 * m02
                c12 = m01 * m02 - a00 * m12
                c22 = a00 * a11 - m01 * m01
                qx = (c00 * b0 + c01 * b1 + c02 * b2) / det
                qy = (c01 * b0 + c11 * b1 + c12 * b2) / det
                qz = (c02 * b0 + c12 * b1 + c22 * b2) / det
                # how far the planes pass from that point (their weighted rms): a decoded field's planes
                # disagree by a few hundredths of a voxel wherever they are, an exact field's meet
                mq = (qx * (m00 * qx + m01 * qy + m02 * qz) + qy * (m01 * qx + m11 * qy + m12 * qz)
                      + qz * (m02 * qx + m12 * qy + m22 * qz))
                residual = np.sqrt(max((mq - 2.0 * (qx * b0 + qy * b1 + qz * b2) + soo) / sw, 0.0))
                fit = np.exp(-(residual / crease_fit) ** 2)
                ex = fit * qx + (1.0 - fit) * ex
                ey = fit * qy + (1.0 - fit) * ey
                ez = fit * qz + (1.0 - fit) * ez
                spread = fit * residual + (1.0 - fit) * spread
            vx, vy, vz = vx + ex, vy + ey, vz + ez
            disagreement[q] = spread
            if ex * ex + ey * ey + ez * ez < still2:
                break
        out[q, 0], out[q, 1], out[q, 2] = vx, vy, vz


Planes = tuple[np.ndarray, np.ndarray]
"""A field's voxel planes: per stored voxel its distance and unit direction away from the surface
(:func:`model.udf_contour.voxel_planes`)."""


def zero_set_planes(field: SparseField, options: ZeroSetOptions = ZeroSetOptions()) -> Planes:
    """The voxel planes the settling reads (those within ``options.band`` whose differences are a
    distance's); made once in VAE mode's extraction for both the settling and the crease step."""
    return voxel_planes(field, options.band, options.slope_tolerance, options.squared_tolerance)


def settle_on_zero_set(vertices: np.ndarray, faces: np.ndarray, field: SparseField,
                       options: ZeroSetOptions = ZeroSetOptions()) -> np.ndarray:
    """:func:`settle_and_measure`'s vertices."""
    return settle_and_measure(vertices, faces, field, options)[0]


def settled_points(points: np.ndarray, field: SparseField, options: ZeroSetOptions = ZeroSetOptions(),
                   planes: Planes | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each point (voxel coordinates [P, 3]) moved onto the zero set on its own, and the planes'
    disagreement around it (voxels; NaN where no plane is near): float64 [P, 3], [P]."""
    points = np.ascontiguousarray(points, dtype=np.float64)
    settled = points.copy()
    disagreement = np.full(len(points), np.nan)  # stays NaN where no plane is near
    if len(points) == 0 or len(field.keys) == 0:
        return settled, disagreement
    dist, grads = zero_set_planes(field, options) if planes is None else planes
    _settle(np.asarray(field.keys, dtype=np.int64), field.resolution // BLOCK_SIZE, dist, grads, points,
            options.reach, options.spread ** 2, options.power, options.rounds, options.still ** 2, options.crease_fit,
            options.regularisation, settled, disagreement)
    return settled, disagreement


def settle_and_measure(vertices: np.ndarray, faces: np.ndarray, field: SparseField,
                       options: ZeroSetOptions = ZeroSetOptions(), planes: Planes | None = None,
                       noise: float | None = None) -> tuple[np.ndarray, float]:
    """``vertices`` (voxel coordinates [V, 3]) of the surface ``faces`` [F, 3] moved onto the zero
    set of ``field`` (see the module's docstring); float64 [V, 3]. Where the planes around a vertex
    disagree (a decoded field's noise: their offsets spread by more than ``options.agreement``), its
    move leans towards the mean move around it, so the noise does not become a rough surface;
    a move that turns a face over is undone (:func:`model.contour.unfold`). With no faces the
    points move independently. Also returns the field's noise around them (:func:`field_noise`),
    which tells whether the field is clean enough to name its creases (:mod:`model.creases`).
    ``planes``: :func:`zero_set_planes` of ``field`` with these options, when the caller has them;
    ``noise``: the field's noise when the caller measured it already (:func:`sampled_noise`), which
    is then the one used and returned."""
    options.validate()
    vertices = np.ascontiguousarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if len(vertices) == 0 or len(field.keys) == 0:
        return vertices.copy(), np.inf
    if noise is None:  # measured on the vertices themselves, with the noisy field's crease fit
        settled, disagreement = settled_points(vertices, field, options, planes)
        noise = field_noise(disagreement)
        if is_clean(noise, options) and options.clean_crease_fit != options.crease_fit:
            settled, disagreement = settled_points(vertices, field, clean_options(options), planes)
    else:
        settled, disagreement = settled_points(vertices, field, clean_options(options) if is_clean(noise, options)
                                               else options, planes)
    if len(faces) == 0:
        return settled, noise
    move = settled - vertices
    ring = move
    for _ in range(options.ring_passes):
        ring = _ring_mean(ring, faces)
    agreement = field_agreement(noise, options)
    trust = np.exp(-((np.nan_to_num(disagreement) / agreement) ** 2))[:, None]
    return unfold(vertices, vertices + trust * move + (1.0 - trust) * ring, faces), noise


NOISE_QUANTILE = 0.25
"""The share of points, those whose planes agree best, that measure a field's noise: on the flattest
quarter of a surface the planes' disagreement is mostly the field's error, not the surface's
curvature. A quarter, not a tenth: a decoded CAD part's big flat faces (the cycloidal gears) agree
as well as an exact scan's best tenth (0.0026 voxel against 0.0022, :func:`sampled_noise` at N = 256),
while at the quarter the two kinds lie twice apart (decoded 0.0077 voxel or more, exact 0.0037 or less)."""


def field_noise(disagreement: np.ndarray, min_known: float = 0.0) -> float:
    """A field's noise (voxels): the disagreement of the planes around the best-agreeing quarter of the
    points (``disagreement``; NaN: a vertex no plane reaches); inf where none is known, or where fewer
    than ``min_known`` of the points are (the field is then no distance over much of its zero set)."""
    finite = np.isfinite(disagreement)
    known = disagreement[finite]
    if len(known) == 0 or finite.mean() < min_known:
        return np.inf
    return float(np.quantile(known, NOISE_QUANTILE))


NOISE_SAMPLES = 20_000
"""How many voxels near the zero set :func:`sampled_noise` settles (a fixed draw: the same field gives
the same answer); 0.05 s on 2 cores."""

NOISE_SAMPLE_BAND = 0.75
"""The voxels :func:`sampled_noise` draws from lie within this many voxels of the zero set."""

NOISE_MIN_KNOWN = 0.95
"""The share of :func:`sampled_noise`'s voxels that planes must reach for the field to have a
noise at all: on the exact fields of the 15 shared meshes at 256 every one is reached, on the decoded
ones 92–100 %; an untrained decoder's field (the engine tests' sphere at 64) reaches 48 % of its 138,
and the planes of the few voxels where it happens to slope like a distance agree perfectly — taken
for clean, its flood went everywhere and left no surface."""


def sampled_noise(field: SparseField, planes: Planes | None = None, options: ZeroSetOptions = ZeroSetOptions(),
                  count: int = NOISE_SAMPLES) -> float:
    """The field's noise (:func:`field_noise`, voxels) before any surface is extracted: the voxels
    within :data:`NOISE_SAMPLE_BAND` of the zero set (``count`` of them, drawn with a fixed seed)
    settled as points, and the planes' disagreement around them.

    Why: the outside flood (:mod:`model.shell`) must know whether the field is clean before it
    runs. A clean field's ε can be half a voxel, where a decoded one needs the paper's full voxel to
    stay closed. Measured at N = 256: exact fields of the shared meshes 0–0.0037 voxel, decoded ones
    (the shipped weights) 0.0077–0.018 — both sides of ``options.noise_floor`` (0.0055); at 512 the
    decoded spot 0.0070, at 128 the decoded fields 0.0086 or more. What keeps a decoded field above
    the floor at any N is its rounded V (a floor of 0.2–0.5 voxel, issue 28): the planes on either side
    of the zero set stand apart by about twice what the rounding adds, and a V rounded at 0.2 voxel
    alone reads 0.0072–0.020 on a sphere and two boxes (``tests/test_udf_contour.py``). A V rounded
    by less passes for exact, and is: the exact flood could leak only through a floor above 0.19
    voxel (two neighbours 0.5 voxel either side of a wall then both read its ε, 0.535; see
    :data:`model.shell.CLEAN_ISO_VOXELS`)."""
    if len(field.keys) == 0:
        return np.inf
    values = np.asarray(field.values)
    block, x, y, z = np.nonzero(values < NOISE_SAMPLE_BAND / TRUNCATION_VOXELS)
    if len(block) > count:
        pick = np.sort(np.random.default_rng(0).choice(len(block), count, replace=False))
        block, x, y, z = block[pick], x[pick], y[pick], z[pick]
    corners = key_coords(np.asarray(field.keys), field.grid)[block].astype(np.float64) * BLOCK_SIZE
    points = corners + np.stack([x, y, z], axis=1)
    return field_noise(settled_points(points, field, options, planes)[1], NOISE_MIN_KNOWN)


def field_agreement(noise: float, options: ZeroSetOptions = ZeroSetOptions()) -> float:
    """The disagreement (voxels) at which a vertex's own move is trusted to 1/e: ``options.agreement``
    for a noisy field, ``options.clean_agreement`` for a clean one (:func:`is_clean`).

    Why: between the planes around a vertex on a curved surface lie a few hundredths of a voxel of
    curvature (a tangent plane a voxel away stands off by about 1/(2R) voxel, R the radius in voxels),
    as much as a decoded field's noise. A decoded field's best quarter still disagrees by 0.0077–0.018
    voxel (the shipped weights at N = 256 on the 15 shared meshes); an exact field's by 0–0.0037.
    Leaning a clean field's vertices to their neighbours' mean move only rounds its curvature off.
    Until stop 47 the agreement grew in proportion to how far the noise lay below the floor; with
    the two kinds of field twice apart, the full trust for every clean one took another 1–11 % off
    the exact fields' CD at 256 (the lion −11 %, the beetle −8 %, the cow −6 %)."""
    return options.clean_agreement if is_clean(noise, options) else options.agreement


def clean_options(options: ZeroSetOptions) -> ZeroSetOptions:
    """``options`` for a clean field: its planes meet where they fit to ``clean_crease_fit``."""
    return dataclasses.replace(options, crease_fit=options.clean_crease_fit)


def is_clean(noise: float, options: ZeroSetOptions = ZeroSetOptions()) -> bool:
    """Whether a field of this ``noise`` (:func:`field_noise`) is below the floor decoded fields stay
    above: its planes' disagreement is its surface's shape, not its error."""
    return bool(noise < options.noise_floor)


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
