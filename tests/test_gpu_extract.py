"""The torch marching cubes equals the numba one: same vertices, same oriented faces, welded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from model.extract import marching_cubes_sparse
from model.gpu.extract import marching_cubes_torch
from model.gpu.field import TorchField
from model.grid import FAR, SparseField, block_keys, iso_level, unit_margin
from model.mesh import fit_unit_cube, load_mesh
from model.udf import compute_udf
from model.ublocks import extract_ublocks, iter_ublocks, pad_average
from tests.conftest import SHARED_MESHES, torch_devices

N = 64
DEVICES = torch_devices()


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def udf_of(vertices: np.ndarray, faces: np.ndarray, n: int = N) -> SparseField:
    norm = fit_unit_cube(vertices, unit_margin(n))
    return compute_udf(norm.to_unit(vertices), faces, n)


def sparse_field(coords: list[tuple[int, int, int]], values: np.ndarray, n: int = N) -> SparseField:
    keys = block_keys(np.array(coords), n // 8)
    order = np.argsort(keys)
    return SparseField(resolution=n, keys=keys[order], values=values[order].astype(np.float32))


def run_torch(field: SparseField, device: str, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    v, f = marching_cubes_torch(TorchField.from_sparse(field, device), iso_level(), **kwargs)
    assert v.device.type == device and f.device.type == device
    assert v.dtype == torch.float64 and f.dtype == torch.int64
    return v.cpu().numpy(), f.cpu().numpy()


def canonical(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertices in lexicographic order, and faces as sorted rows of those ranks, each face rotated
    (not reflected) so its smallest index comes first: equal iff the oriented meshes are equal."""
    order = np.lexsort(vertices.T[::-1])
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    f = rank[faces]
    shift = np.argmin(f, axis=1)
    rows = np.arange(f.shape[0])[:, None]
    f = f[rows, (shift[:, None] + np.arange(3)[None, :]) % 3]
    return vertices[order], f[np.lexsort(f.T[::-1])]


def assert_welded(vertices: np.ndarray, faces: np.ndarray) -> None:
    assert len(np.unique(np.round(vertices, 6), axis=0)) == len(vertices), "duplicate vertices"
    assert np.array_equal(np.unique(faces), np.arange(len(vertices))), "unused or missing vertices"


