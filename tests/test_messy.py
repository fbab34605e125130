"""Direct mode on the meshes real assets are made of (issue 34): bodies through each other, bodies
inside bodies and cavities, faces on faces, flipped and degenerate faces, T-junctions, fans and
fins — each built here from primitives and checked for what an artist would see: pieces, boundary
loops, edges of three or more faces and the visible area.

The rule these follow (``model.contour.union_crossings`` and ``odd_edges``): closed bodies contour
as the boundary of their union (a cavity — a body wholly inside another with its normals inwards —
stays a cavity); open sheets are kept as they are, once where they lie on another surface. Edges of
three or more faces appear only where the input's own surfaces meet along a line (a fin on an edge,
a sheet running on past a box's edge); those cases check that every such edge lies on that line.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import trimesh

from model.contour import weld
from model.edges import edge_valence
from model.mesh import Mesh
from model.pipeline import RemeshOptions, remesh
from tests.test_contour import edge_pieces, loops_and_border

N = 64


def parts(*meshes: tuple[np.ndarray, np.ndarray]) -> Mesh:
    """One mesh of several parts, none sharing a vertex (as files hold separate objects)."""
    vertices, faces, offset = [], [], 0
    for v, f in meshes:
        vertices.append(np.asarray(v, dtype=np.float64))
        faces.append(np.asarray(f, dtype=np.int64) + offset)
        offset += len(v)
    return Mesh(np.concatenate(vertices), np.concatenate(faces))


def box(size, at=(0.0, 0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    b = trimesh.creation.box(size)
    b.apply_translation(at)
    return np.asarray(b.vertices), np.asarray(b.faces)


def sphere(radius: float, at=(0.0, 0.0, 0.0), inward: bool = False) -> tuple[np.ndarray, np.ndarray]:
    s = trimesh.creation.icosphere(4, radius)
    s.apply_translation(at)
    return np.asarray(s.vertices), np.asarray(s.faces)[:, ::-1] if inward else np.asarray(s.faces)


def quad(corners) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(corners, dtype=np.float64), np.array([[0, 1, 2], [0, 2, 3]])


def union_area_of_boxes(boxes: list[tuple[tuple, tuple]]) -> float:
    """Exact surface area of a union of axis-aligned boxes ((size), (centre)): cells of the grid of
    their distinct coordinates are in or out, and the area is that of the faces between in and out."""
    lows = [np.subtract(c, np.divide(s, 2)) for s, c in boxes]
    highs = [np.add(c, np.divide(s, 2)) for s, c in boxes]
    axes = [np.unique(np.concatenate([[lo[a], hi[a]] for lo, hi in zip(lows, highs)])) for a in range(3)]
    mids = [(ax[1:] + ax[:-1]) / 2 for ax in axes]
    inside = np.zeros([len(m) + 2 for m in mids], dtype=bool)  # a ring of empty cells around
    for i, j, k in itertools.product(*(range(len(m)) for m in mids)):
        p = np.array([mids[0][i], mids[1][j], mids[2][k]])
        inside[i + 1, j + 1, k + 1] = any(np.all((p > lo) & (p < hi)) for lo, hi in zip(lows, highs))
    widths = [np.diff(ax) for ax in axes]
    total = 0.0
    for a in range(3):
        change = np.diff(inside.astype(np.int8), axis=a) != 0  # the faces between neighbours along a
        cells = [slice(1, -1)] * 3
        cells[a] = slice(None)
        b, c = [x for x in range(3) if x != a]
        total += float((np.moveaxis(change[tuple(cells)], a, 0) * np.outer(widths[b], widths[c])[None]).sum())
    return total


def sphere_union_area(radius: float, distance: float) -> float:
    cap = 2 * np.pi * radius * (radius - distance / 2)
    return 2 * (4 * np.pi * radius**2 - cap)


def what_comes_back(mesh: Mesh, n: int = N) -> dict:
    result = remesh(mesh, RemeshOptions(resolution=n))
    v, f = weld(result.mesh.vertices, result.mesh.faces)
    edges, counts = edge_valence(len(v), f)
    loops, _, _ = loops_and_border(result.mesh.vertices, result.mesh.faces)
    extent = float(np.ptp(mesh.vertices, axis=0).max())
    found = {"pieces": edge_pieces(f), "loops": loops, "junction_edges": edges[counts >= 3], "vertices": v,
             "area": float(trimesh.Trimesh(v, f, process=False).area), "voxel": extent / n,
             "warnings": result.warnings}
    print({k: found[k] for k in ("pieces", "loops", "area")}, "3+ edges:", len(found["junction_edges"]))
    return found


def assert_closed_bodies(out: dict, pieces: int, area: float) -> None:
    assert out["warnings"] == []
    assert out["pieces"] == pieces and out["loops"] == 0 and len(out["junction_edges"]) == 0
    assert abs(out["area"] / area - 1) < 0.03, (out["area"], area)


def test_bodies_through_each_other_come_back_as_their_union():
    """A character's eye through its head, parts of an assembly that interpenetrate: the walls
    inside the other body are not surfaces of the material (Blender's voxel remesh drops them too)."""
    r, d = 0.4, 0.45
    out = what_comes_back(parts(sphere(r), sphere(r, (d, 0, 0))))
    assert_closed_bodies(out, 1, sphere_union_area(r, d))
    # the second body's normals inwards (a flipped export) changes nothing
    flipped = what_comes_back(parts(sphere(r), sphere(r, (d, 0, 0), inward=True)))
    assert_closed_bodies(flipped, 1, sphere_union_area(r, d))


def test_boxes_through_each_other_sharing_a_plane_keep_it_once():
    """Two boxes through each other whose bottoms lie in one plane: that face is the union's
    boundary once (counting it twice cancelled it; keeping both walls left T-junctions)."""
    a, b = ((1.0, 0.6, 0.6), (0.0, 0.0, 0.0)), ((0.6, 1.0, 0.6), (0.3, 0.2, 0.1))
    out = what_comes_back(parts(box(*a), box(*b)))
    assert_closed_bodies(out, 1, union_area_of_boxes([a, b]))


def test_boxes_face_to_face_lose_the_wall_between_them():
    a, b = ((0.5, 0.5, 0.5), (0.0, 0.0, 0.0)), ((0.5, 0.5, 0.5), (0.5, 0.0, 0.0))
    out = what_comes_back(parts(box(*a), box(*b)))
    assert_closed_bodies(out, 1, union_area_of_boxes([a, b]))
    assert abs(union_area_of_boxes([a, b]) - 2.5) < 1e-9  # the reference itself: a 1 × 0.5 × 0.5 box


def test_a_cavity_stays_and_a_body_inside_a_body_is_absorbed():
    """A hollow ball is written as an outer shell and an inner one facing inwards: two surfaces.
    A closed body wholly inside another, facing outwards, is inside the material: absorbed."""
    hollow = what_comes_back(parts(sphere(0.5), sphere(0.3, inward=True)))
    assert_closed_bodies(hollow, 2, 4 * np.pi * (0.5**2 + 0.3**2))
    nested = what_comes_back(parts(sphere(0.5), sphere(0.3)))
    assert_closed_bodies(nested, 1, 4 * np.pi * 0.5**2)


def test_inconsistent_winding_and_degenerate_faces_change_nothing():
    v, f = box((1.0, 0.7, 0.5))
    clean = what_comes_back(Mesh(v, f))
    flip = np.random.default_rng(0).random(len(f)) < 0.5
    flipped = what_comes_back(Mesh(v, np.where(flip[:, None], f[:, ::-1], f)))
    # zero-area faces: a repeated corner, a point, and a sliver along an edge through its midpoint
    with_mid = np.concatenate([v, [(v[0] + v[1]) / 2]])
    degenerate = np.concatenate([f, [[0, 0, 1], [2, 2, 2], [0, 1, len(v)]]])
    slivers = what_comes_back(Mesh(with_mid, degenerate))
    for out in (clean, flipped, slivers):
        assert_closed_bodies(out, 1, 2 * (0.7 + 0.35 + 0.5))
    assert flipped["area"] == pytest.approx(clean["area"], rel=1e-9)


def test_overlapping_coplanar_sheets_and_a_decal_are_one_surface():
    """Two sheets overlapping in one plane (layered cards, z-fighting patches) are one sheet of
    their union's outline; a sheet lying on a box's face is that face."""
    a = quad([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]])
    b = quad([[0.5, 0.3, 0], [1.5, 0.3, 0], [1.5, 1.3, 0], [0.5, 1.3, 0]])
    sheets = what_comes_back(parts(a, b))
    assert sheets["pieces"] == 1 and sheets["loops"] == 1 and len(sheets["junction_edges"]) == 0
    assert abs(sheets["area"] / (2 - 0.5 * 0.7) - 1) < 0.03
    decal = quad([[-0.2, -0.2, 0.5], [0.3, -0.2, 0.5], [0.3, 0.3, 0.5], [-0.2, 0.3, 0.5]])
    assert_closed_bodies(what_comes_back(parts(box((1, 1, 1)), decal)), 1, 6.0)


