"""The torch clean-up (model.gpu.cleanup) takes the numba clean-up's decisions on real ε-surfaces."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
import trimesh
from scipy.spatial import cKDTree

from model.cleanup import (
    CleanupOptions,
    clean_surface,
    compact,
    deflate,
    face_components,
    sample_field,
    signed_volumes,
    vertex_normals,
)
from model.extract import marching_cubes_sparse
from model.gpu.cleanup import (
    clean_surface_torch,
    compact_torch,
    deflate_torch,
    face_components_torch,
    sample_field_torch,
    signed_volumes_torch,
    vertex_normals_torch,
)
from model.gpu.field import TorchField
from model.grid import SparseField, iso_level, unit_margin
from model.mesh import Mesh, fit_unit_cube, load_mesh, used_vertices
from model.udf import compute_udf
from model.ublocks import active_indices, iter_ublocks, pad_average
from tests.conftest import SHARED_MESHES, as_mesh, torch_devices

N = 64

pytestmark = pytest.mark.usefixtures("torch_one_thread")

DEVICES = torch_devices()


@dataclass
class Surface:
    """An ε-surface made by the CPU pipeline, with the field it was extracted from."""

    vertices: np.ndarray
    faces: np.ndarray
    field: SparseField


def epsilon_surface(mesh: Mesh, n: int = N) -> Surface:
    normalization = fit_unit_cube(used_vertices(mesh), unit_margin(n))
    exact = compute_udf(normalization.to_unit(mesh.vertices), mesh.faces, n)
    field = pad_average(iter_ublocks(exact), n, exact.coords[active_indices(exact)])
    vertices, faces = marching_cubes_sparse(field, iso_level())
    return Surface(vertices, faces, field)


def two_spheres() -> trimesh.Trimesh:
    left = trimesh.creation.icosphere(subdivisions=3, radius=1.0)
    right = left.copy()
    left.apply_translation((-1.6, 0.0, 0.0))
    right.apply_translation((1.6, 0.0, 0.0))
    return trimesh.util.concatenate([left, right])


def square_sheet() -> trimesh.Trimesh:
    square = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], [[0, 1, 2], [0, 2, 3]], process=False)
    return square.subdivide().subdivide()


def spot() -> Mesh:
    path = SHARED_MESHES / "spot.obj"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return load_mesh(path)


SHAPES = {
    "sphere": lambda: as_mesh(trimesh.creation.icosphere(subdivisions=3, radius=1.0)),
    "box": lambda: as_mesh(trimesh.creation.box(extents=(1.0, 0.6, 0.3))),
    "torus": lambda: as_mesh(trimesh.creation.torus(major_radius=1.0, minor_radius=0.3)),
    "two_spheres": lambda: as_mesh(two_spheres()),
    "sheet": lambda: as_mesh(square_sheet()),
    "spot": spot,
}

_SURFACES: dict[str, Surface] = {}


def surface(name: str) -> Surface:
    """Each shape's ε-surface once per session (the UDF is the slow part)."""
    if name not in _SURFACES:
        _SURFACES[name] = epsilon_surface(SHAPES[name]())
    return _SURFACES[name]


def on(device: str, s: Surface) -> tuple[torch.Tensor, torch.Tensor, TorchField]:
    return (torch.as_tensor(s.vertices, device=device), torch.as_tensor(s.faces, device=device),
            TorchField.from_sparse(s.field, device))


def canonical_faces(faces: np.ndarray) -> np.ndarray:
    """Faces rotated to start at their smallest index (orientation kept), rows sorted."""
    rolled = np.stack([np.roll(f, -int(np.argmin(f))) for f in faces]) if len(faces) else faces.reshape(0, 3)
    return rolled[np.lexsort(rolled.T[::-1])]


def assert_same_surface(vertices: torch.Tensor, faces: torch.Tensor, expected_vertices: np.ndarray,
                        expected_faces: np.ndarray, tol: float = 1e-6) -> None:
    """Same mesh up to the order of vertices and faces: every vertex matches one expected vertex
    within ``tol`` (a bijection), and the faces map onto the expected faces with their orientation."""
    v, f = vertices.double().cpu().numpy(), faces.cpu().numpy()
    assert f.shape == expected_faces.shape and v.shape == expected_vertices.shape
    if np.array_equal(f, expected_faces):  # the torch steps keep the numba path's order
        np.testing.assert_allclose(v, expected_vertices, rtol=0.0, atol=tol)
        return
    dist, match = cKDTree(expected_vertices).query(v)
    assert dist.max() <= tol
    assert len(np.unique(match)) == len(v), "vertices do not match one to one"
    np.testing.assert_array_equal(canonical_faces(match[f]), canonical_faces(expected_faces))


