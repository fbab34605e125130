"""Vertices settled onto an unsigned field's zero set from the field alone (model.zero_set): exact on
planes, onto the right one of two close walls, and what it does to VAE mode's extraction."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import trimesh

from model.bvh import PrimitiveIndex
from model.edges import boundary_half_edges
from model.cleanup import CleanupOptions
from model.grid import BLOCK_SIZE, key_coords, unit_to_voxel
from model.pipeline import RemeshOptions, extract_surface, mesh_to_field
from model.stages import Stages
from tests.conftest import as_mesh
from model.zero_set import ZeroSetOptions, field_agreement, field_noise, is_clean, settle_on_zero_set, zero_set_planes

N = 64
NOISE = 0.02  # normalised units (× 4 = voxels)
NO_FACES = np.zeros((0, 3), dtype=np.int64)  # points, each on its own



def field_of(tm: trimesh.Trimesh, n: int = N):
    """The exact field of ``tm`` and its triangles in voxel coordinates (as an index)."""
    mesh = as_mesh(tm)
    field, normalization = mesh_to_field(mesh, n)
    voxels = unit_to_voxel(normalization.to_unit(mesh.vertices), n)
    return field, PrimitiveIndex(voxels, mesh.faces), voxels


def square(normal: np.ndarray, offset: float, half: float = 0.5) -> trimesh.Trimesh:
    normal = normal / np.linalg.norm(normal)
    u = np.cross(normal, [1.0, 0.0, 0.0] if abs(normal[0]) < 0.9 else [0.0, 1.0, 0.0])
    u /= np.linalg.norm(u)
    v = np.cross(normal, u)
    quad = np.array([-u - v, u - v, u + v, -u + v]) * half + normal * offset
    return trimesh.Trimesh(quad, [[0, 1, 2], [0, 2, 3]])


def test_points_near_a_tilted_plane_land_on_it():
    """Every voxel's tangent plane is the plane itself: points up to 0.4 voxel off go onto it exactly."""
    normal = np.array([1.0, 2.0, 3.0]) / np.linalg.norm([1.0, 2.0, 3.0])
    field, index, voxels = field_of(square(normal, 0.0137))
    centre = voxels.mean(0)
    rng = np.random.default_rng(0)
    u = np.cross(normal, [1.0, 0.0, 0.0])
    u /= np.linalg.norm(u)
    v = np.cross(normal, u)
    on_plane = centre + (rng.uniform(-12, 12, (500, 1)) * u + rng.uniform(-12, 12, (500, 1)) * v)  # away from the rim
    off = rng.uniform(-0.4, 0.4, (500, 1))
    settled = settle_on_zero_set(on_plane + off * normal, NO_FACES, field)
    before = index.distance(on_plane + off * normal)
    after = index.distance(settled)
    assert before.mean() > 0.15
    assert after.max() < 1e-4, after.max()
    # and they move along the normal: the foot of each point stays where it was
    assert np.abs((settled - on_plane) @ u).max() < 1e-4 and np.abs((settled - on_plane) @ v).max() < 1e-4


def test_each_of_two_walls_a_voxel_and_a_half_apart_keeps_its_points():
    """A wall's points go onto that wall, not onto the other one 1.5 voxels away: the other wall's
    tangent planes touch the surface where the point is not."""
    gap = 1.5 / (N - 10)  # the pair spans about one unit: N − 10 voxels
    normal = np.array([0.2, 0.3, 1.0])
    a, b = square(normal, 0.0), square(normal, gap)
    field, normalization = mesh_to_field(as_mesh(trimesh.util.concatenate([a, b])), N)
    to_voxel = lambda points: unit_to_voxel(normalization.to_unit(points), N)  # noqa: E731
    wall_a, wall_b = PrimitiveIndex(to_voxel(a.vertices), a.faces), PrimitiveIndex(to_voxel(b.vertices), b.faces)
    unit = normal / np.linalg.norm(normal)
    centre = to_voxel(a.vertices).mean(0)
    rng = np.random.default_rng(1)
    tangent = np.cross(unit, [1.0, 0.0, 0.0])
    tangent /= np.linalg.norm(tangent)
    other = np.cross(unit, tangent)
    feet = centre + rng.uniform(-10, 10, (300, 1)) * tangent + rng.uniform(-10, 10, (300, 1)) * other
    for wall, shift in ((wall_a, 0.0), (wall_b, 1.5)):
        points = feet + (shift + rng.uniform(-0.3, 0.3, (300, 1))) * unit
        settled = settle_on_zero_set(points, NO_FACES, field)
        before, after = wall.distance(points), wall.distance(settled)
        # between the walls every voxel's differences cross a kink: those planes are not read, and
        # the walls' outer voxels place the points (a few hundredths of a voxel off near the gap)
        assert after.mean() < 0.1 * before.mean() and after.max() < 0.1, (before.mean(), after.mean(), after.max())


