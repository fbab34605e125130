"""The whole network-free round trip, its errors, cancellation, and its memory contract."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import trimesh

from model.grid import ResolutionError
from model.mesh import Mesh, MeshError, load_mesh
from model.cleanup import CleanupOptions
from model.pipeline import Cancelled, RemeshOptions, remesh
from tests.conftest import SAMPLE, as_mesh
from tests.reference import point_triangle_distance


def test_result_is_in_the_input_frame():
    box = trimesh.creation.box(extents=(3.0, 1.0, 2.0))
    box.apply_translation([100.0, -20.0, 5.0])
    n = 64
    result = remesh(as_mesh(box), RemeshOptions(resolution=n, cleanup=CleanupOptions.none()))
    lo, hi = result.mesh.vertices.min(axis=0), result.mesh.vertices.max(axis=0)
    # the paper's raw output: the outer ε-shell is one voxel (of the normalised grid) outside the box
    voxel = 3.0 / (n - 10)  # the longest side spans N - 2·(τ + 1) voxels
    np.testing.assert_allclose(lo, box.bounds[0] - voxel, atol=0.1 * voxel)
    np.testing.assert_allclose(hi, box.bounds[1] + voxel, atol=0.1 * voxel)
    # the default clean-up deflates it back onto the box: vertices on its faces, corners within a
    # fraction of a voxel
    cleaned = remesh(as_mesh(box), RemeshOptions(resolution=n)).mesh
    np.testing.assert_allclose(cleaned.vertices.min(axis=0), box.bounds[0], atol=0.35 * voxel)
    np.testing.assert_allclose(cleaned.vertices.max(axis=0), box.bounds[1], atol=0.35 * voxel)
    d = point_triangle_distance(cleaned.vertices[::7], box.vertices[box.faces]) / voxel
    assert np.median(d) < 0.02 and d.max() < 0.5
    assert set(result.timings) == {"udf", "extract"}  # the exact field, not re-averaged
    assert result.num_blocks > 0


def test_real_mesh_vertices_sit_at_epsilon():
    """Every output vertex of the direct round trip lies ε = 1 voxel from the input surface."""
    mesh = load_mesh(SAMPLE)
    n = 128
    result = remesh(mesh, RemeshOptions(resolution=n, cleanup=CleanupOptions.none()))
    extent = float((mesh.vertices.max(0) - mesh.vertices.min(0)).max())
    voxel = extent / (n - 10)
    rng = np.random.default_rng(0)
    pick = rng.choice(result.mesh.num_vertices, 1500, replace=False)
    d = point_triangle_distance(result.mesh.vertices[pick], mesh.vertices[mesh.faces]) / voxel
    assert abs(np.median(d) - 1.0) < 0.05
    assert d.min() > 0.6 and d.max() < 1.4


@pytest.mark.parametrize("n", [56, 100, 4096, 32, 0])
def test_resolutions_it_cannot_do(sphere, n):
    with pytest.raises(ResolutionError, match=str(n)):
        remesh(sphere, RemeshOptions(resolution=n))


def test_bad_meshes_and_modes(sphere):
    with pytest.raises(MeshError, match="NaN"):
        bad = sphere.vertices.copy()
        bad[3] = np.nan
        remesh(Mesh(bad, sphere.faces), RemeshOptions(resolution=64))
    with pytest.raises(MeshError, match="out of range"):
        faces = sphere.faces.copy()
        faces[0, 0] = 10_000
        remesh(Mesh(sphere.vertices, faces), RemeshOptions(resolution=64))
    with pytest.raises(MeshError, match="empty"):
        remesh(Mesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64)), RemeshOptions(resolution=64))
    with pytest.raises(ValueError, match="unknown mode"):
        remesh(sphere, RemeshOptions(resolution=64, mode="magic"))


def test_progress_is_reported_per_stage_and_cancel_stops(sphere):
    seen: list[tuple[str, float]] = []
    remesh(sphere, RemeshOptions(resolution=64), progress=lambda stage, f: seen.append((stage, f)))
    stages = list(dict.fromkeys(stage for stage, _ in seen))
    assert stages == ["extract", "cleanup"]  # direct mode contours the input: no field is made
    assert all(0.0 <= f <= 1.0 for _, f in seen) and seen[-1] == ("cleanup", 1.0)
    seen.clear()
    remesh(sphere, RemeshOptions(resolution=64, cleanup=CleanupOptions.none()), progress=lambda stage, f: seen.append((stage, f)))
    assert list(dict.fromkeys(stage for stage, _ in seen)) == ["udf", "extract"]  # the exact field, not re-averaged

    calls = {"n": 0}

    def cancel_after_udf() -> bool:
        calls["n"] += 1
        return calls["n"] > 2

    with pytest.raises(Cancelled):
        remesh(sphere, RemeshOptions(resolution=64), should_cancel=cancel_after_udf)
    calls["n"] = 0
    with pytest.raises(Cancelled):
        remesh(sphere, RemeshOptions(resolution=64, cleanup=CleanupOptions.none()), should_cancel=cancel_after_udf)


@pytest.mark.parametrize("cleanup", [CleanupOptions(), CleanupOptions.none()], ids=["contoured", "field"])
def test_no_dense_allocation_at_2048(cleanup):
    """A surface with a tiny area spread over the whole cube at N = 2048: a dense float32 grid
    would be 34 GB and even a dense byte mask 8.6 GB, an (N/8)³ int32 block table 67 MB. The
    round trip must stay far below all of them (numpy allocations are traced by tracemalloc)."""
    tiny = np.array([[0, 0, 0], [1e-3, 0, 0], [0, 1e-3, 0]], dtype=float)
    verts = np.vstack([tiny, tiny + 1.0])
    faces = np.array([[0, 1, 2], [3, 4, 5]])
    tracemalloc.start()
    try:
        result = remesh(Mesh(verts, faces), RemeshOptions(resolution=2048, cleanup=cleanup))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.mesh.num_faces > 0
    assert peak < 48 * 2**20, f"peak {peak / 2**20:.1f} MiB"


@pytest.mark.parametrize("mode, cleanup", [("direct", CleanupOptions()), ("direct", CleanupOptions.none()),
                                           ("direct", CleanupOptions(single_layer=False)), ("vae", CleanupOptions())])
def test_the_add_on_expects_the_stages_the_pipeline_runs(sphere, mode, cleanup):
    """The add-on's progress bar divides a remesh by the stages it expects for the request
    (blender_addon.worker.stage_path): they must be the ones the pipeline reports, in order."""
    from dataclasses import asdict

    from blender_addon.worker import STAGE_ORDER, STAGE_SLOT, stage_path

    seen: list[str] = []
    remesh(sphere, RemeshOptions(resolution=64, mode=mode, cleanup=cleanup), progress=lambda stage, f: seen.append(stage))
    ran = list(dict.fromkeys(STAGE_SLOT.get(stage, stage) for stage in seen))
    expected = STAGE_ORDER[stage_path(mode, asdict(cleanup))]
    assert [stage for stage in expected if stage in ran] == ran
    assert set(ran) >= set(expected) - {"cleanup"}  # no clean-up stage runs when every step is off
