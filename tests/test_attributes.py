"""Materials and colours carried over to a remesh, voxel size and quads over the wire (issue 31)."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from backend import protocol as proto
from backend.client import BackendError, Log3DClient
from backend.server import Server
from model import Mesh, RemeshOptions, remesh
from model.attributes import transfer_attributes
from model.quad_layout import check_quad_pairs
from tests.conftest import as_mesh, server_config


def cube_and_ball() -> tuple[Mesh, np.ndarray]:
    """One object of two bodies: a cube (material 0) and a ball beside it (material 1)."""
    cube = trimesh.creation.box((1.0, 1.0, 1.0))
    ball = trimesh.creation.icosphere(subdivisions=3, radius=0.4)
    ball.apply_translation((1.5, 0.0, 0.0))
    both = trimesh.util.concatenate([cube, ball])
    material = np.r_[np.zeros(len(cube.faces), np.int32), np.ones(len(ball.faces), np.int32)]
    return as_mesh(both), material


def gradient_colors(mesh: Mesh) -> np.ndarray:
    """Per face corner, an RGBA colour that follows the position: red = x, green = y, blue = z."""
    corners = mesh.vertices[mesh.faces]  # [F, 3, 3]
    return np.concatenate([corners, np.ones(corners.shape[:2] + (1,))], axis=2).astype(np.float32)


def test_each_face_takes_the_material_under_it():
    mesh, material = cube_and_ball()
    out = remesh(mesh, RemeshOptions(resolution=128)).mesh
    got, _ = transfer_attributes(mesh, out, material=material)
    centre_x = out.vertices[out.faces].mean(axis=1)[:, 0]
    assert got.shape == (len(out.faces),) and got.dtype == np.int32
    assert (got == (centre_x > 0.75)).mean() == 1.0  # the bodies are 0.6 apart: no face is in doubt
    quads = got[: 2 * out.num_quads].reshape(-1, 2)
    assert (quads[:, 0] == quads[:, 1]).all()  # a quad is one polygon: one material


def test_colours_are_interpolated_at_each_vertex():
    mesh = as_mesh(trimesh.creation.icosphere(subdivisions=4))
    out = remesh(mesh, RemeshOptions(resolution=96)).mesh
    _, colors = transfer_attributes(mesh, out, colors=gradient_colors(mesh))
    assert colors.shape == (len(out.vertices), 4)
    # direct mode's vertices lie on the input, where the colour is linear in the position
    np.testing.assert_allclose(colors[:, :3], out.vertices, atol=1e-5)
    np.testing.assert_allclose(colors[:, 3], 1.0, atol=1e-6)


def test_nothing_asked_nothing_computed():
    mesh, _ = cube_and_ball()
    assert transfer_attributes(mesh, mesh) == (None, None)


@pytest.fixture(scope="module")
def server():
    srv = Server(server_config()).start()
    yield srv
    srv.stop()


@pytest.fixture
def client(server):
    with Log3DClient(port=server.port, timeout_s=10, job_timeout_s=120) as c:
        yield c


def test_material_and_colours_come_back_over_the_wire(client):
    mesh, material = cube_and_ball()
    colors = gradient_colors(mesh)
    vertices, faces, info = client.remesh(mesh.vertices, mesh.faces, resolution=128, material=material, colors=colors)
    check_quad_pairs(faces, info["quads"])
    assert info["quads"] > 0 and "attributes" in info["timings"]
    assert info["material"].shape == (len(faces),) and info["colors"].shape == (len(vertices), 4)
    centre_x = vertices[faces].mean(axis=1)[:, 0]
    assert (info["material"] == (centre_x > 0.75)).mean() == 1.0
    np.testing.assert_allclose(info["colors"][:, :3], vertices, atol=1e-4)


def test_without_attributes_the_result_has_none(client):
    mesh, _ = cube_and_ball()
    _, _, info = client.remesh(mesh.vertices, mesh.faces, resolution=64, polygons="triangles")
    assert "material" not in info and "colors" not in info and info["quads"] == 0


def test_voxel_size_over_the_wire(client):
    mesh, _ = cube_and_ball()  # 2.4 across
    _, _, info = client.remesh(mesh.vertices, mesh.faces, voxel_size=0.02)
    assert info["resolution"] == 136  # 2.4 / 0.02 + 10 voxels of margin → 130 → the next multiple of 8
    with pytest.raises(BackendError) as err:
        client.remesh(mesh.vertices, mesh.faces, voxel_size=0.0001)
    assert err.value.code == "bad_resolution" and "smallest voxel size for it is 0.00117" in err.value.message
    with pytest.raises(BackendError) as err:
        client.remesh(mesh.vertices, mesh.faces, voxel_size=-1)
    assert err.value.code == "bad_option"


@pytest.mark.parametrize("arrays, message", [
    ({"material": np.zeros(3, "<i4")}, "'material' has 3 entries for 12 faces"),
    ({"material": np.zeros(0, "<i4")}, "'material' has 0 entries for 12 faces"),
    ({"colors": np.zeros((5, 3, 4), "<f4")}, "'colors' has 5 faces' corners for 12 faces"),
    ({"colors": np.zeros((12, 3, 0), "<f4")}, "1..64 channels"),
    ({"normals": np.zeros((1, 3), "<f4")}, "optionally"),
])
def test_bad_attribute_arrays_are_refused(arrays, message):
    cube = trimesh.creation.box()  # 12 faces
    base = {"vertices": np.asarray(cube.vertices, "<f4"), "faces": np.asarray(cube.faces, "<i4")}
    frames = proto.request_frames("remesh", "r", {"resolution": 64}, {**base, **arrays})
    with pytest.raises(proto.ProtocolError, match=message) as err:
        proto.parse_request(frames, proto.Limits())
    assert err.value.code == "bad_array"


def test_material_indices_and_colours_must_be_usable():
    cube = trimesh.creation.box()
    base = {"vertices": np.asarray(cube.vertices, "<f4"), "faces": np.asarray(cube.faces, "<i4")}
    f = len(cube.faces)
    for extra, message in [({"material": np.full(f, -1, "<i4")}, "material indices must lie in 0..32767"),
                           ({"material": np.full(f, 40000, "<i4")}, "material indices must lie in 0..32767"),
                           ({"colors": np.full((f, 3, 4), np.nan, "<f4")}, "'colors' holds NaN")]:
        frames = proto.request_frames("remesh", "r", {"resolution": 64}, {**base, **extra})
        with pytest.raises(proto.ProtocolError, match=message):
            proto.parse_request(frames, proto.Limits())
