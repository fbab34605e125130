"""Parting two sheets that share an edge (model.manifold)."""

from __future__ import annotations

import numpy as np

from model.edges import edge_valence
from model.geometry import face_components
from model.manifold import split_shared_edges
from tests.conftest import grid_triangles


def grid_sheet(height, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """A 3 × 3-vertex sheet over [0, 2]², z = height(x), vertex ids from ``offset``, wound alike."""
    x, y = np.meshgrid(np.arange(3.0), np.arange(3.0), indexing="ij")
    vertices = np.stack([x.ravel(), y.ravel(), height(x.ravel())], 1)
    return vertices, grid_triangles(np.arange(9).reshape(3, 3) + offset)


def two_sheets_touching_along_a_line() -> tuple[np.ndarray, np.ndarray]:
    """A flat sheet and a bent one that touches it along x = 1 (its vertices there are the flat
    sheet's: the two edges on that line have four faces each), joined elsewhere through a bridge
    of two faces that shares an edge with each."""
    flat_v, flat_f = grid_sheet(lambda x: 0.0 * x, 0)
    bent_v, bent_f = grid_sheet(lambda x: 0.3 * (x - 1.0) ** 2, 9)
    vertices = np.concatenate([flat_v, bent_v])
    on_line = np.arange(9, 18)[np.isclose(bent_v[:, 0], 1.0)]
    line_of_flat = np.arange(9)[np.isclose(flat_v[:, 0], 1.0)]
    faces = np.concatenate([flat_f, bent_f])
    for b, a in zip(on_line, line_of_flat):
        faces[faces == b] = a
    bridge = np.array([[7, 8, 17], [7, 17, 16]])  # a quad from the flat sheet's edge at x = 2 to the bent one's
    return vertices, np.concatenate([faces, bridge])


def test_an_edge_of_four_faces_is_parted_between_its_two_sheets():
    vertices, faces = two_sheets_touching_along_a_line()
    assert edge_valence(len(vertices), faces)[1].max() == 4
    out_v, out_f = split_shared_edges(vertices, faces)
    assert edge_valence(len(out_v), out_f)[1].max() == 2
    assert len(out_f) == len(faces) and len(out_v) == len(vertices) + 3  # the line's three vertices, once more
    assert len(np.unique(face_components(len(out_v), out_f)[1])) == 1  # still one piece (the bridge)
    # each sheet keeps its own copy of the line, moved to the middle of its own neighbours: the bent
    # sheet's copy lifts off the flat one (which stays on z = 0), so the two no longer touch
    line = np.concatenate([out_v[[3, 4, 5]], out_v[len(vertices):]])
    assert np.isclose(line[:, 2], 0.0).sum() == 3 and (line[:, 2] > 0.05).sum() == 3


def test_a_part_held_by_the_shared_edges_alone_stays_joined():
    """Without the bridge the two sheets are held together by the line alone: parting them would
    make a piece of its own, so the edges stay as they are."""
    vertices, faces = two_sheets_touching_along_a_line()
    out_v, out_f = split_shared_edges(vertices, faces[:-2])
    assert np.array_equal(out_f, faces[:-2]) and len(out_v) == len(vertices)


def test_a_manifold_surface_is_left_alone():
    vertices, faces = grid_sheet(lambda x: 0.0 * x, 0)
    out_v, out_f = split_shared_edges(vertices, faces)
    assert out_v is vertices and out_f is faces


def two_discs_crossing_along_an_edge() -> tuple[np.ndarray, np.ndarray]:
    """Two flat discs, one in z = 0 and one in y = 0, each made of six faces around the edge from
    u = (0, 0, 0) to v = (1, 0, 0), which they share — and nothing else: the sheets cross along that
    edge. Each disc runs all the way round u and round v, so once the edge's four faces are paired
    every face around u (and around v) is joined to every other: the fan passes the edge twice and
    no copy of u or v can part the sheets (as on the lion's and the beetle's extractions)."""
    vertices = np.array([
        [0.0, 0.0, 0.0], [1.0, 0.0, 0.0],  # u, v
        [0.5, 1.0, 0.0], [-1.0, 0.2, 0.0], [0.5, -1.0, 0.0], [2.0, 0.2, 0.0],  # the z = 0 disc's rim
        [0.5, 0.0, 1.0], [-1.0, 0.0, 0.2], [0.5, 0.0, -1.0], [2.0, 0.0, 0.2],  # the y = 0 disc's rim
    ])
    def disc(p: int, a: int, q: int, c: int) -> list[list[int]]:
        return [[0, 1, p], [0, p, a], [0, a, q], [0, q, 1], [1, q, c], [1, c, p]]
    return vertices, np.array(disc(2, 3, 4, 5) + disc(6, 7, 8, 9))


def test_sheets_crossing_along_an_edge_get_an_edge_each():
    vertices, faces = two_discs_crossing_along_an_edge()
    assert edge_valence(len(vertices), faces)[1].max() == 4
    out_v, out_f = split_shared_edges(vertices, faces)
    _, valence = edge_valence(len(out_v), out_f)
    assert valence.max() == 2
    assert len(out_v) == len(vertices) + 1 and len(out_f) == len(faces) + 2  # one pair's own middle vertex
    assert int((valence == 1).sum()) == 8  # the two rims, nothing torn
    # off the middle of the edge (whose ends moved to the middle of their neighbours) into its pair's wedge
    assert 0.0 < np.linalg.norm(out_v[-1] - 0.5 * (out_v[0] + out_v[1])) <= 0.05 + 1e-9
    # the area is the two discs' to within the small shift
    def area(v, f):
        return 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1).sum()
    assert abs(area(out_v, out_f) / area(vertices, faces) - 1.0) < 0.01
    assert len(np.unique(face_components(len(out_v), out_f)[1])) == 1
