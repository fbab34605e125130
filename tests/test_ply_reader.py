"""Binary PLY in: mixed face lengths, both byte orders, extra properties, broken files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh

from model.mesh import MeshError, load_mesh
from model.ply_reader import read_binary_ply
from tests.conftest import SHARED_MESHES, shared_mesh

VERTICES = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1], [0.5, 1.5, 1]], dtype=np.float64)
POLYGONS = [[0, 1, 2, 3], [0, 1, 4], [1, 2, 6, 5, 4], [4, 5, 6]]  # a quad, a triangle, a pentagon, a triangle
FANS = [[0, 1, 2], [0, 2, 3], [0, 1, 4], [1, 2, 6], [1, 6, 5], [1, 5, 4], [4, 5, 6]]


def write_ply(path: Path, order: str = "<", count_type: str = "u1", index_type: str = "i4", polygons=POLYGONS,
              cut: int = 0) -> None:
    """A binary PLY with a vertex colour and normal, a face flag before the list and a colour after it,
    and an edge element after the faces (all of which the reader must skip over)."""
    names = {"u1": "uchar", "u2": "ushort", "i4": "int", "u4": "uint", "i2": "short"}
    header = (f"ply\nformat binary_{'little' if order == '<' else 'big'}_endian 1.0\ncomment test\n"
              f"element vertex {len(VERTICES)}\nproperty float nx\nproperty double x\nproperty double y\n"
              "property double z\nproperty uchar red\n"
              f"element face {len(polygons)}\nproperty uchar flag\nproperty list {names[count_type]} {names[index_type]} vertex_indices\n"
              "property ushort colour\nelement edge 1\nproperty int vertex1\nproperty int vertex2\nend_header\n")
    vertex = np.dtype([("nx", order + "f4"), ("x", order + "f8"), ("y", order + "f8"), ("z", order + "f8"), ("red", "u1")])
    rows = np.zeros(len(VERTICES), dtype=vertex)
    for k, axis in enumerate("xyz"):
        rows[axis] = VERTICES[:, k]
    body = rows.tobytes()
    for polygon in polygons:
        body += b"\x07" + np.array([len(polygon)], order + count_type).tobytes()
        body += np.array(polygon, order + index_type).tobytes() + np.array([9], order + "u2").tobytes()
    body += np.array([0, 1], order + "i4").tobytes()
    path.write_bytes(header.encode("ascii") + (body[:-cut] if cut else body))


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("types", [("u1", "i4"), ("u2", "u4"), ("u1", "i2")])
def test_mixed_polygons_are_fanned_in_file_order_whatever_the_types(tmp_path, order, types):
    path = tmp_path / "mixed.ply"
    write_ply(path, order, *types)
    mesh = load_mesh(path)
    np.testing.assert_array_equal(mesh.vertices, VERTICES)
    np.testing.assert_array_equal(mesh.faces, FANS)


def test_faces_of_one_length_take_the_strided_path_and_give_the_same_triangles(tmp_path):
    quads = [[0, 1, 2, 3], [1, 2, 6, 5], [4, 5, 6, 0]]
    write_ply(tmp_path / "quads.ply", polygons=quads)
    write_ply(tmp_path / "mixed.ply", polygons=quads + [[0, 1, 4]])
    uniform = read_binary_ply(tmp_path / "quads.ply")[1]
    mixed = read_binary_ply(tmp_path / "mixed.ply")[1]
    np.testing.assert_array_equal(uniform, mixed[:-1])
    np.testing.assert_array_equal(uniform, [[0, 1, 2], [0, 2, 3], [1, 2, 6], [1, 6, 5], [4, 5, 6], [4, 6, 0]])


def test_a_file_cut_short_or_pointing_past_its_vertices_is_named(tmp_path):
    path = tmp_path / "cut.ply"
    write_ply(path, cut=8 + 4)  # the edge element and part of the last face
    with pytest.raises(MeshError, match=r"cut\.ply: cannot read the file: face 3 of 4 runs past the end of the file"):
        load_mesh(path)
    write_ply(path, polygons=POLYGONS[:-1] + [[4, 5, 70]])
    with pytest.raises(MeshError, match="face index 70 is out of range for 7 vertices"):
        load_mesh(path)
    path.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 1000\nproperty float x\nproperty float y\n"
                     b"property float z\nelement face 1\nproperty list uchar int vertex_indices\nend_header\n" + bytes(40))
    with pytest.raises(MeshError, match="the vertex element .* runs past the end of the file"):
        load_mesh(path)


def test_ascii_and_other_headers_still_go_to_trimesh(tmp_path):
    box = trimesh.creation.box()
    path = tmp_path / "box.ply"
    path.write_bytes(trimesh.exchange.ply.export_ply(box, encoding="ascii"))
    assert read_binary_ply(path) is None
    mesh = load_mesh(path)
    assert mesh.num_faces == 12 and mesh.vertices.shape == (8, 3)


@pytest.mark.parametrize("name", ["cycloidal.ply", "large_turbineblade_midsub1.ply"])
def test_real_binary_files_read_as_trimesh_reads_them(name):
    """A VCG file with colours on vertices and faces, and a trimesh-written one."""
    ours = shared_mesh(name)
    theirs = trimesh.load(SHARED_MESHES / name, process=False)
    np.testing.assert_array_equal(ours.vertices, theirs.vertices)
    np.testing.assert_array_equal(ours.faces, theirs.faces)
