"""The zero set of an unsigned field, from the field alone (model.udf_contour, issue 33), on exact
fields of primitives built to the grid: what holds today. Shapes are sized so that their longest side
spans N − 10 voxels (the pipeline's margin), so "3 voxels" is 3 voxels."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import trimesh

from model.cleanup import CleanupOptions
from model.contour import weld
from model.edges import edge_valence
from model.mesh import face_normals_and_areas
from model.pipeline import RemeshOptions, extract_surface, mesh_to_field
from model.stages import Stages
from tests.conftest import as_mesh, grid_triangles, shared_mesh
from model.udf_contour import field_crossings

N = 96


def voxel(extent: float) -> float:
    """World length of one voxel for a shape whose longest side is ``extent``."""
    return extent / (N - 10)



def counts(vertices: np.ndarray, faces: np.ndarray) -> dict:
    """Pieces, boundary loops, edges of 3+ faces and area of a mesh (voxel units)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    vertices, faces = weld(vertices, faces)
    edges, valence = edge_valence(len(vertices), faces)
    f = faces
    pairs = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    owner = np.tile(np.arange(len(f)), 3)
    key = pairs[:, 0] * (len(vertices) + 1) + pairs[:, 1]
    order = np.argsort(key, kind="stable")
    key, owner = key[order], owner[order]
    same = key[1:] == key[:-1]
    graph = coo_matrix((np.ones(int(same.sum())), (owner[:-1][same], owner[1:][same])), shape=(len(f), len(f)))
    pieces = connected_components(graph, directed=False)[0]
    border = edges[valence == 1]
    loops = 0
    if len(border):
        g = coo_matrix((np.ones(len(border)), (border[:, 0], border[:, 1])), shape=(len(vertices),) * 2)
        label = connected_components(g, directed=False)[1]
        loops = len(np.unique(label[np.unique(border)]))
    return {"pieces": pieces, "loops": loops, "nonmanifold": int((valence > 2).sum()),
            "area": float(face_normals_and_areas(vertices, faces)[1].sum())}


def contoured(tm: trimesh.Trimesh) -> tuple[dict, float]:
    """The counts of VAE mode's extraction with the field contour (specks dropped, as the pipeline
    does), on the exact field, and the input's area in voxel units."""
    mesh = as_mesh(tm)
    field, normalization = mesh_to_field(mesh, N)
    surface = extract_surface(field, None, RemeshOptions(resolution=N, mode="vae", field_extraction="dual"), Stages())
    vertices, faces = surface.vertices, surface.faces
    scale = normalization.scale * N  # world length → voxels
    return counts(vertices, faces), float(tm.area) * scale**2


def folded_sheet() -> trimesh.Trimesh:
    """A 60 × 60-vertex sheet over [−1, 1]², folded: z = 0.3 sin 3x."""
    x = np.linspace(-1, 1, 60)
    grid_x, grid_y = np.meshgrid(x, x)
    vertices = np.stack([grid_x.ravel(), grid_y.ravel(), 0.3 * np.sin(3 * grid_x).ravel()], 1)
    return trimesh.Trimesh(vertices, grid_triangles(np.arange(3600).reshape(60, 60)))


def open_bowl() -> trimesh.Trimesh:
    """A sphere below z = 0.3: one open rim."""
    sphere = trimesh.creation.icosphere(subdivisions=4)
    return sphere.submesh([np.flatnonzero(sphere.triangles_center[:, 2] < 0.3)], append=True)


def holed_sphere() -> trimesh.Trimesh:
    """A sphere below z = 0.8: closed but for one hole (the Stanford bunny's base, in small)."""
    sphere = trimesh.creation.icosphere(subdivisions=4)
    return sphere.submesh([np.flatnonzero(sphere.triangles_center[:, 2] < 0.8)], append=True)


def rounded_v(field, floor: float):
    """The field with its V rounded at the bottom to ``floor`` voxels, like a decoded field's (which
    never falls to zero): sqrt(d² + floor²)."""
    from model.grid import FAR, TRUNCATION_VOXELS, SparseField

    distance = field.values * TRUNCATION_VOXELS
    rounded = np.sqrt(distance**2 + floor**2) / TRUNCATION_VOXELS
    return SparseField(field.resolution, field.keys, np.minimum(rounded, FAR).astype(np.float32))


