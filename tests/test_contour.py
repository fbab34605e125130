"""Dual contouring of the exact zero set (open sheets in direct mode) and the outside flood of decoded
fields: whole by construction — closed stays closed, an open sheet keeps its own boundary loops,
junctions stay joined — on primitives built here and on the shared meshes."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from model.geometry import face_components, signed_volumes
from model.bvh import PrimitiveIndex
from model.contour import InputTopology, contour, dual_contour, weld
from model.edges import edge_valence, half_edge_groups
from model.extract import marching_cubes_sparse
from model.grid import iso_level, unit_margin, unit_to_voxel
from model.mesh import Mesh, fit_unit_cube, load_mesh
from model.pipeline import RemeshOptions, mesh_to_field, remesh
from model.shell import ShellOptions, flood_outside, outer_shell_field
from tests.conftest import as_mesh
from tests.reference import point_triangle_distance

N = 64


def in_voxels(mesh: trimesh.Trimesh | Mesh, n: int = N) -> tuple[np.ndarray, np.ndarray]:
    vertices, faces = np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces, dtype=np.int64)
    return unit_to_voxel(fit_unit_cube(vertices, unit_margin(n)).to_unit(vertices), n), faces


def loops_and_border(vertices: np.ndarray, faces: np.ndarray) -> tuple[int, int, float]:
    """(boundary loops, boundary edges, boundary length) after welding."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    v, f = weld(vertices, faces)
    edges, counts = edge_valence(len(v), f)
    border = edges[counts == 1]
    if len(border) == 0:
        return 0, 0, 0.0
    graph = coo_matrix((np.ones(len(border)), (border[:, 0], border[:, 1])), shape=(len(v),) * 2)
    _, label = connected_components(graph, directed=False)
    loops = len(np.unique(label[np.unique(border)]))
    return loops, len(border), float(np.linalg.norm(v[border[:, 0]] - v[border[:, 1]], axis=1).sum())


def edge_pieces(faces: np.ndarray) -> int:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    owner = np.tile(np.arange(len(faces)), 3)
    key = e[:, 0] * (faces.max() + 2) + e[:, 1]
    order = np.argsort(key, kind="stable")
    key, owner = key[order], owner[order]
    same = key[1:] == key[:-1]
    graph = coo_matrix((np.ones(int(same.sum())), (owner[:-1][same], owner[1:][same])), shape=(len(faces),) * 2)
    return connected_components(graph, directed=False)[0]


def area(vertices: np.ndarray, faces: np.ndarray) -> float:
    return float(trimesh.Trimesh(vertices, faces, process=False).area)


@pytest.mark.parametrize("shape", ["sphere", "box", "torus", "capsule"])
def test_closed_input_gives_a_closed_surface_of_the_same_area(shape):
    mesh = {"sphere": lambda: trimesh.creation.icosphere(4), "box": trimesh.creation.box,
            "torus": lambda: trimesh.creation.torus(1.0, 0.35), "capsule": lambda: trimesh.creation.capsule(1.0, 0.4)}[shape]()
    vertices, faces = in_voxels(mesh)
    out_v, out_f, source, _ = dual_contour(vertices, faces, N)
    assert len(source) == len(out_f) and source.max() < len(faces)
    loops, border, _ = loops_and_border(out_v, out_f)
    assert border == 0 and edge_pieces(out_f) == 1
    tm = trimesh.Trimesh(out_v, out_f, process=False)
    assert tm.is_winding_consistent and tm.volume > 0  # oriented like the input: outwards
    assert abs(area(out_v, out_f) / area(vertices, faces) - 1.0) < 0.02
    # every output vertex lies on the input (the quadric's minimiser inside its cell)
    assert point_triangle_distance(out_v[::7], vertices[faces]).max() < 0.3


def test_a_shape_thinner_than_a_voxel_everywhere_has_no_contour():
    """Both sides of a 0.2-voxel plate cross the same grid edges, so no edge is crossed an odd
    number of times: no contour at this N — empty arrays, not an IndexError from inside (direct
    mode then falls back to the field: the test below)."""
    plate = trimesh.creation.box(extents=(1.0, 1.0, 0.003))
    vertices, faces = in_voxels(plate)
    out_v, out_f, source, _ = dual_contour(vertices, faces, N)
    assert out_v.shape == (0, 3) and out_f.shape == (0, 3) and source.shape == (0,)


