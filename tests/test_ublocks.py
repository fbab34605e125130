"""UBlocks (8³ padded by 2 to 12³) and Pad-Average."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from model.grid import FAR, PAD, NEIGHBOR_OFFSETS, block_keys
from model.udf import compute_udf
from model.ublocks import PadAverage, UBlocks, active_indices, extract_ublocks, iter_ublocks, pad_average, validate_block_coords
from tests.reference import dense_udf

N = 64


@pytest.fixture(scope="module")
def shape():
    torus = trimesh.creation.torus(major_radius=0.3, minor_radius=0.08, major_sections=32, minor_sections=16)
    verts = torus.vertices + np.array([0.02, -0.03, 0.01])
    return verts, torus.faces, compute_udf(verts, torus.faces, N), dense_udf(verts, torus.faces, N)


def padded_dense(dense: np.ndarray) -> np.ndarray:
    return np.pad(dense, PAD, constant_values=FAR)


def test_ublocks_hold_the_true_padded_field(shape):
    _, _, field, dense = shape
    ub = extract_ublocks(field)
    assert ub.blocks.shape == (ub.num_blocks, 12, 12, 12) and ub.coords.shape == (ub.num_blocks, 3)
    assert ub.num_blocks == active_indices(field).shape[0] > 0
    big = padded_dense(dense)
    for block, (cx, cy, cz) in zip(ub.blocks, ub.coords):
        ref = big[8 * cx : 8 * cx + 12, 8 * cy : 8 * cy + 12, 8 * cz : 8 * cz + 12]
        np.testing.assert_allclose(block, ref, atol=1e-6)
        assert block[2:10, 2:10, 2:10].min() < FAR  # active: an inner voxel below the threshold
    assert np.all(np.diff(block_keys(ub.coords, N // 8)) > 0)


def test_chunked_iteration_equals_one_chunk(shape):
    _, _, field, _ = shape
    whole = extract_ublocks(field)
    parts = list(iter_ublocks(field, chunk_size=7))
    assert len(parts) == -(-whole.num_blocks // 7)
    np.testing.assert_array_equal(np.concatenate([p.blocks for p in parts]), whole.blocks)
    np.testing.assert_array_equal(np.concatenate([p.coords for p in parts]), whole.coords)


def test_pad_average_of_exact_blocks_restores_the_field(shape):
    _, _, field, dense = shape
    ub = extract_ublocks(field)
    out = pad_average(iter_ublocks(field, 50), N, ub.coords)
    for block, (cx, cy, cz) in zip(out.values, out.coords):
        np.testing.assert_allclose(block, dense[8 * cx : 8 * cx + 8, 8 * cy : 8 * cy + 8, 8 * cz : 8 * cz + 8], atol=1e-6)
    # the covered region is the active blocks and their 26 neighbours
    expected = {tuple(c + o) for c in ub.coords for o in NEIGHBOR_OFFSETS if np.all((c + o >= 0) & (c + o < N // 8))}
    assert {tuple(c) for c in out.coords} == expected


def test_pad_average_averages_every_overlap(shape):
    """Random block contents: each voxel must be the mean over all blocks whose 12³ covers it."""
    _, _, field, _ = shape
    coords = extract_ublocks(field).coords
    rng = np.random.default_rng(0)
    blocks = rng.uniform(0, 1, size=(len(coords), 12, 12, 12)).astype(np.float32)
    acc = PadAverage(N, coords)
    for start in range(0, len(coords), 13):
        acc.add(blocks[start : start + 13], coords[start : start + 13])
    out = acc.finish()

    sums = np.zeros((N + 4,) * 3)
    counts = np.zeros((N + 4,) * 3)
    for block, (cx, cy, cz) in zip(blocks, coords):
        sums[8 * cx : 8 * cx + 12, 8 * cy : 8 * cy + 12, 8 * cz : 8 * cz + 12] += block
        counts[8 * cx : 8 * cx + 12, 8 * cy : 8 * cy + 12, 8 * cz : 8 * cz + 12] += 1
    ref = np.where(counts > 0, sums / np.maximum(counts, 1), FAR)[2:-2, 2:-2, 2:-2]
    assert counts.max() == 8  # corners of the padding are shared by 8 blocks
    for block, (cx, cy, cz) in zip(out.values, out.coords):
        np.testing.assert_allclose(block, ref[8 * cx : 8 * cx + 8, 8 * cy : 8 * cy + 8, 8 * cz : 8 * cz + 8], atol=1e-6)


def test_pad_average_rejects_wrong_shapes(shape):
    _, _, field, _ = shape
    coords = extract_ublocks(field).coords[:3]
    acc = PadAverage(N, coords)
    with pytest.raises(ValueError, match=r"\[3, 12, 12, 12\]"):
        acc.add(np.zeros((3, 10, 10, 10), np.float32), coords)


def test_block_coordinate_validation():
    validate_block_coords(np.array([[0, 1, 2], [7, 7, 7]]), 8)
    with pytest.raises(ValueError, match="duplicates"):
        validate_block_coords(np.array([[0, 1, 2], [0, 1, 2]]), 8)
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        validate_block_coords(np.array([[0, 1, 8]]), 8)
    with pytest.raises(ValueError, match=r"\[L, 3\]"):
        validate_block_coords(np.array([0, 1, 2]), 8)


def test_ublocks_dataclass_counts():
    ub = UBlocks(64, np.zeros((2, 12, 12, 12), np.float32), np.zeros((2, 3), np.int32))
    assert ub.num_blocks == 2
