"""The narrow-band UDF against a brute-force float64 reference on random meshes."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from model.grid import BLOCK_SIZE, FAR, TRUNCATION_VOXELS
from model.udf import compute_udf
from model.ublocks import active_indices
from tests.reference import dense_udf

N = 64


def random_soup(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Large random triangles across the cube, plus slivers and fully degenerate ones."""
    rng = np.random.default_rng(seed)
    verts = rng.uniform(-0.42, 0.42, size=(60, 3))
    faces = rng.integers(0, 60, size=(25, 3))
    a, b = verts[0], verts[1]
    extra = np.array([a, b, (a + b) / 2, a, a, a])  # a collinear (zero-area) and a point triangle
    verts = np.vstack([verts, extra])
    faces = np.vstack([faces, [[60, 61, 62], [63, 64, 65]]])
    return verts, faces


def small_sphere(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.3)
    verts = sphere.vertices + rng.normal(scale=0.01, size=sphere.vertices.shape) + rng.uniform(-0.05, 0.05, 3)
    return verts, sphere.faces


@pytest.mark.parametrize("make,seed", [(random_soup, 0), (random_soup, 1), (small_sphere, 2)])
def test_udf_matches_bruteforce_and_active_set(make, seed):
    verts, faces = make(seed)
    dense = dense_udf(verts, faces, N)
    field = compute_udf(verts, faces, N)

    # every stored voxel equals the float64 reference to 1e-6 of the voxel size
    coords = field.coords
    worst = 0.0
    for (cx, cy, cz), block in zip(coords, field.values):
        ref = dense[8 * cx : 8 * cx + 8, 8 * cy : 8 * cy + 8, 8 * cz : 8 * cz + 8]
        worst = max(worst, float(np.abs(block.astype(np.float64) - ref).max()))
    assert worst * TRUNCATION_VOXELS <= 1e-6, f"max error {worst * TRUNCATION_VOXELS:.3g} voxels"

    # every voxel of a block that is not stored is at or beyond the truncation distance
    s = N // BLOCK_SIZE
    stored = np.zeros((s, s, s), dtype=bool)
    stored[tuple(coords.T)] = True
    block_min = dense.reshape(s, 8, s, 8, s, 8).min(axis=(1, 3, 5))
    assert np.all(block_min[~stored] >= FAR)

    # the active blocks are exactly those with an inner voxel below the threshold
    active = {tuple(c) for c in coords[active_indices(field)]}
    expected = {tuple(c) for c in np.argwhere(block_min < FAR)}
    assert active == expected
    assert len(active) > 0


def test_values_are_normalised_and_truncated():
    verts, faces = small_sphere(3)
    field = compute_udf(verts, faces, N)
    assert field.values.dtype == np.float32
    assert field.values.min() >= 0.0 and field.values.max() <= 1.0
    # a surface exists, so some voxel is within a voxel of it and some are truncated
    assert field.values.min() < 0.25 and (field.values == 1.0).any()


def test_keys_sorted_and_unique():
    verts, faces = random_soup(4)
    field = compute_udf(verts, faces, 128)
    assert np.all(np.diff(field.keys) > 0)