def assert_same_mesh(field: SparseField, device: str, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    ref_v, ref_f = marching_cubes_sparse(field, iso_level())
    v, f = run_torch(field, device, **kwargs)
    assert v.shape == ref_v.shape and f.shape == ref_f.shape
    assert_welded(v, f)
    v_sorted, f_sorted = canonical(v, f)
    ref_v_sorted, ref_f_sorted = canonical(ref_v, ref_f)
    np.testing.assert_allclose(v_sorted, ref_v_sorted, rtol=0, atol=1e-6)
    assert np.array_equal(f_sorted, ref_f_sorted), "faces or their orientation differ"
    return v, f


def edge_use(faces: np.ndarray) -> np.ndarray:
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    return np.unique(e, axis=0, return_counts=True)[1]


@pytest.fixture(scope="module")
def sphere_field() -> SparseField:
    tm = trimesh.creation.icosphere(subdivisions=3)
    return udf_of(np.asarray(tm.vertices), np.asarray(tm.faces))


@pytest.mark.parametrize("device", DEVICES)
def test_sphere_matches_cpu_and_is_manifold(sphere_field, device):
    v, f = assert_same_mesh(sphere_field, device)
    assert len(f) > 1000
    # the ε-surface of a closed surface's UDF is two closed sheets: every edge in exactly 2 faces
    assert set(edge_use(f)) == {2}
    assert trimesh.Trimesh(v, f, process=False).is_winding_consistent


@pytest.mark.parametrize("device", DEVICES)
def test_chunking_does_not_change_the_mesh(sphere_field, device):
    """One block per chunk welds across chunks exactly as one big chunk does."""
    whole = run_torch(sphere_field, device)
    tiny = run_torch(sphere_field, device, cell_chunk=512)
    assert np.array_equal(whole[0], tiny[0]) and np.array_equal(whole[1], tiny[1])


@pytest.mark.parametrize("device", DEVICES)
def test_box_matches_cpu(device):
    tm = trimesh.creation.box(extents=(1.0, 0.6, 0.8))
    assert_same_mesh(udf_of(np.asarray(tm.vertices), np.asarray(tm.faces)), device)


@pytest.mark.parametrize("device", DEVICES)
def test_scattered_noise_blocks_match_cpu(device):
    """Noise everywhere below and above ε exercises every case; the layout has seams (a 2×2 slab, a
    pair along x), isolated blocks and blocks on the grid's far faces, so many cell corners fall in
    absent or off-grid neighbours and read FAR."""
    coords = [(1, 1, 1), (2, 1, 1), (1, 2, 1), (2, 2, 1),  # slab: seams in x and y
              (5, 1, 5), (6, 1, 5),  # pair along x
              (4, 5, 2),  # isolated
              (7, 7, 7), (7, 0, 3), (0, 7, 7)]  # on the +x/+y/+z faces of the grid
    rng = np.random.default_rng(3)
    values = rng.uniform(0.0, 2.0 * iso_level(), size=(len(coords), 8, 8, 8))
    v, f = assert_same_mesh(sparse_field(coords, values), device)
    assert len(f) > 5000


@pytest.mark.parametrize("device", DEVICES)
def test_cell_reaching_a_stored_block_across_an_absent_one(device):
    """A cell whose edge starts in an absent block and ends in a stored diagonal neighbour: the
    crossing is still a vertex of its own, and every triangle stays inside its cell.

    (The numba version has no vertex for such an edge — its owner block is not stored — so the
    two are not compared here; fields from the UDF or from Pad-Average never have this layout.)"""
    rng = np.random.default_rng(0)
    values = rng.uniform(0.0, 2.0 * iso_level(), size=(2, 8, 8, 8))
    v, f = run_torch(sparse_field([(2, 2, 2), (3, 3, 2)], values), device)
    assert_welded(v, f)
    corners = v[f]
    assert np.linalg.norm(corners - np.roll(corners, 1, axis=1), axis=2).max() < np.sqrt(3.0)
    # the cell at local (7, 7, k) of block (2, 2, 2) has a vertex on the x-edge at y = 24 leaving (2, 3, 2)
    on_seam = (np.abs(v[:, 1] - 24.0) < 1e-9) & (v[:, 0] > 23.0) & (v[:, 0] < 24.0)
    assert on_seam.any()


@pytest.mark.parametrize("device", DEVICES)
def test_pad_averaged_spot_matches_cpu(device):
    path = SHARED_MESHES / "spot.obj"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    mesh = load_mesh(path)
    field = udf_of(mesh.vertices, mesh.faces)
    assembled = pad_average(iter_ublocks(field, 4096), N, extract_ublocks(field).coords)
    _, f = assert_same_mesh(assembled, device)
    assert len(f) > 1000


@pytest.mark.parametrize("device", DEVICES)
def test_empty_and_crossing_free_fields(device):
    empty = SparseField(resolution=N, keys=np.empty(0, np.int64), values=np.empty((0, 8, 8, 8), np.float32))
    far = sparse_field([(1, 2, 3), (2, 2, 3)], np.full((2, 8, 8, 8), FAR))
    above = sparse_field([(4, 4, 4)], np.full((1, 8, 8, 8), 0.9))
    for field in (empty, far, above):
        v, f = run_torch(field, device)
        assert v.shape == (0, 3) and f.shape == (0, 3)


def test_rejects_levels_outside_the_band():
    field = TorchField.from_sparse(sparse_field([(1, 1, 1)], np.full((1, 8, 8, 8), FAR)), "cpu")
    for level in (0.0, FAR):
        with pytest.raises(ValueError):
            marching_cubes_torch(field, level)
    with pytest.raises(ValueError):
        marching_cubes_torch(field, iso_level(), cell_chunk=0)
