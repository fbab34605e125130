"""The one driver gives the same remesh over both engines: the torch engine (model.gpu.engine)
remeshes exactly as the numba engine (model.engine) does, end to end.

On the CPU the torch engine computes the UDF in float64 (its default there), which gives the numba
field bit for bit, so every later stage must reproduce the numba result to rounding. CUDA runs the
float32 UDF (its default there), checked with the looser tolerance of the float32 test below.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from backend.cli import main
from model.cleanup import CleanupOptions
from model.grid import unit_margin, unit_to_voxel
from model.engine import NumbaEngine, engine_for
from model.gpu.engine import TorchEngine
from model.mesh import Mesh, fit_unit_cube, used_vertices
from model.pipeline import Cancelled, RemeshOptions, RemeshResult, remesh
from model.vae import LogVAE, preset
from tests.conftest import as_mesh, assert_same_surface, shared_mesh, torch_devices

N = 64
TOL_FLOAT64 = 1e-5  # voxels: the same field, so only rounding differs
TOL_FLOAT32 = 1e-3  # voxels: a float32 UDF moves vertices by up to ~1e-4 where the surface grazes a cell edge

pytestmark = pytest.mark.usefixtures("torch_one_thread")

DEVICES = torch_devices()
CLEANUPS = {"default": CleanupOptions(), "none": CleanupOptions.none(), "slabs": CleanupOptions(single_layer=False)}
"""Direct mode with the default clean-up contours the input and makes no field (one CPU path for
both engines); ``slabs`` (deflate and outer shell, no single-layer cut) and ``none`` read the exact
field, vae mode the averaged decoded field."""


def spot() -> Mesh:
    return shared_mesh("spot.obj")


def bowl() -> Mesh:
    """An open surface: dual contouring's open-boundary steps (detach, trim, snap)."""
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=1.0)
    return as_mesh(trimesh.Trimesh(sphere.vertices, sphere.faces[sphere.triangles_center[:, 2] < 0.3], process=False))


SHAPES = {"sphere": lambda: as_mesh(trimesh.creation.icosphere(subdivisions=3, radius=1.0)), "spot": spot, "bowl": bowl}
CASES = [(shape, mode, cleanup) for shape in ("sphere", "spot")
         for mode, cleanup in (("direct", "slabs"), ("direct", "none"), ("vae", "default"), ("vae", "none"))]
CASES.append(("bowl", "direct", "slabs"))


def tiny_vae() -> LogVAE:
    """A freshly initialised tiny LoG-VAE, the same weights for both engines. Its output starts at
    0.4 instead of the preset's 0.75: an untrained decoder then still puts some voxels below the
    level 0.25, so there is a (meaningless but deterministic) surface to compare."""
    torch.manual_seed(0)
    return LogVAE(preset("tiny").replace(output_init=0.4)).eval()


_NUMBA: dict[tuple[str, str], tuple[RemeshResult, list[str]]] = {}
_VAE: list[LogVAE] = []


def network() -> LogVAE:
    if not _VAE:
        _VAE.append(tiny_vae())
    return _VAE[0]


def run(shape: str, mode: str, cleanup: str, engine: str, device: str = "cpu") -> tuple[RemeshResult, list[str]]:
    stages: list[str] = []
    options = RemeshOptions(resolution=N, mode=mode, device=device, engine=engine, cleanup=CLEANUPS[cleanup])
    vae = network().to(device) if mode == "vae" else None
    result = remesh(SHAPES[shape](), options, progress=lambda stage, fraction: stages.append(stage), vae=vae)
    return result, list(dict.fromkeys(stages))


def numba_result(shape: str, mode: str, cleanup: str) -> tuple[RemeshResult, list[str]]:
    """The reference, once per case (both devices compare against it)."""
    key = (shape, f"{mode}/{cleanup}")
    if key not in _NUMBA:
        _NUMBA[key] = run(shape, mode, cleanup, "numba")
    return _NUMBA[key]


