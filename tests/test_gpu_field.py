"""The torch engine's kernels (UDF, UBlock gathering, Pad-Average) against the numba engine's, on the
one field type (numpy or torch arrays).

Every test runs on the CPU and, where a CUDA device exists, on it too.
"""

from __future__ import annotations


import numpy as np
import pytest
import torch
import trimesh

from model.gpu.blocks import PadAverageTorch, active_indices_torch, all_ublocks_torch, gather_ublocks_torch, iter_ublocks_torch
from model.gpu.udf import compute_udf_torch
from model.grid import FAR, SparseField, unit_margin
from model.mesh import fit_unit_cube, used_vertices
from model.ublocks import PadAverage, active_indices, iter_ublocks
from model.udf import compute_udf
from tests.conftest import shared_mesh, torch_devices

DEVICES = torch_devices()
UDF_ATOL = 1e-4  # normalised units (τ = 1), i.e. 4e-4 voxel


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def random_soup(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Large random triangles across the cube plus a zero-area (collinear) and a point triangle."""
    rng = np.random.default_rng(seed)
    verts = rng.uniform(-0.42, 0.42, size=(60, 3))
    faces = rng.integers(0, 60, size=(25, 3))
    a, b = verts[0], verts[1]
    verts = np.vstack([verts, [a, b, (a + b) / 2, a, a, a]])
    return verts, np.vstack([faces, [[60, 61, 62], [63, 64, 65]]])


def icosphere() -> tuple[np.ndarray, np.ndarray]:
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.3)
    return sphere.vertices + np.array([0.013, -0.021, 0.007]), sphere.faces


def box() -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned faces at exact voxel coordinates: ties between the face and edge branches."""
    cube = trimesh.creation.box(extents=(0.5, 0.625, 0.75))
    return cube.vertices, cube.faces


def spot(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    mesh = shared_mesh("spot.obj")
    unit = fit_unit_cube(used_vertices(mesh), unit_margin(resolution)).to_unit(mesh.vertices)
    return unit, mesh.faces


def on_union(ref: SparseField, got: SparseField) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Both fields on the union of their keys, FAR where a side has no block, and which side had it."""
    got_keys, got_values = got.keys.cpu().numpy(), got.values.cpu().numpy()
    keys = np.union1d(ref.keys, got_keys)
    a = np.full((keys.shape[0], 8, 8, 8), FAR, dtype=np.float32)
    b = a.copy()
    in_ref = np.isin(keys, ref.keys)
    in_got = np.isin(keys, got_keys)
    a[in_ref] = ref.values
    b[in_got] = got_values
    return a, b, in_ref, in_got


def assert_same_udf(ref: SparseField, got: SparseField, atol: float = UDF_ATOL) -> None:
    assert got.resolution == ref.resolution
    assert got.values.dtype == torch.float32 and got.keys.dtype == torch.int64
    assert torch.all(got.keys[1:] > got.keys[:-1])
    a, b, in_ref, in_got = on_union(ref, got)
    assert np.all(a[~in_got] == FAR), "a block with a voxel below FAR is missing from the torch field"
    assert np.all(b[~in_ref] == FAR), "the torch field has a non-FAR block the CPU path lacks"
    err = float(np.abs(a - b).max()) if a.size else 0.0
    assert err <= atol, f"max error {err:.3g} (normalised)"


# ---------------------------------------------------------------------------------------- UDF


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "make,resolution",
    [
        (lambda: random_soup(0), 64),
        (lambda: random_soup(1), 128),
        (icosphere, 64),
        (icosphere, 128),
        (box, 64),
        (box, 128),
    ],
    ids=["soup0-64", "soup1-128", "sphere-64", "sphere-128", "box-64", "box-128"],
)
def test_udf_matches_cpu_path(make, resolution, device):
    verts, faces = make()
    assert_same_udf(compute_udf(verts, faces, resolution), compute_udf_torch(verts, faces, resolution, device))


@pytest.mark.parametrize("device", DEVICES)
def test_udf_matches_cpu_path_on_a_real_mesh(device):
    verts, faces = spot(128)
    assert_same_udf(compute_udf(verts, faces, 128), compute_udf_torch(verts, faces, 128, device))


@pytest.mark.parametrize("device", DEVICES)
def test_udf_chunking_and_tensor_inputs_do_not_change_the_result(device):
    """Tiny chunks force many pair chunks and the octree split of every triangle's box."""
    verts, faces = random_soup(2)
    whole = compute_udf_torch(verts, faces, 64, device)
    parts = compute_udf_torch(torch.as_tensor(verts), torch.as_tensor(faces), 64, device,
                              pair_chunk=7, candidate_chunk=64)
    assert torch.equal(whole.keys, parts.keys)
    torch.testing.assert_close(whole.values, parts.values, rtol=0, atol=1e-6)


def test_udf_in_float64_is_exact():
    verts, faces = random_soup(3)
    assert_same_udf(compute_udf(verts, faces, 64), compute_udf_torch(verts, faces, 64, "cpu", dtype=torch.float64), atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_udf_of_nothing_and_of_a_mesh_off_the_grid(device):
    empty = compute_udf_torch(np.zeros((3, 3)), np.zeros((0, 3), dtype=np.int64), 64, device)
    assert empty.num_blocks == 0 and empty.values.shape == (0, 8, 8, 8)
    far = compute_udf_torch(np.array([[3.0, 3, 3], [3.1, 3, 3], [3, 3.1, 3]]), np.array([[0, 1, 2]]), 64, device)
    assert far.num_blocks == 0


@pytest.mark.parametrize("device", DEVICES)
def test_udf_of_a_long_sliver_at_2048_matches_cpu_path(device):
    """A triangle along the cube's diagonal: its grown box holds 256³ blocks, it touches ~2700."""
    verts = np.array([[-0.45, -0.45, -0.45], [0.45, 0.45, 0.44], [0.45, 0.449, 0.45]])
    faces = np.array([[0, 1, 2]])
    assert_same_udf(compute_udf(verts, faces, 2048), compute_udf_torch(verts, faces, 2048, device))


def _largest_cpu_allocation(run) -> int:
    """The largest memory any single torch operator allocated on the CPU while ``run`` ran."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    return max((event.cpu_memory_usage for event in prof.events()), default=0)


@pytest.mark.parametrize("device", DEVICES)
def test_udf_at_2048_stays_sparse(device):
    """A small triangle and a long diagonal one at N = 2048: no allocation may scale with the
    (N/8)³ = 16.7M blocks of the grid (even a dense bool block grid would be 16 MB)."""
    verts = np.array([[0.1, 0.1, 0.1], [0.1003, 0.1, 0.1], [0.1, 0.1002, 0.1001],
                      [-0.45, -0.45, -0.45], [0.45, 0.45, 0.44], [0.45, 0.449, 0.45]])
    tiny, sliver = np.array([[0, 1, 2]]), np.array([[3, 4, 5]])
    field = compute_udf_torch(verts, tiny, 2048, device)
    assert 0 < field.num_blocks <= 27 and bool((field.values < FAR).any())

    def run() -> None:
        compute_udf_torch(verts, sliver, 2048, device, pair_chunk=256, candidate_chunk=8192)

    limit = 8 << 20
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run()
        assert torch.cuda.max_memory_allocated() - base < 2 * limit
    else:
        assert _largest_cpu_allocation(run) < limit


# ------------------------------------------------------------------------ UBlocks, Pad-Average


@pytest.fixture(scope="module")
def soup_field() -> SparseField:
    """Blocks on every face of the block grid, so off-grid neighbours are exercised too."""
    verts, faces = random_soup(4)
    field = compute_udf(verts, faces, 64)
    assert field.coords.min() == 0 and field.coords.max() == 7
    return field


@pytest.mark.parametrize("device", DEVICES)
def test_gathered_blocks_equal_the_cpu_ublocks(soup_field, device):
    field = soup_field.to(device)
    np.testing.assert_array_equal(active_indices_torch(field).cpu().numpy(), active_indices(soup_field))
    ref = list(iter_ublocks(soup_field, chunk_size=50))
    got = list(iter_ublocks_torch(field, chunk_size=50))
    assert len(got) == len(ref) > 1
    for part, chunk in zip(got, ref):
        assert part.blocks.dtype == torch.float32 and part.blocks.device.type == device
        np.testing.assert_array_equal(part.blocks.cpu().numpy(), chunk.blocks)
        np.testing.assert_array_equal(part.coords.cpu().numpy(), chunk.coords)
    whole = gather_ublocks_torch(field, active_indices_torch(field))
    torch.testing.assert_close(torch.cat([part.blocks for part in got]), whole, rtol=0, atol=0)
    every = all_ublocks_torch(field, chunk_size=50)  # filled chunk by chunk: the same tensor
    torch.testing.assert_close(every.blocks, whole, rtol=0, atol=0)
    np.testing.assert_array_equal(every.coords.cpu().numpy(), np.concatenate([c.coords for c in ref]))


@pytest.mark.parametrize("device", DEVICES)
def test_pad_average_equals_the_cpu_pad_average(soup_field, device):
    coords = soup_field.coords[active_indices(soup_field)]
    blocks = np.random.default_rng(0).uniform(0, 1, size=(len(coords), 12, 12, 12)).astype(np.float32)
    ref = PadAverage(64, coords)
    ref.add(blocks, coords)
    expected = ref.finish()

    results = []
    for chunk in (len(coords), 13):
        acc = PadAverageTorch(64, torch.as_tensor(coords, device=device))
        for start in range(0, len(coords), chunk):
            part = torch.as_tensor(blocks[start : start + chunk], device=device)
            acc.add(part[:, None] if chunk == 13 else part, torch.as_tensor(coords[start : start + chunk], device=device))
        results.append(acc.finish())
    for got in results:
        np.testing.assert_array_equal(got.keys.cpu().numpy(), expected.keys)
        np.testing.assert_allclose(got.values.cpu().numpy(), expected.values, rtol=0, atol=1e-6)
    torch.testing.assert_close(results[0].values, results[1].values, rtol=0, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_pad_average_of_exact_blocks_restores_the_field(soup_field, device):
    """Gather then Pad-Average is the identity on the stored field, FAR on the added neighbours."""
    field = soup_field.to(device)
    active = active_indices_torch(field)
    acc = PadAverageTorch(64, field.coords[active])
    for part in iter_ublocks_torch(field, chunk_size=64):
        acc.add(part.blocks, part.coords)
    out = acc.finish()
    a, b, in_ref, _ = on_union(soup_field, out)
    assert np.all(in_ref | (b == FAR).all(axis=(1, 2, 3)))
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-6)


def test_pad_average_rejects_wrong_shapes():
    acc = PadAverageTorch(64, torch.zeros((1, 3), dtype=torch.int64))
    with pytest.raises(ValueError):
        acc.add(torch.zeros((1, 10, 12, 12)), torch.zeros((1, 3), dtype=torch.int64))