def test_a_sphere_surface_moves_closer_and_a_lone_point_stays():
    field, index, voxels = field_of(trimesh.creation.icosphere(subdivisions=4))
    rng = np.random.default_rng(2)
    feet = index.closest_points(voxels[rng.choice(len(voxels), 400, replace=False)] + rng.normal(0, 0.3, (400, 3)))[2]
    normals = feet - voxels.mean(0)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    points = feet + rng.uniform(-0.3, 0.3, (400, 1)) * normals
    settled = settle_on_zero_set(points, NO_FACES, field)
    assert index.distance(settled).mean() < 0.1 * index.distance(points).mean()
    lone = np.array([[2.0, 2.0, 2.0]])  # no stored voxel near it: nothing to settle by
    assert np.array_equal(settle_on_zero_set(lone, NO_FACES, field), lone)
    assert settle_on_zero_set(np.zeros((0, 3)), NO_FACES, field).shape == (0, 3)


def test_vae_modes_surface_is_settled_by_default_and_raw_is_not():
    """On an exact field, the shell extraction's surface settles closer to the input (CD-like mean
    distance both ways), in its own stage; ``settle=False`` and the raw ε-surface skip it."""
    tm = trimesh.creation.icosphere(subdivisions=3)
    field, index, voxels = field_of(tm)
    surface_index = PrimitiveIndex(voxels, tm.faces)
    results = {}
    for label, cleanup in (("settled", CleanupOptions(creases=False)), ("unsettled", CleanupOptions(settle=False)),
                           ("raw", CleanupOptions.none())):  # creases off: the same faces, only moved
        stages = Stages()
        surface = extract_surface(field, None, RemeshOptions(resolution=N, mode="vae", cleanup=cleanup), stages)
        results[label] = (surface, stages.timings)
    settled, unsettled = results["settled"][0], results["unsettled"][0]
    assert "settle" in results["settled"][1] and "settle" not in results["unsettled"][1] and "settle" not in results["raw"][1]
    assert np.array_equal(settled.faces, unsettled.faces)  # the same surface, moved
    off_before = surface_index.distance(unsettled.vertices).mean()
    off_after = surface_index.distance(settled.vertices).mean()
    assert off_after < 0.5 * off_before, (off_before, off_after)
    dual = extract_surface(field, None, RemeshOptions(resolution=N, mode="vae", field_extraction="dual"), Stages())
    dual_unsettled = extract_surface(field, None, dataclasses.replace(
        RemeshOptions(resolution=N, mode="vae", field_extraction="dual"), cleanup=CleanupOptions(settle=False)), Stages())
    assert surface_index.distance(dual.vertices).mean() < surface_index.distance(dual_unsettled.vertices).mean()


def test_options_are_checked():
    with pytest.raises(ValueError, match="reach"):
        ZeroSetOptions(reach=0).validate()
    with pytest.raises(ValueError, match="spread"):
        ZeroSetOptions(spread=0.0).validate()


def normal_error(surface, centre: np.ndarray) -> float:
    """Mean 1 − cos between a sphere's surface faces' normals and the radial direction."""
    tri = surface.vertices[surface.faces]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    radial = tri.mean(1) - centre
    radial /= np.linalg.norm(radial, axis=1, keepdims=True)
    return float(np.mean(1.0 - np.abs(np.einsum("ij,ij->i", normals, radial))))