def test_a_t_junction_in_a_sheet_leaves_no_crack():
    """A vertex lying on the middle of another triangle's edge (a T-junction): the input has a
    crack of zero width there, a boundary by its indices; the surface has none."""
    v = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [0, 1, 0], [1, 1, 0], [2, 1, 0], [1, 0.5, 0]], dtype=np.float64)
    f = np.array([[0, 1, 4], [0, 4, 3], [1, 2, 5], [1, 5, 6], [6, 5, 4]])
    out = what_comes_back(Mesh(v, f))
    assert out["pieces"] == 1 and out["loops"] == 1 and len(out["junction_edges"]) == 0
    assert abs(out["area"] / 2.0 - 1) < 0.03


def test_cones_touching_at_their_tips_stay_two_manifold_bodies():
    """Two bodies meeting in one vertex (a non-manifold fan of the input): two closed bodies, no
    edge of three faces, no pinched vertex joining them into one surface."""
    a, b = trimesh.creation.cone(0.3, 0.5), trimesh.creation.cone(0.3, 0.5)
    b.apply_transform(trimesh.transformations.rotation_matrix(np.pi, [1, 0, 0]))
    b.apply_translation((0, 0, 1.0))
    out = what_comes_back(parts((a.vertices, a.faces), (b.vertices, b.faces)))
    assert_closed_bodies(out, 2, float(a.area + b.area))


