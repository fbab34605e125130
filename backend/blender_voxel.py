"""Blender's own Voxel Remesh (OpenVDB), run in a separate process, as the baseline we compare to.

Why a subprocess: ``bpy`` is all of Blender in one Python module (hundreds of MB, its own OpenVDB,
TBB and allocator). Importing it into the caller would drag those libraries into the server or the
test process, and a crash inside Blender would take the caller down with it. The worker is this
same module run as ``python -m backend.blender_voxel --worker IN.npz OUT.npz``: arrays travel through
temporary ``.npz`` files and are copied into and out of Blender with ``foreach_set``/``foreach_get``.

The remesh is the operator behind Blender's "Voxel Remesh" button, ``bpy.ops.object.voxel_remesh``
(Object Data properties › Remesh › Voxel; Ctrl-R in Sculpt mode), driven by the mesh's
``remesh_voxel_size`` and ``remesh_voxel_adaptivity``. Its timing is measured around that call only;
importing bpy and moving data are reported separately in the total wall time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BPY_INSTALL_HINT = "pip install bpy==5.0.1"
_REPO_ROOT = Path(__file__).resolve().parents[1]


class BlenderUnavailableError(RuntimeError):
    """``bpy`` cannot be imported by the worker's interpreter."""


class BlenderRemeshError(RuntimeError):
    """Blender ran but produced no usable mesh (or failed, or timed out)."""


@dataclass(frozen=True)
class BlenderRemeshResult:
    """The remeshed mesh (in the input's frame) and what it cost."""

    mesh: "Mesh"  # noqa: F821 - model.mesh.Mesh, imported lazily
    remesh_seconds: float
    """Time inside ``bpy.ops.object.voxel_remesh()`` only."""
    total_seconds: float
    """Wall time of the whole call: process start, ``import bpy``, data transfer, remesh, read-back."""
    peak_rss_bytes: int
    """Peak resident memory of the worker process (bpy included)."""
    voxel_size: float
    blender_version: str
    num_polygons: int = 0
    """Blender's own faces before :attr:`mesh` triangulated them (the remesher makes quads)."""
    num_quads: int = 0


def voxel_size_for(mesh: "Mesh", resolution: int) -> float:  # noqa: F821
    """Voxel size that puts ``resolution`` voxels along the mesh's longest bounding-box side — the
    same grid spacing as LoG3D at N = ``resolution`` (whose unit cube is that longest side)."""
    from model.mesh import used_vertices

    if resolution <= 0:
        raise ValueError(f"resolution must be positive, got {resolution}")
    pts = used_vertices(mesh)
    extent = float((pts.max(axis=0) - pts.min(axis=0)).max())
    if extent <= 0.0:
        raise ValueError("the mesh has zero extent")
    return extent / float(resolution)


def bpy_available(python: str | None = None, timeout_s: float = 120.0) -> bool:
    """Whether ``python`` (default: this interpreter) can ``import bpy``; checked in a subprocess."""
    try:
        done = subprocess.run(
            [python or sys.executable, "-c", "import bpy"],
            capture_output=True,
            timeout=timeout_s,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def voxel_remesh(
    mesh: "Mesh",  # noqa: F821
    voxel_size: float,
    timeout_s: float = 600.0,
    adaptivity: float = 0.0,
    python: str | None = None,
) -> BlenderRemeshResult:
    """Run Blender's Voxel Remesh on ``mesh`` at ``voxel_size`` (in the mesh's units).

    Raises :class:`BlenderUnavailableError` when bpy is missing (install it with
    ``pip install bpy==5.0.1``), and :class:`BlenderRemeshError` when Blender fails, times out,
    or returns an empty mesh — which it does for flat sheets with no volume to voxelise.
    """
    from model.mesh import MeshError, validate_arrays

    if not voxel_size > 0.0:
        raise ValueError(f"voxel_size must be positive, got {voxel_size}")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="log3d-voxel-") as tmp:
        src, dst = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(
            src,
            vertices=np.ascontiguousarray(mesh.vertices, dtype=np.float32),
            faces=np.ascontiguousarray(mesh.faces, dtype=np.int32),
            voxel_size=np.float64(voxel_size),
            adaptivity=np.float64(adaptivity),
        )
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_REPO_ROOT), env.get("PYTHONPATH")]))
        cmd = [python or sys.executable, "-m", "backend.blender_voxel", "--worker", str(src), str(dst)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env, cwd=str(_REPO_ROOT))
        except subprocess.TimeoutExpired:
            raise BlenderRemeshError(
                f"Blender's voxel remesh did not finish within {timeout_s:.0f} s (voxel size {voxel_size:.6g})"
            ) from None
        tail = (done.stderr or "").strip().splitlines()[-5:]
        if done.returncode == _EXIT_NO_BPY:
            raise BlenderUnavailableError(
                f"bpy (Blender as a Python module) is not importable by {cmd[0]}; install it with "
                f"'{BPY_INSTALL_HINT}' (it needs Python 3.11 and numpy 1.26). Details: {' | '.join(tail)}"
            )
        if done.returncode != 0 or not dst.is_file():
            raise BlenderRemeshError(
                f"Blender's voxel remesh failed (exit code {done.returncode}): {' | '.join(tail) or 'no message'}"
            )
        with np.load(dst) as out:
            vertices, faces = out["vertices"].astype(np.float64), out["faces"].astype(np.int64)
            remesh_seconds = float(out["remesh_seconds"])
            peak_rss = int(out["peak_rss_bytes"])
            version = str(out["blender_version"])
            num_polygons, num_quads = int(out["num_polygons"]), int(out["num_quads"])
    if faces.shape[0] == 0:
        raise BlenderRemeshError(
            f"Blender's voxel remesh returned an empty mesh at voxel size {voxel_size:.6g}: it fills the "
            "mesh's volume, so open, zero-thickness sheets (and parts thinner than a voxel) vanish"
        )
    try:
        result_mesh = validate_arrays(vertices, faces, name="Blender voxel remesh output")
    except MeshError as exc:
        raise BlenderRemeshError(str(exc)) from None
    return BlenderRemeshResult(
        mesh=result_mesh,
        remesh_seconds=remesh_seconds,
        total_seconds=time.perf_counter() - start,
        peak_rss_bytes=peak_rss,
        voxel_size=float(voxel_size),
        blender_version=version,
        num_polygons=num_polygons,
        num_quads=num_quads,
    )


