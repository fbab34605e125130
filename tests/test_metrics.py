"""Metrics (model/metrics.py) and the evaluation harness (backend/evaluate.py).

Every expected value here is derived by hand from the geometry (a sphere grown by d, a sheet
moved by d, a cube with bevelled edges) or recomputed by brute force with plain numpy; the meshes
are trimesh primitives, so the tests need nothing from outside the repository.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import replace

import numpy as np
import pytest
import trimesh

from backend.evaluate import MethodOutput, run_benchmark, run_eval, summarize
from model.mesh import Mesh, MeshError, save_mesh
from model.metrics import (
    MetricsConfig,
    PrimitiveIndex,
    SurfaceIndex,
    VisibilityConfig,
    compute_metrics,
    enclosed_mask,
    exposed_share,
    normal_error,
    outer_surface_mask,
    sample_pair,
    sample_surface,
    sharp_edges,
)
from tests.conftest import as_mesh

# Small but not toy: 40k points and 256-pixel renders keep each evaluation well under a second.
FAST = MetricsConfig(num_samples=40_000, sharp_samples=20_000, visibility=VisibilityConfig(views=32, resolution=256))
ORIENTATION_FREE_45 = 2.0 - 2.0 * math.cos(math.pi / 4)  # normal error between faces 45° apart



def sphere(radius: float = 0.5, subdivisions: int = 4) -> Mesh:
    return as_mesh(trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius))


def cube() -> Mesh:
    return as_mesh(trimesh.creation.box(extents=(1.0, 1.0, 1.0)))


def bevelled_cube(b: float) -> Mesh:
    """The unit cube with every edge cut by a 45° bevel that starts ``b`` from the edge on both
    faces: the convex hull of all permutations of (±0.5, ±(0.5-b), ±(0.5-b))."""
    points = []
    for axis in range(3):
        for signs in itertools.product((-1.0, 1.0), repeat=3):
            p = np.array(signs) * (0.5 - b)
            p[axis] = signs[axis] * 0.5
            points.append(p)
    return as_mesh(trimesh.convex.convex_hull(np.array(points)))


def sheet(z: float = 0.0) -> Mesh:
    """A flat open square, [-0.5, 0.5]² at height z (two triangles)."""
    v = np.array([[-0.5, -0.5, z], [0.5, -0.5, z], [0.5, 0.5, z], [-0.5, 0.5, z]])
    return Mesh(v, np.array([[0, 1, 2], [0, 2, 3]]))


def brute_point_triangle_distance(points: np.ndarray, mesh: Mesh) -> np.ndarray:
    """Distance from each point to the mesh, by projecting on every triangle's plane, edge and
    vertex with plain numpy (no shared code with model/metrics.py)."""
    tri = mesh.vertices[mesh.faces]  # [F, 3, 3]
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    n = np.cross(b - a, c - a)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    out = np.empty(len(points))
    for i, p in enumerate(points):
        # Plane projection, kept only when it falls inside the triangle.
        d = np.einsum("fj,fj->f", p - a, n)
        q = p - d[:, None] * n
        inside = np.ones(len(tri), dtype=bool)
        for u, v in ((a, b), (b, c), (c, a)):
            inside &= np.einsum("fj,fj->f", np.cross(v - u, q - u), n) >= -1e-15
        best = np.where(inside, np.abs(d), np.inf)
        for u, v in ((a, b), (b, c), (c, a)):
            t = np.clip(np.einsum("fj,fj->f", p - u, v - u) / np.einsum("fj,fj->f", v - u, v - u), 0.0, 1.0)
            best = np.minimum(best, np.linalg.norm(p - (u + t[:, None] * (v - u)), axis=1))
        out[i] = best.min()
    return out


# ------------------------------------------------------------------------------------------------
# Chamfer distance and F-score
# ------------------------------------------------------------------------------------------------


def test_mesh_against_itself_is_perfect():
    m = sphere()
    r = compute_metrics(m, m, FAST)
    assert r["CD"] < 1e-12
    assert r["F1@0.01"] == 1.0 and r["F1@0.001"] == 1.0
    assert r["NMSE"] < 1e-12
    assert math.isnan(r["SNE"])  # a sphere has no sharp edge
    assert set(("CD", "F1@0.01", "F1@0.001", "NMSE", "SNE")) <= set(r)


def test_sampling_floor_is_far_below_voxel_errors():
    """The metric's own floor: CD of a mesh against a differently triangulated copy of the same
    surface with independent samples. Point-to-surface distances make it ~0, far below the 1e-3
    (one voxel at N = 1024) that the benchmark has to resolve."""
    box = cube()
    vertices, faces = trimesh.remesh.subdivide_to_size(box.vertices, box.faces, max_edge=0.05)
    finer = Mesh(np.asarray(vertices, dtype=np.float64), np.asarray(faces, dtype=np.int64))
    r = compute_metrics(box, finer, FAST)
    assert finer.num_faces > 100 * box.num_faces
    assert r["CD"] < 1e-6
    assert r["F1@0.001"] == 1.0


@pytest.mark.parametrize("d", [0.002, 0.006])
def test_grown_sphere_gives_cd_equal_to_offset(d):
    """A sphere against a concentric copy grown by d: every point is d from the other surface
    (up to the facets' cos(half-angle) ≈ 1 - 1e-3 for this tessellation), so CD = d and F1@ξ
    jumps from 0 to 1 as ξ crosses d."""
    gt = sphere(0.5)
    pred = Mesh(gt.vertices * (0.5 + d) / 0.5, gt.faces)
    config = replace(FAST, fscore_thresholds=(0.9 * d, 1.1 * d, 0.01, 0.001))
    r = compute_metrics(gt, pred, config)
    assert r["CD"] == pytest.approx(d, rel=0.01)
    assert r[f"F1@{0.9 * d:g}"] < 0.01
    assert r[f"F1@{1.1 * d:g}"] > 0.99
    assert r["F1@0.01"] > 0.99
    assert r["F1@0.001"] < 0.01
    assert r["NMSE"] < 1e-3  # same directions everywhere (up to facet alignment)


def test_shifted_sheet_is_exact():
    """An open sheet against a parallel copy d above it: every distance is exactly d, in both
    directions, with either sampling (both faces of a sheet are outer surface)."""
    d = 0.004
    for sampling in ("outer", "uniform"):
        config = replace(FAST, sampling=sampling, fscore_thresholds=(0.99 * d, 1.01 * d))
        r = compute_metrics(sheet(0.0), sheet(d), config)
        assert r["CD"] == pytest.approx(d, abs=1e-12)
        assert r["Comp"] == pytest.approx(d, abs=1e-12) and r["Acc"] == pytest.approx(d, abs=1e-12)
        assert r[f"F1@{0.99 * d:g}"] == 0.0 and r[f"F1@{1.01 * d:g}"] == 1.0
        assert r["NMSE"] < 1e-12


def test_point_to_point_mode_matches_bruteforce():
    """The literal formula of the LoG3D supplementary (min over the other *sample set*), checked
    against numpy pairwise distances on the very same samples."""
    config = replace(FAST, num_samples=1500, distance="point_to_point",
                              fscore_thresholds=(0.01, 0.02, 0.05))
    gt, pred = sphere(0.5, 2), bevelled_cube(0.1)
    r = compute_metrics(gt, pred, config)
    _, _, xs_gt, xs_pd = sample_pair(gt, pred, config)
    pair = np.linalg.norm(xs_gt.points[:, None, :] - xs_pd.points[None, :, :], axis=2)
    comp, acc = pair.min(axis=1), pair.min(axis=0)
    assert r["CD"] == pytest.approx(0.5 * (comp.mean() + acc.mean()), rel=1e-12)
    for xi in config.fscore_thresholds:
        p, rec = (acc < xi).mean(), (comp < xi).mean()
        expected = 0.0 if p + rec == 0 else 2 * p * rec / (p + rec)
        assert r[f"F1@{xi:g}"] == pytest.approx(expected, rel=1e-12)


def test_point_to_surface_distances_match_bruteforce():
    """The BVH closest-point search against brute force over every triangle, for points near the
    surface and far from it."""
    rng = np.random.default_rng(1)
    for mesh in (sphere(0.5, 2), bevelled_cube(0.1), cube()):
        near = sample_surface(mesh.vertices, mesh.faces, 150, rng).points + rng.normal(0, 0.01, (150, 3))
        far = rng.uniform(-1.0, 1.0, (150, 3))
        points = np.concatenate([near, far])
        dist, _ = SurfaceIndex(mesh.vertices, mesh.faces).query(points)
        np.testing.assert_allclose(dist, brute_point_triangle_distance(points, mesh), rtol=0, atol=1e-12)
    # Segments (used for the SNE band) too.
    seg = PrimitiveIndex(np.array([[0.0, 0, 0], [1.0, 0, 0], [1.0, 1.0, 0]]), np.array([[0, 1], [1, 2]]))
    d = seg.distance(np.array([[0.5, 0.3, 0.0], [2.0, 0.5, 0.0], [-1.0, 0.0, 1.0]]))
    np.testing.assert_allclose(d, [0.3, 1.0, math.sqrt(2.0)], atol=1e-12)


def test_deterministic_with_seed():
    gt, pred = sphere(0.5, 3), bevelled_cube(0.05)
    a = compute_metrics(gt, pred, FAST)
    b = compute_metrics(gt, pred, FAST)
    c = compute_metrics(gt, pred, replace(FAST, seed=1))
    keys = ("CD", "F1@0.01", "F1@0.001", "NMSE", "SNE")
    assert all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in keys)
    assert a["CD"] != c["CD"] and a["CD"] == pytest.approx(c["CD"], rel=0.05)


def test_broken_prediction_raises():
    with pytest.raises(MeshError):
        compute_metrics(sphere(), Mesh(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)), FAST)


# ------------------------------------------------------------------------------------------------
# Normals: NMSE and SNE
# ------------------------------------------------------------------------------------------------


def test_normal_error_is_orientation_free():
    n = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    m = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, math.sqrt(0.5), math.sqrt(0.5)]])
    np.testing.assert_allclose(normal_error(n, m), [0.0, 2.0, ORIENTATION_FREE_45])


def test_flipped_copy_has_zero_normal_error():
    """A UDF mesh has no consistent inside; a copy with every triangle reversed must score 0."""
    for mesh in (cube(), sphere(0.5, 3)):
        flipped = Mesh(mesh.vertices, mesh.faces[:, ::-1].copy())
        r = compute_metrics(mesh, flipped, FAST)
        assert r["CD"] < 1e-12 and r["NMSE"] < 1e-12
        if not math.isnan(r["SNE"]):
            assert r["SNE"] < 1e-12


def test_sharp_edges_of_cube_and_sphere():
    box = cube()
    edges = sharp_edges(box.vertices, box.faces, 15.0)
    assert len(edges) == 12  # the face diagonals are flat
    lengths = np.linalg.norm(box.vertices[edges[:, 0]] - box.vertices[edges[:, 1]], axis=1)
    np.testing.assert_allclose(lengths, 1.0)
    soup = box.vertices[box.faces].reshape(-1, 3)  # an STL file: three fresh vertices per triangle
    assert len(sharp_edges(soup, np.arange(len(soup)).reshape(-1, 3), 15.0)) == 12
    ball = sphere(0.5, 3)
    assert len(sharp_edges(ball.vertices, ball.faces, 15.0)) == 0
    assert len(sharp_edges(ball.vertices, ball.faces, 1.0)) > 0
    # Inconsistent winding on a flat square is not a 180° crease.
    flat = sheet()
    messy = Mesh(flat.vertices, np.array([[0, 1, 2], [0, 3, 2]]))
    assert len(sharp_edges(messy.vertices, messy.faces, 15.0)) == 0


def test_cube_vs_bevelled_cube_known_normal_errors():
    """GT: unit cube. Prediction: the same cube with 45° bevels of width b on every edge.

    GT → prediction: a GT point within b of an edge has the bevel as its closest surface (normal
    error e = 2 - 2 cos 45°), any other point the coplanar face (error 0). With the SNE band
    r > b, the GT band points score e·b/r; a prediction point whose closest GT point is in the band
    scores e on the bevel (area b√2 per unit edge) and 0 on the flat part (2(r - b)). NMSE is the
    same over the whole surface. Corners make the real values a few percent lower.
    """
    b, r = 0.02, 0.05
    config = replace(FAST, sharp_band=r)
    result = compute_metrics(cube(), bevelled_cube(b), config)
    e = ORIENTATION_FREE_45
    sne_gt = e * b / r
    sne_pred = e * b * math.sqrt(2) / (b * math.sqrt(2) + 2 * (r - b))
    area = 6 - 24 * b + 12 * b * math.sqrt(2)
    nmse = 0.5 * (e * 4 * b + e * 12 * b * math.sqrt(2) / area)
    assert result["SNE_gt_to_pred"] == pytest.approx(sne_gt, rel=0.1)
    assert result["SNE_pred_to_gt"] == pytest.approx(sne_pred, rel=0.1)
    assert result["SNE"] == pytest.approx(0.5 * (sne_gt + sne_pred), rel=0.1)
    assert result["NMSE"] == pytest.approx(nmse, rel=0.1)
    assert result["SNE"] > 4 * result["NMSE"]
    same = compute_metrics(cube(), cube(), config)
    assert same["SNE"] == 0.0 and same["NMSE"] == 0.0 and same["sharp_edges"] == 12


# ------------------------------------------------------------------------------------------------
# Outer-surface sampling
# ------------------------------------------------------------------------------------------------


def test_outer_sampling_drops_the_inner_wall():
    """A double-walled sphere (what an unsigned-distance iso-surface gives: walls 2ε apart) keeps
    only its outer wall; against the single sphere it then scores a perfect CD, while uniform
    sampling pays for the inner wall."""
    outer = sphere(0.5, 4)
    gap = 0.002  # 2/N at N = 1024
    inner = Mesh(outer.vertices * (0.5 - gap) / 0.5, outer.faces[:, ::-1])
    double = Mesh(np.vstack([outer.vertices, inner.vertices]), np.vstack([outer.faces, inner.faces + outer.num_vertices]))
    samples = sample_surface(double.vertices, double.faces, 20_000, np.random.default_rng(0))
    visible = outer_surface_mask(double.vertices, double.faces, samples, VisibilityConfig(views=32, resolution=512))
    on_inner = samples.face_ids >= outer.num_faces
    assert visible[~on_inner].mean() > 0.999
    assert visible[on_inner].mean() < 0.001
    outer_r = compute_metrics(outer, double, replace(FAST, visibility=VisibilityConfig(views=32, resolution=512)))
    uniform_r = compute_metrics(outer, double, replace(FAST, sampling="uniform"))
    assert outer_r["CD"] < 1e-9 and outer_r["F1@0.001"] == 1.0
    assert uniform_r["Acc"] == pytest.approx(gap / 2, rel=0.05)


def test_outer_sampling_keeps_an_open_sheet_and_a_concavity():
    # Both sides of a sheet and the inside of an open cup are visible from outside.
    flat = sheet()
    s = sample_surface(flat.vertices, flat.faces, 5000, np.random.default_rng(0))
    assert outer_surface_mask(flat.vertices, flat.faces, s, VisibilityConfig(views=16, resolution=256)).all()
    cup = as_mesh(trimesh.creation.annulus(r_min=0.3, r_max=0.5, height=0.8, sections=64))
    s = sample_surface(cup.vertices, cup.faces, 5000, np.random.default_rng(0))
    assert outer_surface_mask(cup.vertices, cup.faces, s, VisibilityConfig(views=64, resolution=512)).mean() > 0.99


def test_points_inside_another_closed_body_are_enclosed_whatever_its_winding():
    """Two boxes through each other and an open sheet through both: a point has solid on both
    sides exactly when it is strictly inside the other box (a sheet encloses nothing)."""
    a = trimesh.creation.box((1.0, 1.0, 1.0))
    b = trimesh.creation.box((1.0, 1.0, 1.0))
    b.apply_translation((0.5, 0.3, 0.2))
    sheet_part = trimesh.Trimesh([[-1, -1, 0.1], [1.5, -1, 0.1], [1.5, 1.5, 0.1], [-1, 1.5, 0.1]], [[0, 1, 2], [0, 2, 3]])
    for flip in (False, True):
        b_faces = b.faces[:, ::-1] if flip else b.faces
        mesh = Mesh(np.vstack([a.vertices, b.vertices, sheet_part.vertices]),
                    np.vstack([a.faces, b_faces + 8, sheet_part.faces + 16]))
        samples = sample_surface(mesh.vertices, mesh.faces, 20_000, np.random.default_rng(1))
        got = enclosed_mask(mesh.vertices, mesh.faces, samples, 1e-4)
        p = samples.points
        in_a = (np.abs(p) < 0.5).all(axis=1)
        in_b = (np.abs(p - (0.5, 0.3, 0.2)) < 0.5).all(axis=1)
        on_a, on_b = samples.face_ids < 12, (samples.face_ids >= 12) & (samples.face_ids < 24)
        expected = np.where(on_a, in_b, np.where(on_b, in_a, in_a | in_b))
        assert 3000 < expected.sum() < 17000
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("gap, hidden", [(0.0, True), (0.4, True), (2.0, False)])
def test_facing_walls_of_bodies_closer_than_a_pixel_are_enclosed(gap, hidden):
    """Two unit boxes side by side, ``gap`` render pixels apart: their facing walls have solid on
    both sides half a pixel off when the gap is narrower than a pixel; every other wall has air."""
    pixel = VisibilityConfig().pixel
    a = trimesh.creation.box((1.0, 1.0, 1.0))
    b = trimesh.creation.box((1.0, 1.0, 1.0))
    b.apply_translation((1.0 + gap * pixel, 0.0, 0.0))
    mesh = Mesh(np.vstack([a.vertices, b.vertices]), np.vstack([a.faces, b.faces[:, ::-1] + 8]))
    samples = sample_surface(mesh.vertices, mesh.faces, 6000, np.random.default_rng(2))
    got = enclosed_mask(mesh.vertices, mesh.faces, samples, 0.5 * pixel)
    facing = np.abs(np.abs(samples.points[:, 0] - 0.5 - gap * pixel / 2) - gap * pixel / 2) < 1e-9
    assert 500 < facing.sum() < 1500
    np.testing.assert_array_equal(got, facing & hidden)


def test_dropping_enclosed_points_scores_the_union_of_two_bodies_by_what_can_be_seen():
    """Two spheres through each other against their united surface (direct mode's): with the walls
    inside the other sphere dropped from the reference, completeness is that of the visible surface."""
    from model.pipeline import RemeshOptions, remesh

    one = sphere(0.3, 4)
    two = Mesh(np.vstack([one.vertices, one.vertices + (0.35, 0.0, 0.0)]), np.vstack([one.faces, one.faces + one.num_vertices]))
    united = remesh(two, RemeshOptions(resolution=128)).mesh
    visibility = VisibilityConfig(views=32, resolution=512)
    plain = compute_metrics(two, united, replace(FAST, visibility=visibility))
    dropped = compute_metrics(two, united, replace(FAST, visibility=replace(visibility, drop_enclosed=True)))
    assert dropped["Acc"] == plain["Acc"]  # one body: nothing of the prediction is enclosed
    assert dropped["Comp"] < 1.5 * dropped["Acc"]  # as close one way as the other: nothing hidden is asked for
    assert plain["Comp"] > 2.0 * dropped["Comp"]  # the depth test alone lets some of the inner walls through


def test_exposed_share_is_the_area_outside_the_other_bodies():
    """Two 2×2×2 boxes overlapping by a 1×1×1 corner: of each box's 24 units of area, 3 lie inside
    the other (a quarter of three faces), so 42 of 48 are exposed; one box alone is all exposed, and
    an open sheet through a box is enclosed only where it is inside."""
    box = trimesh.creation.box(extents=(2.0, 2.0, 2.0))
    two = Mesh(np.vstack([box.vertices, box.vertices + 1.0]), np.vstack([box.faces, box.faces + 8]))
    assert exposed_share(two) == pytest.approx(42 / 48, abs=0.006)
    assert exposed_share(as_mesh(box)) == 1.0
    sheet = np.array([[-2.0, -2.0, 0.1], [2.0, -2.0, 0.1], [2.0, 2.0, 0.1], [-2.0, 2.0, 0.1]])
    through = Mesh(np.vstack([box.vertices, sheet]), np.vstack([box.faces, np.array([[8, 9, 10], [8, 10, 11]])]))
    # box 24 exposed, sheet 16 of which 4 inside the box
    assert exposed_share(through) == pytest.approx(36 / 40, abs=0.006)


# ------------------------------------------------------------------------------------------------
# The harness
# ------------------------------------------------------------------------------------------------


def test_run_eval_from_files(tmp_path):
    save_mesh(sphere(0.5, 3), tmp_path / "gt.ply")
    save_mesh(Mesh(sphere(0.5, 3).vertices * 1.004, sphere(0.5, 3).faces), tmp_path / "pred.obj")
    r = run_eval(tmp_path / "gt.ply", tmp_path / "pred.obj", FAST)
    assert list(r)[:5] == ["CD", "F1@0.01", "F1@0.001", "NMSE", "SNE"]
    assert r["CD"] == pytest.approx(0.002, rel=0.02)


def test_benchmark_records_failures_and_writes_tables(tmp_path):
    meshes = tmp_path / "meshes"
    meshes.mkdir()
    save_mesh(cube(), meshes / "cube.ply")
    save_mesh(sphere(0.5, 3), meshes / "ball.obj")
    (meshes / "MANIFEST.tsv").write_text("not a mesh\n")

    def identity(mesh: Mesh, n: int) -> MethodOutput:
        return MethodOutput(mesh=mesh, seconds=0.01, total_seconds=0.02)

    def shrink(mesh: Mesh, n: int) -> MethodOutput:
        c = mesh.vertices.mean(axis=0)
        return MethodOutput(mesh=Mesh(c + (mesh.vertices - c) * (1 - 1.0 / n), mesh.faces), seconds=0.5, total_seconds=0.5)

    def crash(mesh: Mesh, n: int) -> MethodOutput:
        raise RuntimeError("out of memory")

    def empty(mesh: Mesh, n: int) -> MethodOutput:
        return MethodOutput(mesh=Mesh(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)), seconds=0.0, total_seconds=0.0)

    registry = {"identity": identity, "shrink": shrink, "crash": crash, "empty": empty}
    out = tmp_path / "out"
    quick = replace(FAST, num_samples=10_000, sharp_samples=5_000)
    rows = run_benchmark(meshes, [64, 128], list(registry), out, plot=True, config=quick,
                         method_registry=registry, log=None)
    assert len(rows) == 2 * 2 * 4
    by = {(r["mesh"], r["method"], r["resolution"]): r for r in rows}
    assert by[("cube.ply", "identity", 64)]["CD"] < 1e-12
    assert by[("cube.ply", "crash", 64)]["status"] == "failed"
    assert "out of memory" in by[("cube.ply", "crash", 64)]["error"]
    assert by[("ball.obj", "empty", 128)]["status"] == "failed"
    assert by[("ball.obj", "empty", 128)]["stage"] == "output"
    assert by[("ball.obj", "shrink", 128)]["faces"] == by[("ball.obj", "shrink", 128)]["input_faces"]
    for suffix in ("md", "json", "csv", "png"):
        assert (out / f"metrics_benchmark.{suffix}").stat().st_size > 0
    report = (out / "metrics_benchmark.md").read_text()
    assert "failed" in report and "out of memory" in report
    data = json.loads((out / "metrics_benchmark.json").read_text())
    assert len(data["rows"]) == len(rows) and data["config"]["num_samples"] == quick.num_samples
    summary = {(s["method"], s["resolution"]): s for s in summarize(rows)}
    assert summary[("crash", 64)]["failed"] == 2 and summary[("identity", 64)]["ok"] == 2
    # No mesh succeeds with every method, so the like-for-like means are empty rather than biased.
    assert summary[("identity", 64)]["common_meshes"] == 0
    assert summary[("shrink", 128)]["own_mean_CD"] > summary[("identity", 128)]["own_mean_CD"]


def test_benchmark_rejects_unknown_method(tmp_path):
    with pytest.raises(ValueError, match="unknown method"):
        run_benchmark(tmp_path, [64], ["nope"], tmp_path / "out", method_registry={}, log=None)