def test_two_sheets_in_one_cell_keep_their_own_vertices():
    """A tilted plate 1.2 voxels thick: both of its sides pass through many cells, and with one
    vertex per cell the output pinched the two sides together along 145 edges of four faces. One
    vertex per sheet of a cell keeps it a closed 2-manifold."""
    plate = trimesh.creation.box(extents=(30.0, 30.0, 1.2))
    plate.apply_transform(trimesh.transformations.rotation_matrix(0.6, (1.0, 0.3, 0.0)))
    vertices = np.asarray(plate.vertices) + np.array([32.3, 32.2, 32.1])
    out_v, out_f, _, _ = dual_contour(vertices, np.asarray(plate.faces), N)
    edges, counts = edge_valence(len(out_v), out_f)
    assert (counts == 1).sum() == 0 and (counts > 2).sum() == 0
    assert edge_pieces(out_f) == 1
    tm = trimesh.Trimesh(out_v, out_f, process=False)
    assert tm.is_winding_consistent and tm.volume > 0
    assert abs(area(out_v, out_f) / area(vertices, np.asarray(plate.faces)) - 1.0) < 0.05


def test_zero_length_edges_collapse_when_the_surface_stays_a_manifold():
    """Two cells' vertices on one input point make an edge of zero length and two triangles of zero
    area; collapsing it gives the plain octahedron back. Where the ends share another neighbour
    (collapsing would pinch the surface) it is left alone."""
    from model.contour import collapse_zero_edges

    vertices = np.array([[1, 0, 0], [0, 1, 0], [-1, 0, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1], [0, 0, 1]], float)
    faces = np.array([[4, 0, 1], [4, 1, 2], [6, 2, 3], [6, 3, 0],  # the top fan, split between 4 and its copy 6
                      [4, 2, 6], [6, 0, 4],  # the two zero-area triangles on the edge 4-6
                      [5, 1, 0], [5, 2, 1], [5, 3, 2], [5, 0, 3]])
    out, source = collapse_zero_edges(vertices, faces, np.arange(10))
    assert len(out) == 8 and source.tolist() == [0, 1, 2, 3, 6, 7, 8, 9] and 6 not in out
    tm = trimesh.Trimesh(vertices, out, process=False)
    assert tm.is_watertight and tm.is_winding_consistent and abs(tm.volume - 4 / 3) < 1e-12
    # a tetrahedron whose edge a-b has zero length: collapsing it would lay two triangles on x-y
    tetra_v = np.array([[0, 0, 0], [0, 0, 0], [1, 0, 0], [0, 1, 0]], float)
    tetra_f = np.array([[0, 1, 2], [1, 0, 3], [0, 2, 3], [1, 3, 2]])
    kept, _ = collapse_zero_edges(tetra_v, tetra_f, np.arange(4))
    assert len(kept) == 4


def test_mesh_on_grid_lines_stays_closed():
    """Vertices exactly on grid lines (a box whose corners land on voxel centres) are the ties the
    rasterisation must resolve: no crossing counted twice or lost."""
    box = trimesh.creation.box(extents=(20.0, 20.0, 20.0))
    vertices = np.asarray(box.vertices) + 30.0  # corners at 20 and 40: voxel centres
    out_v, out_f, _, _ = dual_contour(vertices, np.asarray(box.faces), N)
    assert loops_and_border(out_v, out_f)[1] == 0
    assert abs(area(out_v, out_f) - 6 * 400.0) < 1e-6 * 2400


def test_quads_bent_over_a_fine_input_get_its_crossing_and_stay_closed():
    """A sphere a few cells across bends inside each cell: a flat quad misses the input by a good part
    of a voxel there. Fanned around their crossings, the quads come closer, and the surface stays
    closed and oriented (the fan subdivides inside each quad)."""
    vertices, faces = in_voxels(trimesh.creation.icosphere(4), 16)
    samples = np.asarray(trimesh.sample.sample_surface(trimesh.Trimesh(vertices, faces), 2000, seed=1)[0])
    flat_v, flat_f, _, _ = dual_contour(vertices, faces, 16, bend_tolerance=np.inf)
    bent_v, bent_f, source, _ = dual_contour(vertices, faces, 16, bend_tolerance=0.02)
    assert len(bent_f) > len(flat_f) and len(source) == len(bent_f)
    assert len(bent_v) - len(flat_v) == (len(bent_f) - len(flat_f)) // 2  # one vertex per fanned quad
    flat_error = point_triangle_distance(samples, flat_v[flat_f]).mean()
    bent_error = point_triangle_distance(samples, bent_v[bent_f]).mean()
    assert bent_error < 0.8 * flat_error
    assert loops_and_border(bent_v, bent_f)[1] == 0 and edge_pieces(bent_f) == 1
    tm = trimesh.Trimesh(bent_v, bent_f, process=False)
    assert tm.is_winding_consistent and tm.volume > 0
    # the fifth vertices are crossings: on the input
    assert point_triangle_distance(bent_v[len(flat_v):], vertices[faces]).max() < 1e-6  # GRID_JITTER: 1e-7