# --------------------------------------------------------------------------------------------------
# Worker side: runs inside the subprocess, the only place bpy is ever imported.
# --------------------------------------------------------------------------------------------------

_EXIT_NO_BPY = 3


def _triangulate(loop_start: np.ndarray, loop_total: np.ndarray, loop_vertex: np.ndarray) -> np.ndarray:
    """Fan-triangulate polygons given as Blender loops (the remesher emits quads)."""
    tris = []
    for size in np.unique(loop_total):
        sel = loop_start[loop_total == size]
        for k in range(1, int(size) - 1):
            tris.append(np.stack([loop_vertex[sel], loop_vertex[sel + k], loop_vertex[sel + k + 1]], axis=1))
    if not tris:
        return np.zeros((0, 3), dtype=np.int64)
    return np.concatenate(tris).astype(np.int64)


def _worker(src: str, dst: str) -> int:
    import resource

    try:
        import bpy  # noqa: PLC0415 - imported only in the worker process, on purpose
    except ImportError as exc:
        print(f"cannot import bpy: {exc}", file=sys.stderr)
        return _EXIT_NO_BPY
    with np.load(src) as data:
        verts = np.ascontiguousarray(data["vertices"], dtype=np.float32)
        faces = np.ascontiguousarray(data["faces"], dtype=np.int32)
        voxel_size = float(data["voxel_size"])
        adaptivity = float(data["adaptivity"])

    mesh = bpy.data.meshes.new("log3d_input")
    mesh.vertices.add(verts.shape[0])
    mesh.vertices.foreach_set("co", verts.ravel())
    mesh.loops.add(faces.size)
    mesh.loops.foreach_set("vertex_index", faces.ravel())
    mesh.polygons.add(faces.shape[0])
    mesh.polygons.foreach_set("loop_start", np.arange(0, faces.size, 3, dtype=np.int32))
    mesh.update()
    obj = bpy.data.objects.new("log3d_input", mesh)
    bpy.context.scene.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = obj
    obj.select_set(True)
    mesh.remesh_voxel_size = voxel_size
    mesh.remesh_voxel_adaptivity = adaptivity

    t0 = time.perf_counter()
    status = bpy.ops.object.voxel_remesh()
    remesh_seconds = time.perf_counter() - t0
    if "FINISHED" not in status:
        print(f"voxel_remesh returned {status}", file=sys.stderr)
        return 4

    out = obj.data
    n_verts, n_polys, n_loops = len(out.vertices), len(out.polygons), len(out.loops)
    co = np.empty(n_verts * 3, dtype=np.float32)
    out.vertices.foreach_get("co", co)
    loop_start = np.empty(n_polys, dtype=np.int32)
    loop_total = np.empty(n_polys, dtype=np.int32)
    loop_vertex = np.empty(n_loops, dtype=np.int32)
    out.polygons.foreach_get("loop_start", loop_start)
    out.polygons.foreach_get("loop_total", loop_total)
    out.loops.foreach_get("vertex_index", loop_vertex)
    tris = _triangulate(loop_start, loop_total, loop_vertex)
    np.savez(
        dst,
        vertices=co.reshape(-1, 3),
        faces=tris,
        remesh_seconds=np.float64(remesh_seconds),
        peak_rss_bytes=np.int64(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024),
        blender_version=np.array(bpy.app.version_string),
        num_polygons=np.int64(n_polys),
        num_quads=np.int64(int((loop_total == 4).sum())),
    )
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        sys.exit(_worker(sys.argv[2], sys.argv[3]))
    print("usage: python -m backend.blender_voxel --worker IN.npz OUT.npz", file=sys.stderr)
    sys.exit(2)