@pytest.mark.parametrize("agreement, rougher", [(ZeroSetOptions().agreement, False), (1e9, True)])
def test_a_noisy_fields_planes_do_not_roughen_the_surface(monkeypatch, agreement, rougher):
    """A field with noise (as a decoded one has): the planes around a vertex disagree, and each
    vertex moved on its own would make the surface rougher than deflate left it; leaning to the
    ring's mean move keeps it as smooth (the second case, every vertex trusted, shows the test bites)."""
    import model.pipeline as pipeline

    tm = trimesh.creation.icosphere(subdivisions=4)
    field, _, voxels = field_of(tm)
    rng = np.random.default_rng(3)
    # a decoder's error is not independent per voxel: each 8³ block is off by its own offset and tilt
    ramp = (np.arange(8) - 3.5) / 8.0
    blocks = len(field.keys)
    error = (rng.normal(0, NOISE, (blocks, 1, 1, 1))
             + rng.normal(0, NOISE, (blocks, 1, 1, 1)) * ramp[None, :, None, None]
             + rng.normal(0, NOISE, (blocks, 1, 1, 1)) * ramp[None, None, :, None]
             + rng.normal(0, NOISE, (blocks, 1, 1, 1)) * ramp[None, None, None, :]
             + rng.normal(0, NOISE / 2, field.values.shape))
    noisy = dataclasses.replace(field, values=np.clip(field.values + error, 0, 1).astype(field.values.dtype))
    centre = voxels.mean(0)
    original = pipeline.settle_and_measure
    settling = ZeroSetOptions(agreement=agreement, clean_agreement=max(agreement, ZeroSetOptions().clean_agreement))
    monkeypatch.setattr(pipeline, "settle_and_measure", lambda v, f, fld, planes=None, noise=None: original(v, f, fld, settling, planes, noise))
    options = RemeshOptions(resolution=N, mode="vae")
    settled = extract_surface(noisy, None, options, Stages())
    unsettled = extract_surface(noisy, None, dataclasses.replace(options, cleanup=CleanupOptions(settle=False)), Stages())
    before, after = normal_error(unsettled, centre), normal_error(settled, centre)
    assert (after > 1.1 * before) == rougher, (before, after)


def test_points_on_a_boxs_faces_near_its_edges_land_closer_with_the_planes_meeting_point():
    """Near a crease the planes around a point belong to two faces (and the edge's own chamfer-like
    planes, from voxels whose nearest point is the edge); the mean of the projections onto them falls
    between the faces, the point where they meet does not. Points 0.3 voxel off a box's faces, on
    either side, settled alone: the worst (99th percentile) and the mean distance fall by a fifth or
    more against the mean projection alone (crease fits tiny; the field is clean, so its own, the
    clean one, is what the default uses)."""
    box = trimesh.creation.box(extents=[1.0, 0.8, 0.6])
    field, index, voxels = field_of(box)
    surface = trimesh.Trimesh(voxels, box.faces)
    points, face = trimesh.sample.sample_surface(surface, 3000, seed=1)
    for off in (-0.3, 0.3):
        start = points + off * surface.face_normals[face]
        met = index.distance(settle_on_zero_set(start, NO_FACES, field))
        mean_only = index.distance(settle_on_zero_set(start, NO_FACES, field,
                                                      ZeroSetOptions(crease_fit=1e-9, clean_crease_fit=1e-9)))
        assert np.percentile(met, 99) < 0.8 * np.percentile(mean_only, 99), (np.percentile(met, 99), np.percentile(mean_only, 99))
        assert met.mean() < 0.85 * mean_only.mean(), (met.mean(), mean_only.mean())
        assert met.max() < 0.3