def test_closest_point_on_degenerate_triangles():
    """Coincident or collinear corners (a contoured quad with two vertices on one sharp input point)
    must give the closest point on the segment they span, never a division by zero."""
    from model.bvh import _closest_on_triangle

    p = (1.0, 1.0, 1.0)
    assert _closest_on_triangle(*p, 0, 0, 0, 0, 0, 0, 0, 0, 0) == (0, 0, 0)
    for corners in ((0, 0, 0, 0, 0, 0, 2, 0, 0), (0, 0, 0, 2, 0, 0, 2, 0, 0), (2, 0, 0, 0, 0, 0, 2, 0, 0),
                    (0, 0, 0, 1, 0, 0, 2, 0, 0)):
        assert np.allclose(_closest_on_triangle(*p, *map(float, corners)), (1.0, 0.0, 0.0))


def test_open_sheets_keep_their_boundary_loops_and_length():
    # a box without its top (1 loop), an annulus (2 loops), a tube open at both ends (2 loops)
    box = trimesh.creation.box()
    cup = trimesh.Trimesh(box.vertices, box.faces[box.face_normals[:, 2] < 0.5]).subdivide().subdivide()
    annulus = trimesh.creation.annulus(0.4, 1.0, 0.01, sections=64)
    annulus = trimesh.Trimesh(annulus.vertices, annulus.faces[annulus.face_normals[:, 2] > 0.9])
    tube = trimesh.creation.cylinder(1.0, 2.0, sections=64)
    tube = trimesh.Trimesh(tube.vertices, tube.faces[np.abs(tube.face_normals[:, 2]) < 0.5])
    for mesh, expected in ((cup, 1), (annulus, 2), (tube, 2)):
        vertices, faces = in_voxels(mesh)
        assert not InputTopology.of(vertices, faces).closed
        out_v, out_f = contour(vertices, faces, N)
        loops, border, length = loops_and_border(out_v, out_f)
        in_loops, _, in_length = loops_and_border(vertices, faces)
        assert in_loops == expected and loops == expected and edge_pieces(out_f) == 1
        assert abs(length / in_length - 1.0) < 0.08  # snapped onto the input's boundary, not a staircase
        assert abs(area(out_v, out_f) / area(vertices, faces) - 1.0) < 0.03
        # the boundary vertices lie on the input's boundary curve
        topology = InputTopology.of(vertices, faces)
        edges, counts = edge_valence(len(out_v), out_f)
        on_border = np.unique(edges[counts == 1].ravel())
        assert PrimitiveIndex(topology.welded_vertices, topology.boundary).distance(out_v[on_border]).max() < 1e-9


def test_a_sheet_at_45_degrees_whose_rim_runs_along_a_grid_line_stays_one_loop():
    """A 45° sheet through voxel centres, its vertical rims on grid lines (CAD's common case): the
    snapped boundary once folded onto itself there (two boundary vertices at one point, a triangle
    of no area between them), which read as two loops and edges of three faces once welded."""
    c = N / 2 - 0.5
    lo = np.array([c - 3.5, c - 11.5, c - 7.5])
    side, height = 11.0, 14.0
    vertices = np.array([lo, lo + [side, side, 0], lo + [side, side, height], lo + [0, 0, height]])
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    out_v, out_f = contour(vertices, faces, N)
    welded_v, welded_f = weld(out_v, out_f)
    assert edge_valence(len(welded_v), welded_f)[1].max() == 2
    assert loops_and_border(out_v, out_f)[0] == 1 and edge_pieces(out_f) == 1
    assert abs(area(out_v, out_f) / area(vertices, faces) - 1.0) < 0.03