# --- the pieces ----------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_sampling_matches_the_numba_sampler_everywhere(device):
    s = surface("two_spheres")
    rng = np.random.default_rng(0)
    points = np.concatenate([
        rng.uniform(-3.0, N + 3.0, size=(4000, 3)),  # off the grid and in absent blocks too
        s.vertices + rng.normal(scale=2.0, size=s.vertices.shape),  # near the surface: stored blocks
        rng.integers(-1, N + 1, size=(500, 3)).astype(np.float64),  # on voxels and block seams
        np.array([[N - 1.0, N - 1.0, N - 1.0], [N - 0.5, 3.0, 3.0], [-0.5, 7.5, 7.999]]),
    ])
    assert (s.field.keys.size < (N // 8) ** 3)  # the field is sparse: some points fall in absent blocks
    field = TorchField.from_sparse(s.field, device)
    expected = sample_field(s.field, points)
    got = sample_field_torch(field, torch.as_tensor(points, device=device), chunk=1000).cpu().numpy()
    np.testing.assert_allclose(got, expected, rtol=0.0, atol=1e-12)
    single = sample_field_torch(field, torch.as_tensor(points, dtype=torch.float32, device=device))
    assert single.dtype == torch.float32
    np.testing.assert_allclose(single.cpu().numpy(), expected, rtol=0.0, atol=1e-4)


def test_sampling_an_empty_field_reads_far():
    empty = TorchField(resolution=N, keys=torch.empty(0, dtype=torch.int64), values=torch.empty(0, 8, 8, 8))
    got = sample_field_torch(empty, torch.tensor([[3.2, 4.5, 60.1], [-2.0, 0.0, 0.0]], dtype=torch.float64))
    np.testing.assert_allclose(got.numpy(), 1.0, atol=1e-12)


def random_components_mesh(rng: np.random.Generator) -> tuple[int, np.ndarray]:
    """Many small components with shuffled vertex ids, plus unused vertices (components of their own
    in the numba numbering)."""
    num_vertices = 3000
    groups = rng.integers(0, 40, size=num_vertices)
    faces = []
    for g in range(40):
        members = np.flatnonzero(groups == g)
        if len(members) >= 3:
            faces.append(rng.choice(members, size=(len(members) // 2, 3)))
    return num_vertices, np.concatenate(faces).astype(np.int64)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", ["two_spheres", "torus", "random"])
def test_components_are_the_numba_components(device, case):
    if case == "random":
        num_vertices, faces = random_components_mesh(np.random.default_rng(1))
    else:
        s = surface(case)
        num_vertices, faces = len(s.vertices), s.faces
    count, component = face_components(num_vertices, faces)
    got_count, got = face_components_torch(num_vertices, torch.as_tensor(faces, device=device))
    got = got.cpu().numpy()
    assert got_count == count
    # as partitions: the pairing between the two labellings is one to one
    pairs = np.unique(np.stack([component, got], axis=1), axis=0)
    assert len(pairs) == len(np.unique(component)) == len(np.unique(got))
    np.testing.assert_array_equal(got, component)  # and numbered the same way
    if case == "two_spheres":
        assert count == 4  # an outer and an inner shell per sphere


@pytest.mark.parametrize("device", DEVICES)
def test_mesh_helpers_match_the_numba_helpers(device):
    s = surface("two_spheres")
    v, f, field = on(device, s)
    count, component = face_components(len(s.vertices), s.faces)
    normals = vertex_normals_torch(v, f).cpu().numpy()
    np.testing.assert_allclose(normals, vertex_normals(s.vertices, s.faces), rtol=0.0, atol=1e-12)
    got_volumes = signed_volumes_torch(v, f, torch.as_tensor(component, device=device), count).cpu().numpy()
    np.testing.assert_allclose(got_volumes, signed_volumes(s.vertices, s.faces, component, count), rtol=1e-10)
    deflated = deflate_torch(v, f, field).cpu().numpy()
    np.testing.assert_allclose(deflated, deflate(s.vertices, s.faces, s.field), rtol=0.0, atol=1e-9)
    keep = component != 0
    expected_v, expected_f = compact(s.vertices, s.faces[keep])
    got_v, got_f = compact_torch(v, f[torch.as_tensor(keep, device=device)])
    np.testing.assert_array_equal(got_f.cpu().numpy(), expected_f)
    np.testing.assert_array_equal(got_v.cpu().numpy(), expected_v)


# --- the whole clean-up --------------------------------------------------------------------------

VARIANTS = {
    "default": CleanupOptions(),
    "deflate_only": CleanupOptions(deflate=True, outer_shell=False),
    "outer_shell_only": CleanupOptions(deflate=False, outer_shell=True),
    "none": CleanupOptions.none(),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("shape", list(SHAPES))
def test_clean_surface_torch_matches_clean_surface(shape, variant, device):
    s = surface(shape)
    options = VARIANTS[variant]
    expected_v, expected_f = clean_surface(s.vertices, s.faces, s.field, options)
    got_v, got_f = clean_surface_torch(*on(device, s), options)
    assert got_v.device.type == device and got_f.dtype == torch.int64
    assert_same_surface(got_v, got_f, expected_v, expected_f)


def test_the_sheet_is_a_slab_kept_at_epsilon():
    """The slab branch is taken: deflation would flatten the sheet, the clean-up leaves it at ε."""
    s = surface("sheet")
    v, f, field = on("cpu", s)
    shell_v, shell_f = clean_surface_torch(v, f, field, VARIANTS["outer_shell_only"])
    out_v, _ = clean_surface_torch(v, f, field, CleanupOptions(single_layer=False))  # --keep-slabs
    assert torch.equal(out_v, shell_v)
    flattened_v = deflate_torch(shell_v, shell_f, field)
    assert (flattened_v - shell_v).norm(dim=1).median() > 0.5  # about ε = one voxel


@pytest.mark.parametrize("device", DEVICES)
def test_single_layer_on_the_host_matches(device):
    s = surface("sheet")
    options = CleanupOptions(single_layer=True)
    expected_v, expected_f = clean_surface(s.vertices, s.faces, s.field, options)
    got_v, got_f = clean_surface_torch(*on(device, s), options)
    assert got_v.device.type == device
    assert 0 < len(expected_f) < len(s.faces) // 2  # one layer of the slab's two sides
    assert_same_surface(got_v, got_f, expected_v, expected_f)


@pytest.mark.parametrize("device", DEVICES)
def test_decimation_on_the_host_matches(device):
    s = surface("sphere")
    options = CleanupOptions(target_faces=2000)
    expected_v, expected_f = clean_surface(s.vertices, s.faces, s.field, options)
    got_v, got_f = clean_surface_torch(*on(device, s), options)
    assert got_v.device.type == device and got_v.dtype == torch.float64
    assert len(expected_f) <= 1.05 * 2000
    assert_same_surface(got_v, got_f, expected_v, expected_f)


def test_float32_vertices_take_the_same_decisions():
    s = surface("spot")
    expected_v, expected_f = clean_surface(s.vertices, s.faces, s.field, CleanupOptions())
    v, f, field = on("cpu", s)
    got_v, got_f = clean_surface_torch(v.float(), f, field, CleanupOptions())
    assert got_v.dtype == torch.float32
    np.testing.assert_array_equal(got_f.numpy(), expected_f)
    np.testing.assert_allclose(got_v.numpy(), expected_v, rtol=0.0, atol=1e-3)


def test_progress_and_empty_input():
    s = surface("sphere")
    seen: list[float] = []
    clean_surface_torch(*on("cpu", s), CleanupOptions(), seen.append)
    assert seen == [0.2, 0.5, 0.8]
    field = TorchField.from_sparse(s.field, "cpu")
    v, f = clean_surface_torch(torch.zeros(0, 3, dtype=torch.float64), torch.zeros(0, 3, dtype=torch.int64), field,
                               CleanupOptions())
    assert v.shape == (0, 3) and f.shape == (0, 3)
    with pytest.raises(ValueError):
        clean_surface_torch(*on("cpu", s), CleanupOptions(target_faces=-1))


def test_the_comparison_sees_through_order_but_not_through_changes():
    s = surface("sphere")
    rng = np.random.default_rng(2)
    perm = rng.permutation(len(s.vertices))
    inverse = np.argsort(perm)
    faces = np.roll(inverse[s.faces][rng.permutation(len(s.faces))], 1, axis=1)  # same triangles, reordered
    assert_same_surface(torch.as_tensor(s.vertices[perm]), torch.as_tensor(faces), s.vertices, s.faces)
    with pytest.raises(AssertionError):
        flipped = torch.as_tensor(faces[:, ::-1].copy())  # the same triangles facing the other way
        assert_same_surface(torch.as_tensor(s.vertices[perm]), flipped, s.vertices, s.faces)
    moved = s.vertices.copy()
    moved[0] += 1e-5
    with pytest.raises(AssertionError):
        assert_same_surface(torch.as_tensor(moved), torch.as_tensor(s.faces), s.vertices, s.faces)
