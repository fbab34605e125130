"""Exact closest points through the UDF's block lists (model.gpu.surface) against the CPU's BVH, and
the direct-mode torch clean-up against the CPU clean-up with its exact surface."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh

from model.bvh import PrimitiveIndex
from model.cleanup import CleanupOptions, clean_surface, deflate
from model.gpu.cleanup import clean_surface_torch, deflate_torch
from model.gpu.field import TorchField
from model.gpu.surface import EXACT_RADIUS, BlockCandidates, closest_points_torch
from model.gpu.udf import compute_udf_torch
from model.grid import unit_margin
from model.mesh import Mesh, Normalization, fit_unit_cube, load_mesh, used_vertices
from model.pipeline import input_surface
from model.udf import _bin_triangles, triangles_in_voxels
from tests.conftest import SHARED_MESHES, as_mesh, torch_devices
from tests.test_gpu_cleanup import SHAPES, assert_same_surface, epsilon_surface, on

pytestmark = pytest.mark.usefixtures("torch_one_thread")

DEVICES = torch_devices()


def fandisk() -> Mesh:
    path = SHARED_MESHES / "fandisk.obj"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return load_mesh(path)


def turned_torus() -> Mesh:
    """The torus of the CPU clean-up tests, turned off the grid's axes. Centred and axis-aligned, its
    ε-surface has vertices exactly equidistant from two faces (on the input's medial axis, by
    symmetry), where the BVH and the block lists may each pick either closest point — both exact,
    but the deflate then moves the vertex differently."""
    torus = trimesh.creation.torus(major_radius=1.0, minor_radius=0.3)
    torus.apply_transform(trimesh.transformations.rotation_matrix(0.3, [1.0, 2.0, 3.0]))
    return as_mesh(torus)


MESHES = {
    "sphere": lambda: as_mesh(trimesh.creation.icosphere(subdivisions=3, radius=1.0)),
    "box": SHAPES["box"],
    "torus": turned_torus,
    "sheet": SHAPES["sheet"],
    "fandisk": fandisk,
}

_CACHE: dict[tuple[str, int], tuple[Mesh, Normalization, TorchField, BlockCandidates]] = {}


def direct(name: str, n: int) -> tuple[Mesh, Normalization, TorchField, BlockCandidates]:
    """Mesh, normalisation, torch UDF and block candidates (on the CPU), once per session."""
    if (name, n) not in _CACHE:
        mesh = MESHES[name]()
        normalization = fit_unit_cube(used_vertices(mesh), unit_margin(n))
        field, candidates = compute_udf_torch(normalization.to_unit(mesh.vertices), mesh.faces, n, "cpu",
                                              return_candidates=True)
        _CACHE[name, n] = mesh, normalization, field, candidates
    return _CACHE[name, n]


def points_near(index: PrimitiveIndex, count: int, reach: float, seed: int = 0) -> np.ndarray:
    """Points at a uniform random distance below ``reach`` (voxels) from uniform random surface
    points, in random directions (so at most ``reach`` from the surface)."""
    rng = np.random.default_rng(seed)
    tri = index.vertices[index.elements]
    face = rng.integers(0, len(tri), count)
    u = rng.random((count, 2))
    u = np.where(u.sum(axis=1, keepdims=True) > 1, 1 - u, u)
    on_surface = tri[face, 0] + u[:, :1] * (tri[face, 1] - tri[face, 0]) + u[:, 1:] * (tri[face, 2] - tri[face, 0])
    direction = rng.normal(size=(count, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    return on_surface + direction * rng.uniform(0.0, reach, size=(count, 1))


def assert_exact(points: np.ndarray, dist: torch.Tensor, closest: torch.Tensor, index: PrimitiveIndex) -> None:
    """Distances within 1e-6 voxel of the BVH's; closest points within 1e-5 of its, except at ties
    (points equidistant from two places of the input), where the point found must be on the input
    and just as near."""
    assert dist.dtype == closest.dtype == torch.float64
    expected_dist, _, expected = index.closest_points(points)
    got_dist, got = dist.cpu().numpy(), closest.cpu().numpy()
    np.testing.assert_allclose(got_dist, expected_dist, rtol=0.0, atol=1e-6)
    differ = np.linalg.norm(got - expected, axis=1) > 1e-5
    assert differ.mean() < 0.01, "ties are rare for random points"
    np.testing.assert_allclose(np.linalg.norm(points[differ] - got[differ], axis=1), expected_dist[differ], atol=1e-9)
    assert index.distance(got[differ]).max(initial=0.0) < 1e-9


# --- closest points ------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name,n", [("sphere", 64), ("box", 64), ("box", 128), ("fandisk", 64), ("fandisk", 128)])
def test_closest_points_match_the_bvh_within_three_voxels(name, n, device):
    mesh, normalization, _, candidates = direct(name, n)
    index = input_surface(mesh, normalization, n)
    points = points_near(index, 3000, 3.0)
    dist, closest = closest_points_torch(torch.as_tensor(points, device=device), candidates.to(device))
    assert dist.device.type == device
    assert_exact(points, dist, closest, index)


def test_the_lists_are_the_cpu_binning():
    """The candidates are the CPU's (triangle, block) pairs, the rule the exactness bound rests on."""
    mesh, normalization, _, candidates = direct("sphere", 64)
    tri = np.ascontiguousarray(triangles_in_voxels(normalization.to_unit(mesh.vertices), mesh.faces, 64))
    lo, hi = tri.min(axis=1).copy(), tri.max(axis=1).copy()
    degenerate = np.zeros(len(tri), dtype=bool)
    empty = np.empty(0, dtype=np.int64)
    count = _bin_triangles(tri, degenerate, lo, hi, 8, 4.0, False, empty, empty)
    pair_tri, pair_key = np.empty(count, np.int64), np.empty(count, np.int64)
    _bin_triangles(tri, degenerate, lo, hi, 8, 4.0, True, pair_tri, pair_key)
    counts = np.diff(candidates.offsets.numpy())
    got = set(zip(np.repeat(candidates.keys.numpy(), counts).tolist(), candidates.triangles.numpy().tolist()))
    assert got == set(zip(pair_key.tolist(), pair_tri.tolist()))
    assert torch.all(candidates.keys[1:] > candidates.keys[:-1]) and counts.min() > 0
    np.testing.assert_allclose(candidates.corners.numpy(), tri, rtol=0.0, atol=1e-12)


