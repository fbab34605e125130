"""Sparse marching cubes: agrees with scikit-image on dense fields, welded across block seams."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from scipy.spatial import cKDTree
from skimage.measure import marching_cubes

from model.extract import case_table, marching_cubes_sparse
from model.grid import FAR, SparseField, block_keys, iso_level
from model.udf import compute_udf
from model.ublocks import extract_ublocks, iter_ublocks, pad_average
from tests.reference import dense_udf


def edges_of(faces: np.ndarray) -> np.ndarray:
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    return np.unique(e, axis=0, return_counts=True)[1]


def dense_to_sparse(dense: np.ndarray) -> SparseField:
    n = dense.shape[0]
    s = n // 8
    coords = np.argwhere(np.ones((s, s, s), bool))
    values = dense.reshape(s, 8, s, 8, s, 8).transpose(0, 2, 4, 1, 3, 5).reshape(-1, 8, 8, 8)
    order = np.argsort(block_keys(coords, s))
    return SparseField(resolution=n, keys=block_keys(coords, s)[order], values=values[order].astype(np.float32))


def area(v: np.ndarray, f: np.ndarray) -> float:
    return float(np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1).sum() / 2)


def test_case_table_is_complete():
    counts, table, edges = case_table()
    assert counts[0] == 0 and counts[255] == 0
    assert counts.max() <= 5 and counts[1:255].min() >= 1
    assert edges.shape == (12, 3)
    # every triangle of every case uses only edges whose two corners differ in sign
    for case in range(256):
        for e in table[case, : 3 * counts[case]]:
            c0, c1, _ = edges[e]
            assert ((case >> c0) & 1) != ((case >> c1) & 1)


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_scikit_image_on_a_dense_field(seed):
    """Pad-Average of the UBlocks, then our marching cubes, equals scikit-image's marching cubes of
    the dense field: the same crossing points and the same area."""
    rng = np.random.default_rng(seed)
    tm = trimesh.creation.capsule(height=0.3, radius=0.15)
    tm.apply_transform(trimesh.transformations.random_rotation_matrix(rng.uniform(size=3)))
    n = 64
    dense = dense_udf(tm.vertices, tm.faces, n)
    field = compute_udf(tm.vertices, tm.faces, n)
    assembled = pad_average(iter_ublocks(field, 100), n, extract_ublocks(field).coords)
    ours_v, ours_f = marching_cubes_sparse(assembled, iso_level())
    ref_v, ref_f, _, _ = marching_cubes(dense, level=iso_level(), method="lorensen")
    assert len(ours_f) > 1000
    # vertices are the same edge crossings (ours are kept 1e-4 inside their edge)
    d_ours, _ = cKDTree(ref_v).query(ours_v)
    d_ref, _ = cKDTree(ours_v).query(ref_v)
    assert d_ours.max() < 2e-4 and d_ref.max() < 2e-4
    assert abs(area(ours_v, ours_f) - area(ref_v, ref_f)) / area(ref_v, ref_f) < 2e-3


def test_random_field_gives_a_closed_oriented_surface():
    """Noise in the middle of a FAR border: every case of the table gets exercised, and the result
    must still be a closed, consistently oriented, crack-free surface."""
    rng = np.random.default_rng(7)
    n = 64
    dense = np.full((n, n, n), FAR, dtype=np.float32)
    dense[4:-4, 4:-4, 4:-4] = rng.uniform(0, 0.5, size=(n - 8,) * 3)
    v, f = marching_cubes_sparse(dense_to_sparse(dense), iso_level())
    assert set(edges_of(f)) == {2}  # every edge in exactly two triangles: closed, no cracks
    tm = trimesh.Trimesh(v, f, process=False)
    assert tm.is_winding_consistent
    assert len(np.unique(np.round(v, 6), axis=0)) == len(v)  # no duplicate vertices
    ref_v = marching_cubes(dense, level=iso_level(), method="lorensen")[0]
    assert len(ref_v) == len(v)


def test_sphere_round_trip_is_two_welded_watertight_shells(sphere):
    """A closed sphere at N=128: the ε-surface of its UDF is an outer and an inner shell, each
    edge-manifold with no boundary, with no duplicate vertices at block seams."""
    from model.mesh import fit_unit_cube
    from model.grid import unit_margin

    n = 128
    unit = fit_unit_cube(sphere.vertices, unit_margin(n)).to_unit(sphere.vertices)
    field = compute_udf(unit, sphere.faces, n)
    assembled = pad_average(iter_ublocks(field, 500), n, extract_ublocks(field).coords)
    v, f = marching_cubes_sparse(assembled, iso_level())
    assert set(edges_of(f)) == {2}
    assert len(np.unique(np.round(v, 6), axis=0)) == len(v)
    tm = trimesh.Trimesh(v, f, process=False)
    bodies = tm.split(only_watertight=False)
    assert len(bodies) == 2 and all(b.is_watertight for b in bodies)
    radii = sorted(np.linalg.norm(b.vertices - (n - 1) / 2, axis=1).mean() for b in bodies)
    # outer shell one voxel outside the sphere, inner one voxel inside (radius (n - 10) / 2 voxels)
    r = (n - 10) / 2
    assert abs(radii[0] - (r - 1)) < 0.3 and abs(radii[1] - (r + 1)) < 0.3


def test_empty_field_and_bad_level():
    empty = SparseField(64, np.empty(0, np.int64), np.empty((0, 8, 8, 8), np.float32))
    v, f = marching_cubes_sparse(empty, 0.25)
    assert v.shape == (0, 3) and f.shape == (0, 3)
    with pytest.raises(ValueError, match="level"):
        marching_cubes_sparse(empty, 1.5)