def test_a_sphere_comes_back_closed_in_one_piece_with_its_area():
    got, area = contoured(trimesh.creation.icosphere(subdivisions=4))
    assert (got["pieces"], got["loops"], got["nonmanifold"]) == (1, 0, 0), got
    assert got["area"] == pytest.approx(area, rel=0.01)


def test_a_box_keeps_its_sharp_edges_closed():
    got, area = contoured(trimesh.creation.box((1.0, 1.0, 1.0)))
    assert (got["pieces"], got["loops"], got["nonmanifold"]) == (1, 0, 0), got
    assert got["area"] == pytest.approx(area, rel=0.01)


def test_a_box_with_three_voxel_walls_gives_two_closed_surfaces():
    wall = 3 * voxel(1.0)
    inner = trimesh.creation.box((1.0 - 2 * wall,) * 3)
    inner.invert()
    got, area = contoured(trimesh.util.concatenate([trimesh.creation.box((1.0, 1.0, 1.0)), inner]))
    assert (got["pieces"], got["loops"], got["nonmanifold"]) == (2, 0, 0), got
    assert got["area"] == pytest.approx(area, rel=0.03)


def test_two_spheres_three_voxels_apart_stay_apart():
    gap = 3 * voxel(4.0 + 3 * 4.0 / (N - 10))
    a, b = trimesh.creation.icosphere(subdivisions=4), trimesh.creation.icosphere(subdivisions=4)
    b.apply_translation((2.0 + gap, 0.0, 0.0))
    got, area = contoured(trimesh.util.concatenate([a, b]))
    assert (got["pieces"], got["loops"], got["nonmanifold"]) == (2, 0, 0), got
    assert got["area"] == pytest.approx(area, rel=0.01)


def test_an_inner_cavity_is_kept():
    cavity = trimesh.creation.icosphere(subdivisions=4, radius=0.5)
    cavity.invert()
    got, area = contoured(trimesh.util.concatenate([trimesh.creation.icosphere(subdivisions=4), cavity]))
    assert (got["pieces"], got["loops"], got["nonmanifold"]) == (2, 0, 0), got
    assert got["area"] == pytest.approx(area, rel=0.01)


def test_a_folded_open_sheet_stays_one_layer_with_its_one_boundary():
    """One layer, not a slab (its area is the sheet's, not twice it), with the input's one rim."""
    got, area = contoured(folded_sheet())
    assert (got["pieces"], got["loops"], got["nonmanifold"]) == (1, 1, 0), got
    assert got["area"] == pytest.approx(area, rel=0.03)


def test_an_open_bowl_keeps_its_rim():
    got, area = contoured(open_bowl())
    assert (got["pieces"], got["loops"], got["nonmanifold"]) == (1, 1, 0), got
    assert got["area"] == pytest.approx(area, rel=0.03)


