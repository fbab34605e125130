"""Direct mode's contouring on generated coarse meshes (issue 34): boxes, sheets on grid-aligned
and 45° planes, T-junctions, single triangles and soups of triangles, placed at exact fractions of a
voxel (0, 1/2, 1/4, 1/3, 1/10: vertices on voxel centres, on grid lines, between them), where the
ties of a rasteriser live. Each must come back whole:

* no edge of three or more faces (after welding coincident vertices, as a user's "merge by
  distance" would) — these meshes have none of their own: sheets that meet (the T) do so without
  sharing edges, and the triangles of a soup are apart;
* pieces ≤ the input's, boundary loops ≤ the input's + max(2, 10 %);
* area within 3 % of the input's (none of them hides area inside itself).

`hypothesis` draws the cases; ``derandomize`` makes the draw the same on every run, so CI sees the
very cases a developer saw (a failure found once is found again), and a failing case is shrunk to a
small one and printed. The count and N are in ``PROPERTY_SETTINGS``; the run prints its tally.
"""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from model.contour import contour, distinct_faces, weld
from model.edges import edge_valence
from tests.test_contour import area, edge_pieces, loops_and_border

N = 48
CENTRE = N / 2 - 0.5  # voxel centres are the integers; the grid's middle
FRACTIONS = (0.0, 0.5, 0.25, 1 / 3, 0.1)
PROPERTY_SETTINGS = settings(max_examples=150, deadline=None, derandomize=True, print_blob=True,
                             suppress_health_check=[HealthCheck.too_slow])
TALLY: dict[str, int] = {}


def rotate_45(vertices: np.ndarray, axis: int) -> np.ndarray:
    i, j = [a for a in range(3) if a != axis]
    c = s = np.sqrt(0.5)
    out = vertices - CENTRE
    out[:, i], out[:, j] = c * out[:, i] - s * out[:, j], s * out[:, i] + c * out[:, j]
    return out + CENTRE


def sheet(corner: np.ndarray, u: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.array([corner, corner + u, corner + u + w, corner + w], float), np.array([[0, 1, 2], [0, 2, 3]])


def min_angle_degrees(tri: np.ndarray) -> float:
    angles = []
    for i in range(3):
        a, b = tri[(i + 1) % 3] - tri[i], tri[(i + 2) % 3] - tri[i]
        angles.append(np.degrees(np.arccos(np.clip(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)), -1, 1))))
    return min(angles)


