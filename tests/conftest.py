"""The tests' shared helpers, in one place: small meshes the tests build themselves, the real meshes
in ../shared, tiny checkpoints, and the comparison of two meshes up to the order of their elements."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh

from model.mesh import Mesh

REPO = Path(__file__).resolve().parents[1]
SHARED_MESHES = REPO.parent / "shared" / "meshes"
SAMPLE = REPO / "examples" / "spot.obj"


def as_mesh(tm: trimesh.Trimesh) -> Mesh:
    return Mesh(vertices=np.asarray(tm.vertices, dtype=np.float64), faces=np.asarray(tm.faces, dtype=np.int64))


def grid_triangles(idx: np.ndarray, cells: np.ndarray | None = None) -> np.ndarray:
    """Two triangles per cell of a grid of vertex ids ``idx`` [R, C], all wound alike: faces
    [2 · cells, 3]. ``cells`` (bool [R − 1, C − 1]): only those cells (the others are holes)."""
    keep = np.ones((idx.shape[0] - 1, idx.shape[1] - 1), dtype=bool) if cells is None else cells
    a, b, c, d = idx[:-1, :-1][keep], idx[1:, :-1][keep], idx[1:, 1:][keep], idx[:-1, 1:][keep]
    return np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])


def shared_mesh(name: str) -> Mesh:
    """A real mesh from ../shared/meshes; the test is skipped where that folder is absent."""
    from model.mesh import load_mesh

    path = SHARED_MESHES / name
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return load_mesh(path)


def canonical_faces(faces: np.ndarray) -> np.ndarray:
    """Faces rotated to start at their smallest index (orientation kept), rows sorted."""
    faces = np.asarray(faces).reshape(-1, 3)
    rolled = np.stack([np.roll(f, -int(np.argmin(f))) for f in faces]) if len(faces) else faces
    return rolled[np.lexsort(rolled.T[::-1])]


def assert_same_surface(vertices: np.ndarray, faces: np.ndarray, expected_vertices: np.ndarray,
                        expected_faces: np.ndarray, tol: float = 1e-6) -> None:
    """Same mesh up to the order of vertices and faces: every vertex matches one expected vertex
    within ``tol`` (a bijection), and the faces map onto the expected faces with their orientation."""
    from scipy.spatial import cKDTree

    v, f = np.asarray(vertices, dtype=np.float64), np.asarray(faces)
    assert f.shape == expected_faces.shape and v.shape == expected_vertices.shape
    if np.array_equal(f, expected_faces):
        np.testing.assert_allclose(v, expected_vertices, rtol=0.0, atol=tol)
        return
    dist, match = cKDTree(expected_vertices).query(v)
    assert dist.max() <= tol
    assert len(np.unique(match)) == len(v), "vertices do not match one to one"
    np.testing.assert_array_equal(canonical_faces(match[f]), canonical_faces(expected_faces))


def write_tiny_weights(path: Path, seed: int = 0, **changes) -> Path:
    """An untrained ``tiny`` LoG-VAE saved as a checkpoint: seeded, so the same seed gives the same
    file; ``changes`` replace config fields (``output_init=0.1`` makes its decoded fields vary)."""
    import torch

    from model.vae import LogVAE, preset, save_model

    torch.manual_seed(seed)
    save_model(LogVAE(preset("tiny").replace(**changes)), path)
    return path


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_weights(tmp_path_factory.mktemp("weights") / "tiny.safetensors")


@pytest.fixture(scope="session", autouse=True)
def private_runtime_dir(tmp_path_factory: pytest.TempPathFactory):
    """Servers started by the tests (in process or as children, which inherit the environment) write
    their connection files here, and clients read them from here, not from the user's own folder."""
    import os

    path = tmp_path_factory.mktemp("runtime")
    path.chmod(0o700)
    old = os.environ.get("LOG3D_RUNTIME_DIR")
    os.environ["LOG3D_RUNTIME_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("LOG3D_RUNTIME_DIR", None)
    else:
        os.environ["LOG3D_RUNTIME_DIR"] = old


def server_config(**changes):
    """A test server's configuration: any free port, CPU, no weights, 8 MB messages, fast progress."""
    from backend import protocol as proto
    from backend.server import ServerConfig

    base = dict(port=0, device="cpu", load_default_weights=False, limits=proto.Limits(max_message_bytes=8 << 20),
                progress_interval_s=0.05)
    return ServerConfig(**{**base, **changes})


def keyed_dealer(port: int):
    """A raw DEALER socket (not yet connected) carrying the CURVE keys of the server on ``port``:
    for tests that send hand-made frames, which without the keys would never reach the server."""
    import zmq

    from backend import auth

    sock = zmq.Context.instance().socket(zmq.DEALER)
    auth.secure_client_socket(sock, auth.read_connection_file(auth.default_connection_file(port)))
    return sock


def endpoint_of(port: int) -> str:
    """Where the server on ``port`` listens (its ipc socket or TCP port), from its connection file."""
    from backend import auth

    return auth.client_endpoint(auth.read_connection_file(auth.default_connection_file(port)), "127.0.0.1", port)


@pytest.fixture
def sphere() -> Mesh:
    return as_mesh(trimesh.creation.icosphere(subdivisions=3, radius=1.0))


@pytest.fixture
def shared_meshes() -> Path:
    if not SHARED_MESHES.is_dir():
        pytest.skip(f"real meshes not found at {SHARED_MESHES}")
    return SHARED_MESHES


def torch_devices() -> list:
    """``cpu``, plus ``cuda`` skipped where no CUDA device is present: the device-generic tests run
    on both."""
    import torch

    return ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


@pytest.fixture(scope="module")
def torch_one_thread():
    """Tiny network workloads: one torch thread avoids OpenMP spin-waits when other jobs share the
    2 cores (restored afterwards)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