def test_crossings_are_exact_on_a_plane_between_voxel_centres():
    """A plane's unsigned distances at two voxel centres on either side put the crossing exactly where
    the plane cuts the edge, with the plane's normal."""
    normal = np.array([1.0, 2.0, 3.0]) / np.linalg.norm([1.0, 2.0, 3.0])
    u = np.cross(normal, [1.0, 0.0, 0.0])
    u /= np.linalg.norm(u)
    v = np.cross(normal, u)
    quad = np.array([-u - v, u - v, u + v, -u + v]) * 0.5 + normal * 0.0137
    tm = trimesh.Trimesh(quad, [[0, 1, 2], [0, 2, 3]])
    field, normalization = mesh_to_field(as_mesh(tm), N)
    keys, where, normals = field_crossings(field)
    m = N + 1
    axis = keys // m**3
    node = keys - axis * m**3
    points = np.stack([node // (m * m), (node // m) % m, node % m], 1).astype(float)
    points[np.arange(len(keys)), axis] = where
    plane_point = (normalization.to_unit(quad[:1]) + 0.5) * N - 0.5  # voxel coordinates
    centre = np.asarray(points).mean(0)
    inner = np.linalg.norm(points - centre, axis=1) < 0.3 * N  # away from the square's rim
    offsets = (points[inner] - plane_point) @ normal
    assert inner.sum() > 500 and np.abs(offsets).max() < 1e-4
    assert np.abs(np.abs(normals[inner] @ normal) - 1.0).max() < 1e-6


def test_vae_mode_can_extract_with_the_dual_contour():
    """``field_extraction="dual"``: a field without its input goes through the field contour."""
    mesh = as_mesh(trimesh.creation.icosphere(subdivisions=3))
    field, _ = mesh_to_field(mesh, 64)
    options = RemeshOptions(resolution=64, mode="vae", field_extraction="dual")
    surface = extract_surface(field, None, options, Stages())
    got = counts(surface.vertices, surface.faces)
    assert (got["pieces"], got["loops"]) == (1, 0)
    shell = extract_surface(field, None, RemeshOptions(resolution=64, mode="vae", cleanup=CleanupOptions()), Stages())
    assert len(shell.faces) > 0
    with pytest.raises(ValueError, match="field extraction"):
        RemeshOptions(field_extraction="nope").validate()


@pytest.mark.parametrize("make", [folded_sheet, open_bowl])
def test_vae_modes_default_extraction_gives_a_sheet_one_layer_with_its_rim(make):
    """The default extraction (outer flood, ε-surface, clean-up) finds a sheet's ε-surface to be a
    slab and replaces it by the field's zero set around it (``CleanupOptions.contour_slabs``): one
    layer, the input's one rim, the input's area — not the slab's doubled area."""
    tm = make()
    mesh = as_mesh(tm)
    field, normalization = mesh_to_field(mesh, N)
    surface = extract_surface(field, None, RemeshOptions(resolution=N, mode="vae"), Stages())
    got = counts(surface.vertices, surface.faces)
    area = float(tm.area) * (normalization.scale * N) ** 2
    assert (got["pieces"], got["loops"], got["nonmanifold"]) == (1, 1, 0), got
    assert got["area"] == pytest.approx(area, rel=0.03)


def two_boxes(gap_voxels: float) -> trimesh.Trimesh:
    """Two unit boxes side by side, ``gap_voxels`` voxels apart on a grid whose N − 10 voxels span
    them (2 + the gap)."""
    gap = gap_voxels / (N - 10 - gap_voxels) * 2.0
    a, b = trimesh.creation.box((1.0, 1.0, 1.0)), trimesh.creation.box((1.0, 1.0, 1.0))
    b.apply_translation((1.0 + gap, 0.0, 0.0))
    return trimesh.util.concatenate([a, b])


@pytest.mark.parametrize("fill_gaps", [True, False])
def test_two_boxes_closer_than_the_flood_passes_come_back_apart(fill_gaps):
    """Two unit boxes 4.2 voxels apart (a leg against a belly): the outside flood passes only 2
    voxels off the surface, so it stops at the gap; its descent (``CleanupOptions.fill_gaps``) goes on
    down into it and the boxes come back apart, closed, with their area. Without it the gap is capped
    and deflation folds the cap into it: one piece, and area where the input has none."""
    pair = two_boxes(4.2)
    field, normalization = mesh_to_field(as_mesh(pair), N)
    options = RemeshOptions(resolution=N, mode="vae", cleanup=CleanupOptions(fill_gaps=fill_gaps))
    surface = extract_surface(field, None, options, Stages())
    got = counts(surface.vertices, surface.faces)
    area = float(pair.area) * (normalization.scale * N) ** 2
    if fill_gaps:
        assert (got["pieces"], got["loops"], got["nonmanifold"]) == (2, 0, 0), got
        assert got["area"] == pytest.approx(area, rel=0.03)
    else:
        assert got["pieces"] == 1 or abs(got["area"] / area - 1.0) > 0.03, got


@pytest.mark.parametrize("floor", [0.0, 0.2, 0.3])
def test_a_field_whose_v_is_rounded_is_not_flooded_as_exact(floor):
    """The exact flood (ε 0.535 voxel) is sound for a true distance only. A decoded field's V is
    rounded (its floor 0.2–0.5 voxel): the planes on either side of its zero set then stand apart by
    about twice what the rounding adds, which the noise measure reads above its floor, so the field
    keeps the decoded flood. Two boxes 2.5 voxels apart: apart from the exact field, capped (one
    piece) once the V is rounded (the gap's walls behind the cap join the shell's zero set at its
    sides, so they are no cavity of :mod:`model.interior`)."""
    from model.zero_set import is_clean, sampled_noise

    field, _ = mesh_to_field(as_mesh(two_boxes(2.5)), N)
    if floor:
        field = rounded_v(field, floor)
    assert is_clean(sampled_noise(field)) == (floor == 0.0)
    surface = extract_surface(field, None, RemeshOptions(resolution=N, mode="vae"), Stages())
    assert counts(surface.vertices, surface.faces)["pieces"] == (2 if floor == 0.0 else 1)


def test_a_v_rounded_enough_to_let_the_exact_flood_through_a_wall_is_not_clean():
    """Half a voxel from a wall a V rounded to a floor f reads sqrt(0.25 + f²): above the exact
    flood's ε from f = sqrt(ε² − 0.25) (0.19 at ε 0.535), and two face neighbours either side of the
    wall would both be flooded. A sphere's field — of the shapes tried the one whose rounding reads
    least noise — rounded that much must read above the noise floor (and keep the decoded flood);
    the exact sphere and one rounded at half that must read below it, or the test would not bite."""
    from model.shell import CLEAN_ISO_VOXELS
    from model.zero_set import is_clean, sampled_noise

    field, _ = mesh_to_field(as_mesh(trimesh.creation.icosphere(subdivisions=4)), N)
    leaking = float(np.sqrt(CLEAN_ISO_VOXELS**2 - 0.25))
    assert 0.15 < leaking < 0.25
    assert is_clean(sampled_noise(field)) and is_clean(sampled_noise(rounded_v(field, 0.5 * leaking)))
    assert not is_clean(sampled_noise(rounded_v(field, leaking)))


@pytest.mark.parametrize("clean", [True, False])
def test_an_exact_fields_flood_parts_two_boxes_two_and_a_half_voxels_apart(monkeypatch, clean):
    """Two unit boxes 2.5 voxels apart (a scorpion's leg against its body): a decoded field's flood
    (ε one voxel, its descent through voxels 1.5 voxels off the surface) cannot enter the gap, which
    comes back capped (one piece, or area where the input has none). An exact field's
    (:meth:`model.shell.ShellOptions.for_clean_field`: ε 0.535 voxel, which no surface can lie between
    two neighbours above) goes in, and the boxes come back apart, closed, with their area. The
    second case measures the field as noisy (as a decoded one is) to show the test bites."""
    import model.pipeline as pipeline

    if not clean:
        monkeypatch.setattr(pipeline, "sampled_noise", lambda field, planes=None: np.inf)
    pair = two_boxes(2.5)
    field, normalization = mesh_to_field(as_mesh(pair), N)
    surface = extract_surface(field, None, RemeshOptions(resolution=N, mode="vae"), Stages())
    got = counts(surface.vertices, surface.faces)
    area = float(pair.area) * (normalization.scale * N) ** 2
    if clean:
        assert (got["pieces"], got["loops"], got["nonmanifold"]) == (2, 0, 0), got
        assert got["area"] == pytest.approx(area, rel=0.03)
    else:
        assert got["pieces"] == 1 or abs(got["area"] / area - 1.0) > 0.03, got


@pytest.mark.parametrize("guarded, keep_crumbs", [(False, False), (True, False), (True, True)])
def test_the_scorpions_exact_field_comes_back_in_one_piece(monkeypatch, guarded, keep_crumbs):
    """At an exact field's ε (0.6 voxel then; 0.535 now) a thin part of the scorpion (N = 256) is sampled between
    voxel centres into ε-surface crumbs of 0.2–1.5 voxel² where the flood does not reach around it
    (``guarded``: kept out of what the strictest flood calls interior, as before stop 48). Taken for
    slabs and contoured, each read the body's zero set around it and came back as a loose patch (3
    pieces; the input is one); left out of the slabs (:func:`model.cleanup.crumbs`) they are dropped
    as specks. The third case puts them back among the slabs to show the test bites. The exact
    flood of today goes around the thin part and leaves one crumb."""
    import model.cleanup as cleanup
    import model.pipeline as pipeline
    from model.shell import ShellOptions

    if guarded:
        clean = ShellOptions.for_clean_field()
        monkeypatch.setattr(pipeline.ShellOptions, "for_clean_field",
                            classmethod(lambda cls, fill_gaps=True: dataclasses.replace(clean, descent_reach=3)))
    if keep_crumbs:
        monkeypatch.setattr(cleanup, "crumbs", lambda area: np.zeros(len(area), dtype=bool))
    field, _ = mesh_to_field(shared_mesh("scorpion.obj"), 256)
    surface = extract_surface(field, None, RemeshOptions(resolution=256, mode="vae"), Stages())
    got = counts(surface.vertices, surface.faces)
    assert (got["loops"], got["nonmanifold"]) == (0, 0), got
    assert (got["pieces"] == 1) != keep_crumbs, got


def test_a_sphere_with_a_hole_through_the_default_extraction_is_one_sheet():
    """Where the flood gets inside through a hole (the Stanford bunny's base), the whole surface is a
    slab; contoured from the field it comes back as one sheet with the hole's one rim."""
    holed = holed_sphere()
    field, normalization = mesh_to_field(as_mesh(holed), N)
    surface = extract_surface(field, None, RemeshOptions(resolution=N, mode="vae"), Stages())
    got = counts(surface.vertices, surface.faces)
    assert (got["pieces"], got["loops"], got["nonmanifold"]) == (1, 1, 0), got
    assert got["area"] == pytest.approx(float(holed.area) * (normalization.scale * N) ** 2, rel=0.03)


@pytest.mark.parametrize("floor", [0.3, 0.35, 0.4, 0.45])
def test_a_holed_sphere_with_a_rounded_v_is_one_sheet_without_seams(floor):
    """A decoded field's V is rounded: it never falls below a floor of 0.2–0.5 voxel. Around a curved
    sheet (the sphere with a hole of the test above, its field rounded to ``floor`` like a decoded
    one) the grid edges that cross the sheet obliquely then have both voxels a floor farther from it
    than the sheet's tangent planes say, and read as a ridge unless the floor is allowed for
    (``VALLEY_ALLOWANCE``): the sides of the band then disagree along seams, and the sheet comes
    back with boundary loops the input does not have (the bunny's decoded field at 256: 22, the
    input 5)."""
    holed = holed_sphere()
    field, normalization = mesh_to_field(as_mesh(holed), N)
    decoded_like = rounded_v(field, floor)
    surface = extract_surface(decoded_like, None, RemeshOptions(resolution=N, mode="vae"), Stages())
    got = counts(surface.vertices, surface.faces)
    assert (got["pieces"], got["loops"], got["nonmanifold"]) == (1, 1, 0), got
    assert got["area"] == pytest.approx(float(holed.area) * (normalization.scale * N) ** 2, rel=0.03)


def test_a_raised_floor_leaves_the_sheet_on_the_surface_and_the_rim_where_it_was():
    """A decoded field never falls to zero (its V is rounded: here to 0.6 voxel). Measured from the field's own floor, a
    point on the sheet still reads as on it and a point beyond the rim as off it; by the field's
    value alone (the rule this replaced) every point would be off and the contour empty."""
    from model.cleanup import sample_field
    from model.grid import TRUNCATION_VOXELS
    from model.udf_contour import field_contour, height_off_surface

    square = trimesh.Trimesh([[-1, -1, 0.013], [1, -1, 0.013], [1, 1, 0.013], [-1, 1, 0.013]], [[0, 1, 2], [0, 2, 3]])
    field, normalization = mesh_to_field(as_mesh(square), N)
    raised = rounded_v(field, 0.6)
    centre = (normalization.to_unit(np.array([[0.0, 0.0, 0.013]])) + 0.5) * N - 0.5
    corner = (normalization.to_unit(np.array([[1.0, 1.0, 0.013]])) + 0.5) * N - 0.5
    beyond = corner + np.array([[1.5, 1.5, 0.0]])
    on_sheet = centre + np.array([[0.3, -0.2, 0.0]])
    for f in (field, raised):
        heights = height_off_surface(f, np.concatenate([on_sheet, beyond]))
        assert heights[0] < 0.2 and heights[1] > 1.0, heights
    assert sample_field(raised, on_sheet)[0] * TRUNCATION_VOXELS > 0.5  # the old rule: off the surface
    vertices, faces = field_contour(raised)
    got = counts(vertices, faces)
    assert (got["pieces"], got["loops"], got["nonmanifold"]) == (1, 1, 0), got
    assert got["area"] == pytest.approx(counts(*field_contour(field))["area"], rel=0.03)


def test_field_near_keeps_the_voxels_within_reach_of_the_points():
    from model.grid import FAR
    from model.udf_contour import field_near

    field, _ = mesh_to_field(as_mesh(trimesh.creation.icosphere(subdivisions=3)), 64)
    point = np.array([[31.5, 32.2, 5.3]])  # by the sphere's surface
    part = field_near(field, point, 2.5)
    origin = (part.coords.astype(np.int64) * 8)[:, None, None, None, :]
    ijk = np.stack(np.meshgrid(np.arange(8), np.arange(8), np.arange(8), indexing="ij"), -1)[None]
    within = np.linalg.norm(origin + ijk - point, axis=-1) <= 2.5
    assert 0 < part.num_blocks < field.num_blocks
    assert np.all(part.values[~within] == FAR)
    index = np.searchsorted(field.keys, part.keys)
    assert np.array_equal(part.values[within], field.values[index][within])
    assert within.reshape(len(part.keys), -1).any(axis=1).all()  # no block without a kept voxel


def grid_square(corner: np.ndarray, side_u: np.ndarray, side_v: np.ndarray, n: int = 40) -> trimesh.Trimesh:
    """A flat rectangle corner + s·side_u + t·side_v, s, t in [0, 1], as an n × n grid of vertices."""
    s, t = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n))
    vertices = corner + s.reshape(-1, 1) * side_u + t.reshape(-1, 1) * side_v
    return trimesh.Trimesh(vertices, grid_triangles(np.arange(n * n).reshape(n, n)))