@st.composite
def coarse_meshes(draw: st.DrawFn) -> tuple[str, np.ndarray, np.ndarray]:
    """A (kind, vertices, faces) in voxel coordinates of the N³ grid."""
    kind = draw(st.sampled_from(["box", "box45", "sheet", "sheet45", "T", "triangle", "soup"]))
    fraction = draw(st.sampled_from(FRACTIONS))
    lo = CENTRE + np.array(draw(st.lists(st.integers(-12, -4), min_size=3, max_size=3)), float) + fraction
    hi = CENTRE + np.array(draw(st.lists(st.integers(4, 12), min_size=3, max_size=3)), float) + fraction
    size = hi - lo
    if kind in ("box", "box45"):
        box = trimesh.creation.box(bounds=[lo, hi])
        vertices, faces = np.asarray(box.vertices, float), np.asarray(box.faces)
        if kind == "box45":
            vertices = rotate_45(vertices, draw(st.integers(0, 2)))
    elif kind == "sheet":
        axis = draw(st.integers(0, 2))
        u, w = np.zeros(3), np.zeros(3)
        u[(axis + 1) % 3], w[(axis + 2) % 3] = size[(axis + 1) % 3], size[(axis + 2) % 3]
        vertices, faces = sheet(lo, u, w)
    elif kind == "sheet45":  # through the diagonal of the grid's squares: x − y constant
        vertices, faces = sheet(lo, np.array([size[0], size[0], 0.0]), np.array([0.0, 0.0, size[2]]))
    elif kind == "T":  # a wall standing on a floor along a line, sharing no edge with it
        floor_v, floor_f = sheet(lo, np.array([size[0], 0, 0]), np.array([0, size[1], 0]))
        wall_v, wall_f = sheet(lo + [0, np.floor(size[1] / 2), 0], np.array([size[0], 0, 0]), np.array([0, 0, size[2]]))
        vertices, faces = np.vstack([floor_v, wall_v]), np.vstack([floor_f, wall_f + 4])
    else:  # coarse triangles on a quarter-voxel lattice: sides of 10 voxels and more, no angle under 25°
        count = 1 if kind == "triangle" else draw(st.integers(2, 3))
        normal = draw(st.sampled_from([(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (0, 1, 1), (1, 0, 1), (1, 2, 3), (3, -1, 2)]))
        normal = np.array(normal, float) / np.linalg.norm(normal)
        u = np.cross(normal, [0.0, 0.0, 1.0] if abs(normal[2]) < 0.9 else [1.0, 0.0, 0.0])
        u /= np.linalg.norm(u)
        w = np.cross(normal, u)
        gap = draw(st.integers(3, 5))  # a soup's triangles lie in parallel planes this far apart: they never meet
        tris = []
        for k in range(count):
            centre = (k - (count - 1) / 2) * gap * normal + draw(st.integers(-2, 2)) * u + draw(st.integers(-2, 2)) * w
            radius = draw(st.integers(4 * 7, 4 * 11)) / 4
            start = draw(st.floats(0, 2 * np.pi))
            spread = [start, start + draw(st.floats(1.6, 2.6)), start + 2 * np.pi - draw(st.floats(1.6, 2.6))]
            tri = CENTRE + np.round(np.array([centre + radius * (np.cos(a) * u + np.sin(a) * w) for a in spread]) * 4) / 4
            assume(min_angle_degrees(tri) >= 25)
            tris.append(tri)
        vertices = np.vstack(tris)
        faces = np.arange(3 * count).reshape(count, 3)
    return kind, vertices, faces


@given(case=coarse_meshes())
@PROPERTY_SETTINGS
def test_coarse_meshes_come_back_whole(case):
    kind, vertices, faces = case
    out_v, out_f = contour(vertices, distinct_faces(vertices, faces), N)
    assert len(out_f), f"{kind}: empty"
    welded_v, welded_f = weld(out_v, out_f)
    assert edge_valence(len(welded_v), welded_f)[1].max() <= 2, f"{kind}: an edge of three or more faces"
    in_loops = loops_and_border(vertices, faces)[0]
    loops = loops_and_border(out_v, out_f)[0]
    assert loops <= in_loops + max(2, in_loops // 10), f"{kind}: {loops} loops, the input {in_loops}"
    assert edge_pieces(welded_f) <= edge_pieces(faces), f"{kind}: {edge_pieces(welded_f)} pieces"
    ratio = area(out_v, out_f) / area(vertices, faces)
    assert abs(ratio - 1.0) <= 0.03, f"{kind}: area {ratio:.4f} of the input's"
    TALLY[kind] = TALLY.get(kind, 0) + 1


@pytest.fixture(scope="module", autouse=True)
def print_tally():
    yield
    if TALLY:
        print(f"\ngenerated coarse meshes at N={N} that came back whole: "
              + ", ".join(f"{k} {v}" for k, v in sorted(TALLY.items())) + f" ({sum(TALLY.values())} in all)")


@st.composite
def two_boxes(draw: st.DrawFn) -> tuple[str, list[tuple[np.ndarray, np.ndarray]], bool]:
    """Two axis-aligned boxes whose insides overlap (through each other, sharing planes, one inside
    the other) at exact voxel fractions, as (size, centre) pairs in voxel coordinates, and whether
    the second is written with its normals inwards (a flipped export)."""
    fraction = draw(st.sampled_from(FRACTIONS))
    size_a = np.array(draw(st.lists(st.integers(8, 20), min_size=3, max_size=3)), float)
    size_b = np.array(draw(st.lists(st.integers(4, 20), min_size=3, max_size=3)), float)
    centre_a = np.full(3, CENTRE) + fraction
    # the second box's centre: its inside overlaps the first's by at least a voxel along every axis
    reach = (size_a + size_b) / 2 - 1
    offset = np.array([draw(st.integers(-int(r), int(r))) for r in reach], float) + draw(st.sampled_from((0.0, 0.5)))
    offset = np.clip(offset, -reach, reach)
    centre_b = centre_a + offset
    assume(np.all(np.abs(centre_b) + size_b / 2 < N - 2) and np.all(centre_b - size_b / 2 > 1))
    kind = "nested" if np.all(np.abs(offset) + size_b / 2 <= size_a / 2) else "through"
    return kind, [(size_a, centre_a), (size_b, centre_b)], draw(st.booleans())


@given(case=two_boxes())
@PROPERTY_SETTINGS
def test_two_boxes_through_each_other_come_back_as_their_union(case):
    """Closed bodies contour as their union (``model.contour.union_crossings``): one closed,
    manifold surface whose area is the union's, whether they cross, share a plane or nest."""
    from tests.test_messy import union_area_of_boxes

    kind, boxes, flipped = case
    parts = []
    for k, (size, centre) in enumerate(boxes):
        box = trimesh.creation.box(size)
        box.apply_translation(centre)
        faces = np.asarray(box.faces)
        parts.append((np.asarray(box.vertices, float), faces[:, ::-1] if flipped and k == 1 else faces))
    vertices = np.vstack([parts[0][0], parts[1][0]])
    faces = np.vstack([parts[0][1], parts[1][1] + len(parts[0][0])])
    out_v, out_f = contour(vertices, distinct_faces(vertices, faces), N)
    welded_v, welded_f = weld(out_v, out_f)
    assert edge_valence(len(welded_v), welded_f)[1].max() <= 2, f"{kind}: an edge of three or more faces"
    assert loops_and_border(out_v, out_f)[0] == 0, f"{kind}: not closed"
    assert edge_pieces(welded_f) == 1, f"{kind}: {edge_pieces(welded_f)} pieces"
    expected = union_area_of_boxes([(tuple(s), tuple(c)) for s, c in boxes])
    ratio = area(out_v, out_f) / expected
    assert abs(ratio - 1.0) <= 0.03, f"{kind}: area {ratio:.4f} of the union's"
    TALLY[f"two boxes {kind}"] = TALLY.get(f"two boxes {kind}", 0) + 1