def welded(vertices: np.ndarray, faces: np.ndarray, tol: float = 1e-9) -> tuple[np.ndarray, np.ndarray, int]:
    """Vertices closer than ``tol`` merged (the exact deflate sends a few ε-surface vertices to the
    same input point, which a nearest-neighbour matching cannot pair one to one); returns the merged
    vertices, the faces that still have three distinct corners and how many faces collapsed."""
    pairs = cKDTree(vertices).query_pairs(tol, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(vertices),) * 2)
    count, label = connected_components(graph, directed=False)
    first = np.full(count, len(vertices))
    np.minimum.at(first, label, np.arange(len(vertices)))
    faces = label[faces]
    collapsed = (faces[:, 0] == faces[:, 1]) | (faces[:, 1] == faces[:, 2]) | (faces[:, 2] == faces[:, 0])
    return vertices[first], faces[~collapsed], int(collapsed.sum())


def assert_same_mesh(mesh: Mesh, got: Mesh, expected: Mesh, tol: float) -> None:
    """Same faces and vertices up to order, compared in voxel units of the input's grid."""
    normalization = fit_unit_cube(used_vertices(mesh), unit_margin(N))

    def voxels(m: Mesh) -> tuple[np.ndarray, np.ndarray, int]:
        return welded(unit_to_voxel(normalization.to_unit(m.vertices), N), m.faces)

    assert got.num_faces == expected.num_faces > 0
    got_vertices, got_faces, got_collapsed = voxels(got)
    expected_vertices, expected_faces, expected_collapsed = voxels(expected)
    assert got_collapsed == expected_collapsed
    assert_same_surface(got_vertices, got_faces, expected_vertices, expected_faces, tol=tol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape, mode, cleanup", CASES)
def test_torch_engine_equals_numba_engine(device, shape, mode, cleanup):
    expected, expected_stages = numba_result(shape, mode, cleanup)
    got, got_stages = run(shape, mode, cleanup, "torch", device)
    # VAE mode's decoded fields differ in their last float32 bits between the engines (up to 9e-8 on
    # the sphere), which the slab contour's vertex solve in a near-degenerate cell turns into up to
    # 4e-5 voxel: the float32 tolerance there, as on a GPU
    tol = TOL_FLOAT64 if device == "cpu" and mode != "vae" else TOL_FLOAT32
    assert_same_mesh(SHAPES[shape](), got.mesh, expected.mesh, tol)
    assert got.num_blocks == expected.num_blocks
    assert got_stages == expected_stages  # progress: the same stages in the same order
    assert list(got.timings) == list(expected.timings)
    assert (got.peak_gpu_bytes is not None) == (device == "cuda")


@pytest.mark.parametrize("engine", ["numba", "torch"])
def test_contoured_direct_mode_makes_no_field(engine):
    """Direct mode, default clean-up: the surface is the input contoured on the grid, which never
    reads the field, so neither engine computes one (no UDF, UBlocks or Pad-Average stage)."""
    expected, expected_stages = numba_result("sphere", "direct", "default")
    got, got_stages = run("sphere", "direct", "default", engine)
    assert expected_stages == got_stages == ["extract", "cleanup"]
    assert got.num_blocks == 0 and got.peak_gpu_bytes is None
    np.testing.assert_array_equal(got.mesh.vertices, expected.mesh.vertices)
    np.testing.assert_array_equal(got.mesh.faces, expected.mesh.faces)


def test_a_contour_only_remesh_never_loads_torch(tmp_path):
    """`log3d remesh` of a small mesh in direct mode contours the input and needs no engine, so it
    must not import torch to decide one (a second and more of every CLI call's start-up); a remesh
    that does need the field still gets the engine `auto` picks."""
    import subprocess
    import sys

    source = tmp_path / "sphere.obj"
    trimesh.creation.icosphere(subdivisions=2).export(source)
    code = ("import sys; from backend.cli import main; "
            f"assert main(['remesh', {str(source)!r}, {str(tmp_path / 'out.ply')!r}, '-n', '64', '-q']) == 0; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"
    assert (tmp_path / "out.ply").is_file()
    from model.engine import DeferredEngine

    deferred = DeferredEngine("auto", "auto")
    assert deferred.peak_bytes() is None and deferred.resolved is None
    deferred.sync()  # nothing to wait for, and still undecided
    assert deferred.resolved is None
    raw = remesh(as_mesh(trimesh.creation.icosphere(subdivisions=2)), RemeshOptions(resolution=N, cleanup=CleanupOptions.none()),
                 engine=deferred)
    assert raw.num_blocks > 0 and isinstance(deferred.resolved, type(engine_for("auto", "auto")))


def test_float32_udf_stays_close_to_numba():
    """The CUDA configuration (float32 distances), run on the CPU: same topology, vertices within
    TOL_FLOAT32. Spot's raw ε-surface is where the float32 difference shows (~1e-4 voxel)."""
    mesh = spot()
    expected, _ = numba_result("spot", "direct", "none")
    options = RemeshOptions(resolution=N, cleanup=CleanupOptions.none())
    got = remesh(mesh, options, engine=TorchEngine("cpu", udf_dtype=torch.float32))
    assert_same_mesh(mesh, got.mesh, expected.mesh, TOL_FLOAT32)


@pytest.mark.parametrize("mode, stage, after", [("vae", "pad_average", "extract"), ("direct", "extract", "cleanup"),
                                                ("direct-slabs", "extract", "cleanup")])
def test_cancellation_inside_a_stage(sphere, mode, stage, after):
    """Asked to stop while a stage is running (Pad-Average's chunks, the contouring, marching
    cubes): its next report raises Cancelled and no later stage starts."""
    seen: list[str] = []
    cleanup = CLEANUPS["slabs" if mode == "direct-slabs" else "default"]
    options = RemeshOptions(resolution=N, mode=mode.split("-")[0], engine="torch", device="cpu", chunk_blocks=32,
                            cleanup=cleanup)
    vae = network() if mode == "vae" else None
    with pytest.raises(Cancelled):
        remesh(sphere, options, progress=lambda name, fraction: seen.append(name),
               should_cancel=lambda: stage in seen, vae=vae)
    assert seen[-1] == stage and after not in seen


def test_cancellation_before_any_work(sphere):
    with pytest.raises(Cancelled):
        remesh(sphere, RemeshOptions(resolution=N, engine="torch", device="cpu"), should_cancel=lambda: True)


def test_engine_option():
    with pytest.raises(ValueError, match="unknown engine"):
        RemeshOptions(engine="cuda").validate()
    with pytest.raises(ValueError, match="unknown engine"):
        engine_for("cuda")
    assert isinstance(engine_for("numba", "cpu"), NumbaEngine)
    assert isinstance(engine_for("auto", "cpu"), NumbaEngine)
    torch_cpu = engine_for("torch", "cpu")
    assert isinstance(torch_cpu, TorchEngine) and torch_cpu.device == torch.device("cpu")
    assert isinstance(engine_for("auto", "auto"), TorchEngine) == torch.cuda.is_available()


def test_cli_engine_flag(tmp_path, capsys):
    source, out = tmp_path / "sphere.obj", tmp_path / "out.obj"
    trimesh.creation.icosphere(subdivisions=2).export(source)
    args = ["remesh", str(source), str(out), "-n", str(N), "--device", "cpu", "--raw", "-q"]
    assert main([*args, "--engine", "torch"]) == 0
    assert out.is_file() and "extract" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([*args, "--engine", "gpu"])


def test_the_comparison_sees_through_order_but_not_through_changes():
    sphere = trimesh.creation.icosphere(subdivisions=2)
    v, f = np.asarray(sphere.vertices), np.asarray(sphere.faces)
    order = np.random.default_rng(0).permutation(len(v))
    inverse = np.argsort(order)
    shuffled_faces = np.roll(inverse[f], 1, axis=1)[::-1]  # renumbered, rotated, reordered
    assert_same_surface(v[order], shuffled_faces, v, f)
    with pytest.raises(AssertionError):
        assert_same_surface(v[order], shuffled_faces[:, ::-1], v, f)  # flipped orientation
    moved = v.copy()
    moved[3] += 1e-3
    with pytest.raises(AssertionError):
        assert_same_surface(moved, f, v, f)