@pytest.mark.parametrize("extraction", ["shell", "dual"])
def test_a_t_junction_of_three_sheets_keeps_every_sheet(extraction):
    """A square standing on the middle of another (two meshes: three half-sheets meet along a line).
    A 2-manifold cannot hold the junction: it comes back joined, no edge of 3+ faces, as many pieces
    and rims as the input or fewer, every half-sheet there (the area within 3 % of the input's; a
    lost half would be a quarter less) and the rims where the input's are (a strip beyond them
    would add several per cent)."""
    floor = grid_square(np.array([-1.0, -1.0, 0.013]), np.array([2.0, 0, 0]), np.array([0, 2.0, 0]))
    wall = grid_square(np.array([0.017, -1.0, 0.013]), np.array([0, 2.0, 0]), np.array([0, 0, 0.987]))
    tee = trimesh.util.concatenate([floor, wall])
    field, normalization = mesh_to_field(as_mesh(tee), N)
    surface = extract_surface(field, None, RemeshOptions(resolution=N, mode="vae", field_extraction=extraction), Stages())
    got = counts(surface.vertices, surface.faces)
    assert got["pieces"] <= 2 and got["loops"] <= 2 + 2 and got["nonmanifold"] == 0, got
    assert got["area"] == pytest.approx(float(tee.area) * (normalization.scale * N) ** 2, rel=0.03)