def test_a_small_sheet_keeps_its_corners_and_its_area():
    """A 10 × 8 voxel sheet off the grid by a third of a voxel: the cells around each corner have
    their vertices half a voxel inside, whose nearest points lie beside the corner, never at it —
    the corners were cut off (3 % of the area). Each corner now takes the nearest boundary vertex."""
    c = N / 2 - 0.5
    lo = np.array([c - 17 / 3, c - 20 / 3, c - 11 / 3])
    vertices = np.array([lo, lo + [0, 10, 0], lo + [0, 10, 8], lo + [0, 0, 8]])
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    out_v, out_f = contour(vertices, faces, N)
    assert abs(area(out_v, out_f) / 80.0 - 1.0) < 0.002
    assert np.linalg.norm(out_v[:, None, :] - vertices[None], axis=2).min(axis=0).max() < 1e-9  # every corner
    assert loops_and_border(out_v, out_f)[0] == 1 and edge_pieces(out_f) == 1


def test_a_coarse_triangle_keeps_its_tips():
    """One triangle of 67 square voxels with a 27° tip: near the tip it is narrower than a voxel and
    crosses no grid edge, so no cell there has a vertex; an ear from the nearest boundary edge to
    the tip gives the area back (it was 4.6 % short) and every corner is a vertex."""
    c = N / 2 - 0.5
    vertices = c + np.array([[3.25, -5.5, 8.0], [-13.0, -8.75, 8.0], [-12.75, -10.25, 0.0]])
    faces = np.array([[0, 1, 2]])
    out_v, out_f = contour(vertices, faces, N)
    assert abs(area(out_v, out_f) / area(vertices, faces) - 1.0) < 0.005
    assert np.linalg.norm(out_v[:, None, :] - vertices[None], axis=2).min(axis=0).max() < 1e-9
    assert loops_and_border(out_v, out_f)[0] == 1 and edge_pieces(out_f) == 1
    normals = trimesh.Trimesh(out_v, out_f, process=False).face_normals
    assert ((normals @ normals[0]) > 0.999).all()  # one flat sheet, no face folded back


def test_a_fin_on_a_sheet_stays_joined():
    """A T-junction (three faces on one edge) is a three-face edge of the output, not a tear: one
    piece, and only the input's own loops (the square's outline and the fin's free edge)."""
    #  F-----E-----H     the sheet, split at x = 0.13 so that the fin's foot C-D is an edge of both
    #  |     D     |     halves; the fin stands on C-D (three faces on that edge)
    #  |     C     |
    #  A-----B-----G
    points = [[-1, -1, 0], [0.13, -1, 0], [0.13, -0.61, 0], [0.13, 0.59, 0], [0.13, 1, 0], [-1, 1, 0], [1, -1, 0],
              [1, 1, 0], [0.13, 0.59, 0.8], [0.13, -0.61, 0.8]]
    A, B, C, D, E, F, G, H, D2, C2 = range(10)
    tris = [[A, B, C], [A, C, D], [A, D, F], [D, E, F], [B, G, C], [C, G, D], [D, G, H], [D, H, E], [C, D, D2], [C, D2, C2]]
    tm = trimesh.Trimesh(points, tris).subdivide().subdivide()
    vertices, faces = in_voxels(tm)
    assert loops_and_border(vertices, faces)[0] == 2
    out_v, out_f = contour(vertices, faces, N)
    loops, _, _ = loops_and_border(out_v, out_f)
    assert edge_pieces(out_f) == 1
    assert loops <= 2
    assert abs(area(out_v, out_f) / area(vertices, faces) - 1.0) < 0.03


def edge_groups(faces: np.ndarray, groups: tuple) -> set[tuple[tuple[int, int], frozenset]]:
    """Each group as (its undirected edge, its set of (face, corner)); asserts one edge per group."""
    owner, corner, first, size = groups
    out = set()
    for g in range(len(first)):
        hs = range(first[g], first[g] + size[g])
        edges = {tuple(sorted((faces[owner[h], corner[h]], faces[owner[h], (corner[h] + 1) % 3]))) for h in hs}
        assert len(edges) == 1
        out.add((edges.pop(), frozenset((int(owner[h]), int(corner[h])) for h in hs)))
    return out