def test_the_agreement_grows_only_for_a_clean_field():
    """The best-agreeing quarter of the points measures the field's noise: at or above the noise
    floor the agreement is the option's, below it the clean one; NaN (no plane near) is left out."""
    options = ZeroSetOptions()
    rng = np.random.default_rng(0)
    noisy = rng.uniform(0.006, 0.05, 1000)
    assert field_agreement(field_noise(noisy), options) == options.agreement and not is_clean(field_noise(noisy))
    clean = np.concatenate([np.full(300, 0.002), rng.uniform(0.002, 0.05, 700)])
    assert field_noise(clean) == pytest.approx(0.002, rel=0.05) and is_clean(field_noise(clean))
    assert field_agreement(field_noise(clean), options) == options.clean_agreement
    assert field_agreement(field_noise(np.zeros(100)), options) == options.clean_agreement
    assert field_agreement(options.noise_floor, options) == options.agreement  # the floor itself is noise
    assert field_noise(np.full(10, np.nan)) == np.inf and field_agreement(np.inf, options) == options.agreement
    assert field_noise(np.concatenate([np.full(50, np.nan), noisy])) == field_noise(noisy)
    with pytest.raises(ValueError, match="clean_agreement"):
        ZeroSetOptions(clean_agreement=0.01).validate()


def test_a_clean_fields_vertices_keep_their_own_moves_at_creases(monkeypatch):
    """Around a crease of an exact field the planes disagree by the crease itself (two faces, and
    the edge's own planes between them), as much as a noisy field's do anywhere: leaning each vertex
    to its ring's mean move, as for noise, pulls the crease fit's vertices back off the edges.
    Measured on VAE mode's extraction of a tilted box's exact field: the vertices' mean and 99th
    percentile distance to the box with the agreement grown for a clean field against held at the
    noisy field's (clean_agreement = agreement)."""
    import model.pipeline as pipeline

    box = trimesh.creation.box(extents=[1.0, 0.8, 0.6])
    box.apply_transform(trimesh.transformations.rotation_matrix(0.5, [1.0, 2.0, 3.0]))
    field, index, _ = field_of(box)
    options = RemeshOptions(resolution=N, mode="vae", cleanup=CleanupOptions(creases=False))  # the settling alone
    grown = extract_surface(field, None, options, Stages())
    original = pipeline.settle_and_measure
    held = ZeroSetOptions(clean_agreement=ZeroSetOptions().agreement)
    monkeypatch.setattr(pipeline, "settle_and_measure", lambda v, f, fld, planes=None, noise=None: original(v, f, fld, held, planes, noise))
    fixed = extract_surface(field, None, options, Stages())
    assert np.array_equal(grown.faces, fixed.faces)
    off_grown, off_fixed = index.distance(grown.vertices), index.distance(fixed.vertices)
    assert off_grown.mean() < 0.6 * off_fixed.mean(), (off_grown.mean(), off_fixed.mean())
    assert np.percentile(off_grown, 99) < 0.6 * np.percentile(off_fixed, 99)


def test_a_sheets_rim_stays_where_the_sheet_ends():
    """A square sheet whose rim lies half a voxel between grid lines: the voxels just inside the rim
    read the rim's cone on one side along the sheet, and taking that side tilted their planes, whose
    meeting with the sheet's own pulled every rim vertex half a voxel inwards (the sheet 3.5 % short
    in area at N = 64). Their gradient is the sheet's normal, the side that keeps it of length 1.
    That left every rim vertex 0.03–0.09 voxel short, on the planes of the voxels beyond the rim,
    whose one-sided differences read the rim's cone; the squared distance's differences name the
    rim itself (within 0.02 voxel; a few corner vertices go that far beyond it)."""
    square = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], [[0, 1, 2], [0, 2, 3]]).subdivide().subdivide()
    field, index, voxels = field_of(square)
    low, high = voxels.min(0), voxels.max(0)
    assert np.allclose(low[:2] % 1, 0.5) and np.allclose(high[:2] % 1, 0.5)  # the rim between grid lines
    surface = extract_surface(field, None, RemeshOptions(resolution=N, mode="vae"), Stages())
    half, border = boundary_half_edges(len(surface.vertices), surface.faces)
    rim = surface.vertices[np.unique(half[border].ravel())]
    centre, size = (low + high) / 2, (high - low) / 2
    outside = np.maximum(np.abs(rim[:, 0] - centre[0]) - size[0], np.abs(rim[:, 1] - centre[1]) - size[1])
    assert len(rim) > 100 and np.abs(outside).max() < 0.03 and np.abs(outside).mean() < 0.005, outside
    assert index.distance(surface.vertices).max() < 0.03