def crossing_squares(angle: float, offset: float) -> trimesh.Trimesh:
    """A 2 × 2 square in the plane z = 0.013 and another through its middle at ``angle`` degrees,
    moved ``offset`` along x (off the grid's planes, as a real asset is)."""
    flat = grid_square(np.array([-1.0, -1.0, 0.013]), np.array([2.0, 0, 0]), np.array([0, 2.0, 0]))
    t = np.radians(angle)
    other = grid_square(np.array([offset - np.cos(t), -1.0, 0.013 - np.sin(t)]), np.array([2 * np.cos(t), 0, 2 * np.sin(t)]),
                        np.array([0, 2.0, 0]))
    return trimesh.util.concatenate([flat, other])


def tube_through_square() -> trimesh.Trimesh:
    """An open tube (radius 0.31, no caps) standing through a 2 × 2 square: a teapot's spout through
    its body."""
    flat = grid_square(np.array([-1.0, -1.0, 0.013]), np.array([2.0, 0, 0]), np.array([0, 2.0, 0]))
    tube = trimesh.creation.cylinder(radius=0.31, height=1.4, sections=64)
    tube = trimesh.Trimesh(tube.vertices, tube.faces[np.abs(tube.face_normals[:, 2]) < 0.5])  # no caps
    tube.remove_unreferenced_vertices()
    tube.apply_translation((0.021, 0.033, 0.2))
    return trimesh.util.concatenate([flat, tube])