def test_the_bound_holds_at_the_far_corner_of_a_cell():
    """The worst place for a point: the corner of its block's (centred) cell, 4·√3 from the block's
    centre. A tiny triangle just inside the bound beyond it, on the side away from the centre, is
    still in the block's list and is found in front of a slightly farther one towards the centre."""
    n = 64
    centre = np.full(3, 8 * 3 + 3.5)
    point = centre + 4.0 - 1e-9
    away = np.ones(3) / math.sqrt(3.0)
    side = np.array([1.0, -1.0, 0.0]) / math.sqrt(2.0)
    other = np.cross(away, side)

    def tiny(at: np.ndarray) -> np.ndarray:
        return np.stack([at + 0.01 * side, at - 0.01 * side + 0.01 * other, at - 0.01 * side - 0.01 * other])

    near, far = point + (EXACT_RADIUS - 0.01) * away, point - (EXACT_RADIUS + 0.05) * away
    voxels = np.concatenate([tiny(near), tiny(far)])
    _, candidates = compute_udf_torch((voxels + 0.5) / n - 0.5, np.array([[0, 1, 2], [3, 4, 5]]), n, "cpu",
                                      return_candidates=True)
    index = PrimitiveIndex(voxels, np.array([[0, 1, 2], [3, 4, 5]]))
    dist, closest = closest_points_torch(torch.as_tensor(point[None]), candidates)
    assert_exact(point[None], dist, closest, index)
    np.testing.assert_allclose(closest.numpy()[0], near, atol=1e-9)


def test_chunks_dtypes_and_points_without_candidates():
    mesh, normalization, _, candidates = direct("fandisk", 128)
    index = input_surface(mesh, normalization, 128)
    points = points_near(index, 500, 3.0, seed=1)
    lonely = np.array([[1.0, 1.0, 1.0], [-40.0, -3.0, -50.0]])  # the corner block has no candidates; off the grid
    all_points = torch.as_tensor(np.concatenate([points, lonely]))
    whole = closest_points_torch(all_points, candidates)
    tiny = closest_points_torch(all_points, candidates, chunk=97)  # a point's list spans chunks
    assert torch.equal(whole[0], tiny[0]) and torch.equal(whole[1], tiny[1])
    assert_exact(points, whole[0][:-2], whole[1][:-2], index)
    assert torch.isinf(whole[0][-2:]).all() and torch.equal(whole[1][-2:], all_points[-2:])
    single = closest_points_torch(all_points[:-2].float(), candidates)
    assert single[0].dtype == torch.float64
    np.testing.assert_allclose(single[0].numpy(), whole[0][:-2].numpy(), atol=1e-4)
    empty = closest_points_torch(torch.zeros(0, 3), candidates)
    assert empty[0].shape == (0,) and empty[1].shape == (0, 3)