def test_detach_splits_a_boundary_lying_on_another_sheet_and_regroups_only_there():
    """A wall standing on a floor without sharing its edges (two input pieces): the wall's free
    bottom edge runs through the floor's cells, where one vertex per cell joins them. Detaching
    keeps them apart, and its locally updated half-edge groups equal a fresh grouping."""
    from model.contour import DETACH_DISTANCE, detach_at_boundary, tidy_contour

    floor = trimesh.Trimesh([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], [[0, 1, 2], [0, 2, 3]])
    wall = trimesh.Trimesh([[0.05, -0.6, 0.0], [0.05, 0.6, 0.0], [0.05, 0.6, 0.7], [0.05, -0.6, 0.7]], [[0, 1, 2], [0, 2, 3]])
    tm = trimesh.util.concatenate([floor.subdivide().subdivide(), wall.subdivide().subdivide()])
    vertices, faces = in_voxels(tm)
    topology = InputTopology.of(vertices, faces)
    out_v, out_f, source, _ = dual_contour(vertices, faces, N, topology)
    groups = half_edge_groups(out_f)
    owner, corner, first, size = groups
    three = first[size == 3]
    ends = np.unique(np.concatenate([out_f[owner[three], corner[three]], out_f[owner[three], (corner[three] + 1) % 3]]))
    near = np.zeros(len(out_v), dtype=bool)
    near[ends] = topology.boundary_index().distance(out_v[ends], DETACH_DISTANCE) <= DETACH_DISTANCE
    assert near.sum() > 10  # the wall's foot is on the floor
    new_v, new_f, alive, new_groups = detach_at_boundary(out_v, out_f, near, groups)
    assert len(new_v) > len(out_v) and len(new_f) == len(out_f)
    # the cut does not depend on the order of the faces (it once did: the first face at a three-face
    # edge joined the others, and when that was the face cut loose it was joined right back)
    for order in (np.arange(len(out_f))[::-1], np.random.default_rng(3).permutation(len(out_f))):
        again_v, _, again_alive, _ = detach_at_boundary(out_v, out_f[order], near)
        assert len(again_v) == len(new_v) and again_alive.sum() == alive.sum()
    assert edge_groups(new_f, new_groups) == edge_groups(new_f, half_edge_groups(new_f))
    # tidied: two pieces (the floor's 1 loop, the wall's 1 loop), nothing lost
    tidy_v, tidy_f, _ = tidy_contour(out_v, out_f, source, topology)
    assert edge_pieces(tidy_f) == 2 and loops_and_border(tidy_v, tidy_f)[0] == 2
    assert abs(area(tidy_v, tidy_f) / area(vertices, faces) - 1.0) < 0.03


def test_direct_remesh_of_open_shared_meshes_is_whole(shared_meshes):
    for name, loops_in, pieces_in in (("woody.obj", 1, 1), ("suzanne.obj", 4, 3)):
        mesh = load_mesh(shared_meshes / name)
        out = remesh(mesh, RemeshOptions(resolution=128)).mesh
        loops, _, length = loops_and_border(out.vertices, out.faces)
        _, _, in_length = loops_and_border(mesh.vertices, mesh.faces)
        assert loops <= loops_in + 2 and edge_pieces(out.faces) <= pieces_in
        assert length <= 1.5 * in_length
        assert abs(area(out.vertices, out.faces) / area(mesh.vertices, mesh.faces) - 1.0) < 0.03


def test_mixed_mesh_keeps_closed_parts_closed_and_sheets_single():
    """A closed ball touching an open sheet: the ball comes out closed, the sheet as one layer, both
    dual-contoured from the input."""
    ball = trimesh.creation.icosphere(3, radius=0.4)
    ball.apply_translation((0.0, 0.0, 0.42))
    sheet = trimesh.Trimesh([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], [[0, 1, 2], [0, 2, 3]]).subdivide().subdivide()
    mixed = as_mesh(trimesh.util.concatenate([ball, sheet]))
    result = remesh(mixed, RemeshOptions(resolution=96))
    assert set(result.timings) == {"extract", "cleanup"}  # the field is never read, so never made
    out = result.mesh
    assert abs(area(out.vertices, out.faces) / area(mixed.vertices, mixed.faces) - 1.0) < 0.03
    loops, _, _ = loops_and_border(out.vertices, out.faces)
    assert loops == 1  # the sheet's outline; the ball adds none


# --- decoded fields ---------------------------------------------------------------------------------