def crossing_sheets(kind: str) -> tuple[trimesh.Trimesh, int]:
    """Sheets that pass through each other, and the input's boundary loops: two squares crossing at
    right angles or at 35°, or an open tube through a square."""
    if kind == "right angle":
        return crossing_squares(90.0, 0.017), 2
    if kind == "35 degrees":
        return crossing_squares(35.0, 0.0), 2
    return tube_through_square(), 3


@pytest.mark.parametrize("kind", ["right angle", "35 degrees", "tube"])
@pytest.mark.parametrize("extraction", ["shell", "dual"])
def test_sheets_crossing_come_back_as_folds_without_a_tear(kind, extraction):
    """Two open sheets through each other (two meshes: four half-sheets meet along a line). A
    2-manifold holds them as two folds, each joining two neighbouring half-sheets; the sides of an
    unsigned field can be chosen that way, so no rim should run along the junction: pieces and
    boundary loops no more than the input's, no edge of 3+ faces, the area within 3 %. Before an
    exact field's judgements weighed where their voxels touch the surface (``RIM_POWER``,
    ``MEDIAL_GAIN``, ``cover``) and regions could flip whole (``REGION_SURE``), the open sheets' side
    flips ran along the wedges' medial axes into the junction: 3 loops (right angle), 4–5 (tube),
    3 (35°), and at N=64 the right-angled pair came back doubled (area 1.38)."""
    sheets, loops = crossing_sheets(kind)
    for n in (64, N):
        field, normalization = mesh_to_field(as_mesh(sheets), n)
        surface = extract_surface(field, None, RemeshOptions(resolution=n, mode="vae", field_extraction=extraction), Stages())
        got = counts(surface.vertices, surface.faces)
        assert got["pieces"] <= 2 and got["loops"] <= loops and got["nonmanifold"] == 0, (n, got)
        assert got["area"] == pytest.approx(float(sheets.area) * (normalization.scale * n) ** 2, rel=0.03), n