def test_zero_area_triangles_are_left_out_and_slivers_are_segments():
    """input_surface drops zero-area triangles; nearly degenerate ones are measured as segments."""
    n = 64
    a, b = np.array([20.0, 20.0, 20.0]), np.array([30.0, 24.0, 21.0])
    sliver = np.stack([a, b, (a + b) / 2 + np.array([0.0, 0.0, 1e-11])])  # area ~1e-10: kept, but flagged
    flat = np.stack([a, b, (a + b) / 2]) + np.array([0.0, 10.0, 5.0])  # half-voxel coordinates: exactly collinear
    voxels = np.concatenate([sliver, flat])
    _, candidates = compute_udf_torch((voxels + 0.5) / n - 0.5, np.array([[0, 1, 2], [3, 4, 5]]), n, "cpu",
                                      return_candidates=True)
    assert set(candidates.triangles.tolist()) == {0}
    segment = PrimitiveIndex(candidates.corners[0, :2].numpy(), np.array([[0, 1]]))
    rng = np.random.default_rng(3)
    points = a + (b - a) * rng.uniform(-0.1, 1.1, size=(200, 1)) + rng.normal(scale=0.5, size=(200, 3))
    dist, closest = closest_points_torch(torch.as_tensor(points), candidates)
    expected_dist, _, expected = segment.closest_points(points)
    np.testing.assert_allclose(dist.numpy(), expected_dist, rtol=0.0, atol=1e-6)
    np.testing.assert_allclose(closest.numpy(), expected, rtol=0.0, atol=1e-5)


def test_the_default_udf_call_is_unchanged():
    mesh, normalization, field, _ = direct("box", 64)
    plain = compute_udf_torch(normalization.to_unit(mesh.vertices), mesh.faces, 64, "cpu")
    assert isinstance(plain, TorchField)
    assert torch.equal(plain.keys, field.keys) and torch.equal(plain.values, field.values)


# --- the direct-mode clean-up --------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["box", "torus", "fandisk"])
def test_direct_clean_up_matches_the_cpu_clean_up(name, device):
    mesh, normalization, _, candidates = direct(name, 64)
    s = epsilon_surface(mesh, 64)
    exact = input_surface(mesh, normalization, 64)
    options = CleanupOptions(deflate=True, outer_shell=True, single_layer=False)  # closed shapes: no slabs
    expected_v, expected_f = clean_surface(s.vertices, s.faces, s.field, options, surface=exact)
    got_v, got_f = clean_surface_torch(*on(device, s), options, surface=candidates.to(device))
    assert got_v.device.type == device
    assert_same_surface(got_v, got_f, expected_v, expected_f)
    field_only, _ = clean_surface(s.vertices, s.faces, s.field, options)
    assert np.abs(field_only - expected_v).max() > 1e-3, "the surface must change the result"
    assert exact.distance(got_v.cpu().numpy()).max() < 1e-6  # every vertex ends on the input


@pytest.mark.parametrize("device", DEVICES)
def test_direct_single_layer_matches_the_cpu_clean_up(device):
    """An open sheet: the slab is deflated by the field alone, cut to one layer and its pinholes
    filled with centres put onto the input, as on the CPU."""
    mesh, normalization, _, candidates = direct("sheet", 64)
    s = epsilon_surface(mesh, 64)
    exact = input_surface(mesh, normalization, 64)
    options = CleanupOptions(deflate=True, outer_shell=True, single_layer=True)
    expected_v, expected_f = clean_surface(s.vertices, s.faces, s.field, options, surface=exact)
    got_v, got_f = clean_surface_torch(*on(device, s), options, surface=candidates.to(device))
    assert 0 < len(expected_f) < len(s.faces) // 2  # one layer of the slab's two sides
    assert_same_surface(got_v, got_f, expected_v, expected_f)


def test_direct_deflate_takes_both_branches_like_the_cpu():
    """On the fandisk's ε-surface, some vertices go straight to their closest point and some
    (near concave creases) take the field's estimate first; both match the CPU deflate."""
    mesh, normalization, _, candidates = direct("fandisk", 64)
    s = epsilon_surface(mesh, 64)
    exact = input_surface(mesh, normalization, 64)
    v, f, field = on("cpu", s)
    expected = deflate(s.vertices, s.faces, s.field, exact)
    got = deflate_torch(v, f, field, candidates).numpy()
    np.testing.assert_allclose(got, expected, rtol=0.0, atol=1e-6)
    closest = exact.closest_points(s.vertices)[2]
    straight = np.all(np.abs(expected - closest) < 1e-9, axis=1)
    assert 0 < straight.sum() < len(straight)
    elsewhere = BlockCandidates(128, candidates.keys, candidates.offsets, candidates.triangles, candidates.corners)
    with pytest.raises(ValueError):
        deflate_torch(v, f, field, elsewhere)