def punctured_field(mesh: Mesh, n: int, hole_center: np.ndarray, hole_radius: float, raise_to: float):
    """The exact field of ``mesh`` with a patch of its surface lifted above ε, as a decoder's error
    would lift it: the ε-surface has a hole there."""
    field_, normalization = mesh_to_field(mesh, n)
    center = unit_to_voxel(normalization.to_unit(hole_center[None]), n)[0]
    coords = field_.coords.astype(np.float64) * 8
    local = np.stack(np.meshgrid(np.arange(8), np.arange(8), np.arange(8), indexing="ij"), axis=-1).reshape(-1, 3)
    points = coords[:, None, :] + local[None, :, :]
    near = np.linalg.norm(points - center, axis=2) < hole_radius
    values = field_.values.reshape(len(coords), -1).copy()
    values[near] = np.maximum(values[near], raise_to)
    field_.values = values.reshape(field_.values.shape)
    return field_


def test_flood_keeps_a_punctured_decoded_shell_closed_and_single():
    sphere = as_mesh(trimesh.creation.icosphere(4, radius=1.0))
    n = 64
    field_ = punctured_field(sphere, n, np.array([1.0, 0.0, 0.0]), 4.0, 0.45)  # 1.8 voxels: above ε, below the flood
    raw_v, raw_f = marching_cubes_sparse(field_, iso_level())
    count, _ = face_components(len(raw_v), raw_f)
    assert count == 1  # the hole joins the inner and outer shells: the failure this guards against
    shell = outer_shell_field(field_, iso_level())
    v, f = marching_cubes_sparse(shell, iso_level())
    count, component = face_components(len(v), f)
    volumes = signed_volumes(v, f, component, count)
    outer = component == int(np.argmax(volumes))
    loops, border, _ = loops_and_border(v, f[outer])
    assert border == 0  # closed where the decoded surface has its hole
    true_volume = 4.0 / 3.0 * np.pi * (n - 10) ** 3 / 8  # the sphere's, in voxels (radius (N - 10) / 2)
    assert 0.9 < volumes.max() / true_volume < 1.3  # the whole ball, not a thin shell around its wall
    assert (volumes[volumes < 0]).size >= 1  # the inward shell at the unstored interior, dropped by the clean-up


def test_flood_raises_its_level_when_a_hole_lets_it_into_the_interior():
    sphere = as_mesh(trimesh.creation.icosphere(4, radius=1.0))
    field_ = punctured_field(sphere, 64, np.array([1.0, 0.0, 0.0]), 4.0, 0.55)  # 2.2 voxels: above the first level
    outside, labels, reached = flood_outside(field_, iso_level())
    assert reached.sum() == 1 + 1  # off the grid and the exterior; the interior stays inside
    leaky, _, reached_low = flood_outside(field_, iso_level(), ShellOptions(flood_levels=(0.5,)))
    assert reached_low.sum() > reached.sum()  # a single low level floods the interior through the hole


def test_vae_style_remesh_of_a_punctured_field_is_closed(monkeypatch):
    """The whole decoded-field path (flood, marching cubes, clean-up) on a punctured exact field,
    taken for a decoded one (an exact field with a hole is an open surface, and its flood goes in)."""
    from model import pipeline

    monkeypatch.setattr(pipeline, "is_clean", lambda noise: False)
    sphere = as_mesh(trimesh.creation.icosphere(4, radius=1.0))
    field_ = punctured_field(sphere, 64, np.array([0.0, 1.0, 0.0]), 5.0, 0.4)
    options = RemeshOptions(resolution=64)
    vertices, faces = pipeline._extract_field(field_, options, pipeline.Stages(None, None), None)
    loops, border, _ = loops_and_border(vertices, faces)
    assert border == 0 and edge_pieces(faces) == 1
    radius = np.linalg.norm(vertices - vertices.mean(axis=0), axis=1)
    assert radius.std() / radius.mean() < 0.05  # one sphere, not a sphere and a shell inside it