def test_tear_mending_joins_the_halves_a_shallow_crossing_tears_off():
    """Two squares crossing at 20°: near their line both pass between the same voxels, the contour
    keeps one sheet through the crossing, and the other two halves end beside it (3 loops for the
    input's 2). ``mend_tears`` (off by default: its strips zip staircase boundaries and add area)
    finds those runs by the other sheet beside them, checks that the field joins them, and bridges
    them: the input's loops, no edge of 3+ faces, every old face kept, and a rim in the open (the
    squares' own) never taken for a tear."""
    from model.tears import mend_tears
    from model.udf_contour import FieldContourOptions, field_contour

    sheets = crossing_squares(20.0, 0.017)
    field, _ = mesh_to_field(as_mesh(sheets), 64)
    vertices, faces = field_contour(field, FieldContourOptions.for_clean_field())
    before = counts(vertices, faces)
    mended_vertices, mended, strips = mend_tears(vertices, faces, field)
    after = counts(mended_vertices, mended)
    assert before["loops"] == 3 and after["loops"] == 2 and strips == 1, (before, after)
    assert after["nonmanifold"] == 0 and after["pieces"] <= 2
    assert len(mended) > len(faces) and {tuple(sorted(f)) for f in faces} <= {tuple(sorted(f)) for f in mended}
    flat = grid_square(np.array([-1.0, -1.0, 0.013]), np.array([2.0, 0, 0]), np.array([0, 2.0, 0]))
    field, _ = mesh_to_field(as_mesh(flat), 64)
    vertices, faces = field_contour(field, FieldContourOptions.for_clean_field())
    assert mend_tears(vertices, faces, field)[2] == 0  # one square alone: its rim is no tear