@pytest.mark.parametrize("sloped_blocks", [0.0, 0.5])
def test_a_field_that_is_a_distance_only_in_part_has_no_noise(monkeypatch, sloped_blocks):
    """A sphere's exact field is clean; with half its blocks' values halved (there the field slopes
    at half a distance's rate: no planes) the planes of the other half still agree perfectly, but
    they reach only about half the voxels near the zero set, and the field has no noise to measure
    (inf: not clean) — as an untrained decoder's field, whose flood as an exact one left no surface.
    Without the share rule the half would pass for clean."""
    import model.zero_set as zero_set
    from model.grid import SparseField
    from model.zero_set import NOISE_MIN_KNOWN, sampled_noise

    field, _ = mesh_to_field(as_mesh(trimesh.creation.icosphere(subdivisions=4)), 64)
    values = np.array(field.values)
    if sloped_blocks:
        values[::2] *= 0.5
    field = SparseField(field.resolution, field.keys, values)
    assert is_clean(sampled_noise(field)) == (not sloped_blocks)
    if sloped_blocks:
        assert NOISE_MIN_KNOWN > 0.5
        monkeypatch.setattr(zero_set, "NOISE_MIN_KNOWN", 0.0)
        assert is_clean(sampled_noise(field))


@pytest.mark.parametrize("shape", ["box", "sheet"])
def test_the_squared_distance_names_the_foot_points_beside_creases_and_rims(shape):
    """Beside a box's edges and corners and beyond a tilted sheet's rim the voxels are nearest to a
    line or a point, and the one-sided differences of the distance read a cone and lean; the
    squared distance is a quadratic there, whose central differences name the foot point. With them
    (``squared_tolerance``) the voxels' foot points p − d·g lie on the surface: most exactly, the
    worst far closer than the one-sided ones'."""
    if shape == "box":
        tm = trimesh.creation.box(extents=[0.61, 0.53, 0.47])
        tm.apply_transform(trimesh.transformations.rotation_matrix(0.3, [1.0, 2.0, 0.5]))
    else:
        tm = square(np.array([0.3, 0.2, 1.0]), 0.0123, half=0.4)
    field, index, _ = field_of(tm)
    feet = {}
    for tolerance in (0.0, ZeroSetOptions().squared_tolerance):
        options = ZeroSetOptions(squared_tolerance=tolerance)
        dist, grads = zero_set_planes(field, options)
        block, i, j, k = np.nonzero(np.abs(grads).sum(axis=-1) > 0)
        voxels = key_coords(np.asarray(field.keys), N // BLOCK_SIZE)[block] * BLOCK_SIZE + np.stack([i, j, k], axis=1)
        feet[tolerance] = index.distance(voxels - dist[block, i, j, k, None] * grads[block, i, j, k])
    old, new = feet[0.0], feet[ZeroSetOptions().squared_tolerance]
    assert len(new) >= len(old)  # no voxel loses its plane
    # at 64: the box's 95th percentile 0.096 → 0.003 voxel, mean 0.013 → 0.005; the sheet's 0.37 →
    # 0.002, mean 0.038 → 0.005 (what stays is the voxels nearest the corners, and the box's medial
    # planes inside, where neither is a distance's plane)
    assert np.percentile(old, 95) > 0.05  # the cones' lean, which the test is about
    assert np.percentile(new, 95) < 0.1 * np.percentile(old, 95), (np.percentile(old, 95), np.percentile(new, 95))
    assert np.mean(new) < 0.5 * np.mean(old), (np.mean(old), np.mean(new))
