"""The half-edge grouping every clean-up step reads: the same groups whatever the number of slices
the counting sort runs in, and the same as a plain sort of the undirected edges."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from model.edges import _group_half_edges, edge_valence, half_edge_groups
from tests.conftest import grid_triangles


def reference_groups(faces: np.ndarray) -> dict[tuple[int, int], list[tuple[int, int]]]:
    """Undirected edge → its (face, corner) half-edges, by a dictionary."""
    groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for f, face in enumerate(faces.tolist()):
        for k in range(3):
            a, b = face[k], face[(k + 1) % 3]
            groups.setdefault((min(a, b), max(a, b)), []).append((f, k))
    return groups


def as_dict(faces: np.ndarray, owner, corner, first, size) -> dict[tuple[int, int], list[tuple[int, int]]]:
    out = {}
    for g in range(len(first)):
        halves = [(int(owner[h]), int(corner[h])) for h in range(first[g], first[g] + size[g])]
        f, k = halves[0]
        a, b = faces[f, k], faces[f, (k + 1) % 3]
        key = (int(min(a, b)), int(max(a, b)))
        assert key not in out, "an edge in two groups"
        out[key] = halves
    return out


@pytest.fixture(scope="module")
def junction_faces() -> np.ndarray:
    """A sphere, a copy of half of its faces (every edge there used four times) and a fin of faces
    sharing its edges (three or five times), shuffled: boundary, manifold and junction edges together."""
    sphere = np.asarray(trimesh.creation.icosphere(subdivisions=5).faces, dtype=np.int64)
    rng = np.random.default_rng(7)
    extra = sphere[rng.choice(len(sphere), len(sphere) // 2, replace=False)]
    fin = np.stack([sphere[:500, 0], sphere[:500, 1], np.full(500, sphere.max() + 1)], axis=1)
    faces = np.concatenate([sphere, extra, fin])
    return faces[rng.permutation(len(faces))]


def test_groups_match_a_plain_grouping(junction_faces):
    owner, corner, first, size = half_edge_groups(junction_faces)
    assert as_dict(junction_faces, owner, corner, first, size) == reference_groups(junction_faces)
    assert {1, 2, 3, 4} <= set(size.tolist())


@pytest.mark.parametrize("chunks", [2, 3, 7])
def test_slices_change_nothing(junction_faces, chunks):
    """The counting sort in slices writes each slice after the ones before: bit-identical arrays."""
    serial = _group_half_edges(junction_faces, int(junction_faces.max()) + 1, 1)
    sliced = _group_half_edges(junction_faces, int(junction_faces.max()) + 1, chunks)
    for a, b in zip(serial, sliced):
        np.testing.assert_array_equal(a, b)


def test_edge_valence_of_a_closed_sphere():
    sphere = trimesh.creation.icosphere(subdivisions=3)
    edges, valence = edge_valence(len(sphere.vertices), np.asarray(sphere.faces))
    assert len(edges) == len(sphere.edges_unique) and np.all(valence == 2)


def test_simple_cycles_split_loops_that_touch_at_a_vertex():
    """Two holes sharing a corner are one connected boundary but two cycles; each cycle visits each
    of its vertices once, and every boundary half-edge lands in one."""
    from model.edges import boundary_half_edges, simple_cycles

    x, y = np.meshgrid(np.arange(5.0), np.arange(5.0))
    vertices = np.stack([x.ravel(), y.ravel(), np.zeros(25)], 1)
    cells = np.ones((4, 4), dtype=bool)
    cells[1, 1] = cells[2, 2] = False  # two cells out, diagonal
    faces = grid_triangles(np.arange(25).reshape(5, 5), cells)
    half, on = boundary_half_edges(len(vertices), faces)
    border = half[on]
    label, count = simple_cycles(border, len(vertices))
    assert count == 3 and (label >= 0).all()  # the outer rim and the two holes
    sizes = sorted(np.bincount(label).tolist())
    assert sizes == [4, 4, 16]
    for c in range(count):
        cycle = border[label == c]
        assert len(np.unique(cycle[:, 0])) == len(cycle)  # simple: no vertex twice
        assert sorted(cycle[:, 0].tolist()) == sorted(cycle[:, 1].tolist())  # closed
    assert simple_cycles(np.array([[0, 1], [1, 2]]), 3)[1] == 0  # an open path closes no cycle