def test_the_floods_descent_stays_out_of_a_box_through_a_raised_hole(monkeypatch):
    """A grid-aligned box whose decoded wall has a patch lifted to 1.6 voxels (a ball of radius 5
    voxels across the wall) — above the 1.5 voxels the outside's descent into narrow gaps goes
    through (:class:`~model.shell.ShellOptions`). The descent enters the lifted patch and stops where
    its path would have to climb: the surface stays closed, one piece, dented at most as deep as the
    patch, not doubled by an inner shell along the wall (twice the area). The field is taken for a
    decoded one: elsewhere it is exact, and an exact field's flood goes through a hole."""
    from model import pipeline

    monkeypatch.setattr(pipeline, "is_clean", lambda noise: False)
    box = as_mesh(trimesh.creation.box((1.0, 1.0, 1.0)))
    field_ = punctured_field(box, 64, np.array([0.5, 0.1, 0.2]), 5.0, 0.4)
    vertices, faces = pipeline._extract_field(field_, RemeshOptions(resolution=64), pipeline.Stages(None, None), None)
    loops, border, _ = loops_and_border(vertices, faces)
    assert border == 0 and edge_pieces(faces) == 1
    assert area(vertices, faces) == pytest.approx(6 * 54.0**2, rel=0.05)  # the box spans N - 10 voxels
    hole = unit_to_voxel(np.array([[0.5, 0.1, 0.2]]) * 54.0 / 64.0, 64)[0]
    dented = np.linalg.norm(vertices - hole, axis=1) < 8.0
    assert vertices[~dented, 0].max() - vertices[~dented, 0].min() > 53.0  # the walls are where they were
    assert (vertices[dented, 0] > hole[0] - 6.0).all()  # no deeper than the lifted patch


@pytest.mark.parametrize("copies", ["same winding", "opposite winding", "some faces"])
def test_faces_given_twice_are_one_sheet_of_material(copies):
    """Double-sided exports repeat every face (either winding); by parity two copies would cancel
    and the surface vanish ("empty surface" on a chair hundreds of voxels across). One copy counts."""
    box = trimesh.creation.box((1.0, 0.7, 0.5))
    v, f = np.asarray(box.vertices), np.asarray(box.faces)
    extra = {"same winding": f, "opposite winding": f[:, ::-1], "some faces": f[:5]}[copies]
    once = remesh(Mesh(v, f), RemeshOptions(resolution=64)).mesh
    twice = remesh(Mesh(v, np.concatenate([f, extra])), RemeshOptions(resolution=64)).mesh
    np.testing.assert_array_equal(twice.faces, once.faces)
    np.testing.assert_array_equal(twice.vertices, once.vertices)
    # a double-sided sheet with its vertices split per side (as exporters write it): one open layer
    grid = trimesh.creation.box((1.0, 1.0, 0.0001))
    sheet_v = np.asarray(grid.vertices)[:, :2]
    sheet = trimesh.Trimesh(np.c_[sheet_v, np.zeros(len(sheet_v))], np.asarray(grid.faces)[np.asarray(grid.face_normals)[:, 2] > 0.5])
    back = np.asarray(sheet.faces)[:, ::-1] + len(sheet.vertices)
    both = Mesh(np.concatenate([sheet.vertices, sheet.vertices]), np.concatenate([sheet.faces, back]))
    out = remesh(both, RemeshOptions(resolution=64)).mesh
    loops = trimesh.Trimesh(out.vertices, out.faces, process=False).outline().entities
    assert len(loops) == 1


def test_a_part_thinner_than_a_voxel_falls_back_to_the_field_with_a_warning(caplog):
    """Both sides of a plate thinner than a voxel cross the same grid edges and cancel: the contour
    is empty. Direct mode then takes the exact field's ε-surface with the same clean-up (the plate
    as one layer), says so in the log and in the result, and never fails where --raw would not."""
    plate = as_mesh(trimesh.creation.box((1.0, 1.0, 0.002)))
    with caplog.at_level("WARNING", logger="log3d.pipeline"):
        result = remesh(plate, RemeshOptions(resolution=64))
    assert len(result.warnings) == 1 and "thinner than a voxel" in result.warnings[0]
    assert "ε-surface was used instead" in caplog.text
    out = trimesh.Trimesh(result.mesh.vertices, result.mesh.faces, process=False)
    assert abs(out.area - 1.0) < 0.05  # one layer of the plate's area (a side), not two
    assert len(out.outline().entities) == 1 and result.num_blocks > 0
    thick = remesh(as_mesh(trimesh.creation.box((1.0, 1.0, 0.2))), RemeshOptions(resolution=64))
    assert thick.warnings == [] and thick.num_blocks == 0  # contoured: no field made, nothing to say