def junction_edges_on(out: dict, segment: tuple) -> float:
    """The largest distance (in voxels) of an edge of three or more faces from the input's line."""
    p, q = (np.asarray(x, dtype=np.float64) for x in segment)
    mid = out["vertices"][out["junction_edges"]].mean(axis=1)
    t = np.clip((mid - p) @ (q - p) / ((q - p) @ (q - p)), 0, 1)
    return float(np.linalg.norm(mid - (p + t[:, None] * (q - p)), axis=1).max() / out["voxel"])


def test_three_fins_on_one_edge_meet_only_along_that_edge():
    """Three sheets sharing an edge (a fan of faces around it): the one place where the output
    keeps edges of three faces is that line, as the input has it — counted, and each within a
    voxel of it."""
    fins = []
    for angle in (0.0, 2 * np.pi / 3, 4 * np.pi / 3):
        d = np.array([np.cos(angle), np.sin(angle), 0.0]) * 0.8
        fins.append(quad([[0, 0, 0], d, d + [0, 0, 1], [0, 0, 1]]))
    out = what_comes_back(parts(*fins))
    assert out["pieces"] == 1 and out["loops"] == 1
    assert 0 < len(out["junction_edges"]) <= 2 * N  # one line of them, about one per voxel
    assert junction_edges_on(out, ([0, 0, 0], [0, 0, 1])) < 1.0
    assert abs(out["area"] / 2.4 - 1) < 0.03


def test_a_sheet_running_on_past_a_box_edge_meets_it_only_there():
    """A sheet lying on a box's top and running on past its edge: over the box it is the box's
    face (once), past it a sheet whose seam with the box is the box's edge."""
    sheet = quad([[-0.2, -0.2, 0.5], [0.8, -0.2, 0.5], [0.8, 0.3, 0.5], [-0.2, 0.3, 0.5]])
    out = what_comes_back(parts(box((1, 1, 1)), sheet))
    assert out["pieces"] == 1 and out["loops"] == 1
    assert abs(out["area"] / (6.0 + 0.3 * 0.5) - 1) < 0.03
    assert junction_edges_on(out, ([0.5, -0.2, 0.5], [0.5, 0.3, 0.5])) < 1.0