def sphere_with_a_brim() -> trimesh.Trimesh:
    """A unit sphere with a flat annulus out to radius 2.2 round its equator: a solid and a sheet in
    one surface."""
    sphere = trimesh.creation.icosphere(subdivisions=4)
    radii, angles = np.linspace(1.0, 2.2, 25), np.linspace(0.0, 2.0 * np.pi, 192, endpoint=False)
    r, a = np.meshgrid(radii, angles, indexing="ij")
    vertices = np.stack([r * np.cos(a), r * np.sin(a), 0.0 * r], axis=-1).reshape(-1, 3)
    ids = np.arange(len(vertices)).reshape(r.shape)
    ids = np.concatenate([ids, ids[:, :1]], axis=1)  # the ring closes on itself
    return trimesh.util.concatenate([sphere, trimesh.Trimesh(vertices, grid_triangles(ids), process=False)])


def test_a_solid_with_a_sheet_on_it_keeps_the_sheet_one_layer():
    """The outside flood cannot get into the sphere, so its ε-surface keeps most of its volume when
    deflated (0.6–0.9 of it), but the brim's two sides lie on each other — more than a third of the
    deflated area. Such a component is a slab too (``SLAB_CHECK_RATIO`` 0.9; the lion statue's
    decoded field at 256, whose hollow the flood cannot enter and whose base lay doubled: area 1.232
    of the input's, 0.993 since): contoured from the field, the brim comes back one layer, the
    sphere closed behind it."""
    tm = sphere_with_a_brim()
    field, normalization = mesh_to_field(as_mesh(tm), N)
    surface = extract_surface(field, None, RemeshOptions(resolution=N, mode="vae"), Stages())
    got = counts(surface.vertices, surface.faces)
    area = float(tm.area) * (normalization.scale * N) ** 2
    assert got["pieces"] <= 2 and got["nonmanifold"] == 0, got
    assert got["area"] == pytest.approx(area, rel=0.03), (got["area"] / area, got)


def test_judgements_are_taken_surest_first_in_steps_and_in_edge_order_within_a_step():
    """The spanning forest's order (surest_first): by confidence, highest first; confidences within
    one step of 1/1024 keep their edges' order (so the forest walks the band in voxel order)."""
    from model.udf_contour import surest_first

    conf = np.array([0.2, 0.9, 0.5, 0.9002, 1.0000001, 0.0, 0.5001], dtype=np.float32)
    assert surest_first(conf).tolist() == [4, 1, 3, 2, 6, 0, 5]
    assert surest_first(conf, levels=4).tolist() == [1, 3, 4, 2, 6, 0, 5]  # 0.9 and 1.0 share the top step
    assert surest_first(conf, levels=2).tolist() == [1, 2, 3, 4, 6, 0, 5]


def test_the_sides_are_found_over_the_band_alone():
    """_compact numbers only the voxels that have an edge, in voxel order, so that a field's
    sides cost what its band does, not what its blocks do."""
    from model.udf_contour import _compact

    src = np.array([10, 3, 700], dtype=np.int64)
    dst = np.array([11, 10, 3], dtype=np.int64)
    count, band_src, band_dst = _compact(1024, src, dst)
    assert count == 4
    assert band_src.tolist() == [1, 0, 3] and band_dst.tolist() == [2, 1, 0]
