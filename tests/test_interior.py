"""The surfaces inside the outer shell (model.interior, issue 33): VAE mode's default extraction on
exact fields of primitives keeps a solid's cavities, wound into them, and bodies within them, and
adds no cut-off piece of what passes through the shell; and an exact field's flood goes into a body
open to the outside only through a narrow gap (model.shell, since stop 48)."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

import model.interior as interior
import model.pipeline as pipeline
from model.geometry import face_components, signed_volumes
from model.interior import InteriorOptions, inner_surfaces, nesting_depth
from model.pipeline import RemeshOptions, extract_surface, mesh_to_field
from model.shell import ShellOptions, flood_outside
from model.stages import Stages
from tests.conftest import as_mesh
from tests.test_udf_contour import N, counts, voxel


def sphere(radius: float = 1.0, inward: bool = False) -> trimesh.Trimesh:
    ball = trimesh.creation.icosphere(subdivisions=4, radius=radius)
    if inward:
        ball.invert()
    return ball


def disc(radius: float) -> trimesh.Trimesh:
    """A flat open disc in the plane z = 0.013 (off the grid's voxel layers)."""
    cylinder = trimesh.creation.cylinder(radius=radius, height=0.01, sections=64)
    top = cylinder.submesh([np.flatnonzero(cylinder.face_normals[:, 2] > 0.9)], append=True)
    top.apply_translation((0.0, 0.0, 0.013 - top.vertices[:, 2].mean()))
    return top


def extracted(tm: trimesh.Trimesh) -> tuple[dict, float, np.ndarray]:
    """Counts of the default extraction on the exact field, the input's area (voxel²), and the
    signed volume of each piece (voxel³, largest magnitude first)."""
    field, normalization = mesh_to_field(as_mesh(tm), N)
    surface = extract_surface(field, None, RemeshOptions(resolution=N, mode="vae"), Stages())
    count, component = face_components(len(surface.vertices), surface.faces)
    volumes = signed_volumes(surface.vertices, surface.faces, component, count)
    area = float(tm.area) * (normalization.scale * N) ** 2
    return counts(surface.vertices, surface.faces), area, volumes[np.argsort(-np.abs(volumes))]


@pytest.mark.parametrize("inner", [True, False])
def test_a_spheres_inner_cavity_is_kept_facing_into_it(monkeypatch, inner):
    """A sphere with a cavity of half its radius: two closed pieces, the input's area, the cavity
    enclosing negative volume (its faces point into it, as the input's do). Without the inner
    surfaces (the extraction before them) the cavity is lost: one piece, 80 % of the area."""
    if not inner:
        monkeypatch.setattr(pipeline, "inner_surfaces", lambda *args: (np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)))
    got, area, volumes = extracted(trimesh.util.concatenate([sphere(), sphere(0.5, inward=True)]))
    if inner:
        assert (got["pieces"], got["loops"], got["nonmanifold"]) == (2, 0, 0), got
        assert got["area"] == pytest.approx(area, rel=0.01)
        assert volumes[0] > 0 > volumes[1]
        assert volumes[1] == pytest.approx(-volumes[0] / 8, rel=0.05)
    else:
        assert got["pieces"] == 1 and got["area"] < 0.85 * area, got


@pytest.mark.parametrize("wall_voxels", [3, 4])
def test_a_box_with_walls_three_or_four_voxels_thick_keeps_both_surfaces(wall_voxels):
    """A hollow cube: the outside and the hole, both closed, with the input's area."""
    wall = wall_voxels * voxel(1.0)
    hole = trimesh.creation.box((1.0 - 2 * wall,) * 3)
    hole.invert()
    got, area, volumes = extracted(trimesh.util.concatenate([trimesh.creation.box((1.0, 1.0, 1.0)), hole]))
    assert (got["pieces"], got["loops"], got["nonmanifold"]) == (2, 0, 0), got
    assert got["area"] == pytest.approx(area, rel=0.01)
    assert volumes[0] > 0 > volumes[1]


def test_a_ball_in_a_cavity_faces_out():
    """A ball inside a sphere's cavity: three closed pieces, the ball's faces pointing out of it
    (inside the shell and inside the cavity: material again)."""
    got, area, volumes = extracted(trimesh.util.concatenate([sphere(), sphere(0.5, inward=True), sphere(0.25)]))
    assert (got["pieces"], got["loops"], got["nonmanifold"]) == (3, 0, 0), got
    assert got["area"] == pytest.approx(area, rel=0.01)
    assert volumes[0] > 0 > volumes[1] and volumes[2] > 0, volumes


def inner_of(tm: trimesh.Trimesh) -> dict:
    """The counts of :func:`inner_surfaces` alone on the exact field, with the clean field's flood."""
    field, _ = mesh_to_field(as_mesh(tm), N)
    shell = ShellOptions.for_clean_field()
    vertices, faces = inner_surfaces(field, flood_outside(field, shell.iso, shell))
    return counts(vertices, faces) if len(faces) else {"pieces": 0, "loops": 0, "nonmanifold": 0, "area": 0.0}


@pytest.mark.parametrize("trace, judge_rims", [(True, True), (True, False), (False, True), (False, False)])
def test_a_sheet_through_a_solid_leaves_no_cut_piece_inside(monkeypatch, trace, judge_rims):
    """A disc through a ball and out beyond it: inside the ball the disc's zero set goes on out to
    the shell, and a piece of it cut there would add a rim the input does not have — it is not kept.
    Two rules each see it: the zero set traced from the shell's (:func:`whole_deep_voxels`, which also
    spares contouring it) and the rim where the deep voxels end. With neither, the piece is there,
    rimmed (one loop at ε 0.6 voxel; since the flood's ε is 0.535 its rim is ragged: 7 loops)."""
    if not trace:
        monkeypatch.setattr(interior, "whole_deep_voxels", lambda field, flooded, deep, near_zero, band: deep)
    if not judge_rims:
        monkeypatch.setattr(interior, "local_floor", lambda field, points: np.ones(len(points)))
    got = inner_of(trimesh.util.concatenate([sphere(0.6), disc(1.0)]))
    if trace or judge_rims:
        assert (got["pieces"], got["loops"]) == (0, 0), got
    else:
        assert got["pieces"] == 1 and got["loops"] >= 1, got


def test_a_sheet_wholly_inside_a_cavity_keeps_its_own_rim():
    """A disc floating in a sphere's cavity, clear of its walls: its rim is its own, so it is kept,
    one layer (its area, not twice it) beside the closed cavity."""
    got = inner_of(trimesh.util.concatenate([sphere(), sphere(0.7, inward=True), disc(0.4)]))
    assert (got["pieces"], got["loops"], got["nonmanifold"]) == (2, 1, 0), got
    scale = (N - 10) / 2.0  # voxels per unit: the sphere's diameter spans N − 10
    cavity, sheet = 4 * np.pi * (0.7 * scale) ** 2, np.pi * (0.4 * scale) ** 2
    assert got["area"] == pytest.approx(cavity + sheet, rel=0.02)


def test_nesting_depth_counts_the_pieces_around_each():
    """Three nested spheres and one beside them: depths 0, 1, 2 and 0."""
    parts = [sphere(1.0), sphere(0.6), sphere(0.3)]
    beside = sphere(0.3)
    beside.apply_translation((3.0, 0.0, 0.0))
    mesh = trimesh.util.concatenate(parts + [beside])
    count, component = face_components(len(mesh.vertices), np.asarray(mesh.faces))
    depth = nesting_depth(np.asarray(mesh.vertices), np.asarray(mesh.faces), component, count, np.ones(count, dtype=bool))
    assert depth.tolist() == [0, 1, 2, 0]


def test_interior_options_are_checked():
    with pytest.raises(ValueError, match="reach"):
        InteriorOptions(reach=1.0).validate()
    with pytest.raises(ValueError, match="min_area"):
        InteriorOptions(min_area=-1.0).validate()


def pot_with_a_narrow_opening() -> trimesh.Trimesh:
    """A sphere as one sheet (zero thickness) open through a hole 4.3 voxels across at its top —
    narrower than the strictest flood passes (7 voxels) — with a disc floating inside it."""
    ball = trimesh.creation.uv_sphere(radius=1.0, count=[64, 64])
    pot = ball.submesh([np.flatnonzero(ball.triangles_center[:, 2] < np.cos(0.06))], append=True)
    return trimesh.util.concatenate([pot, disc(0.4)])


@pytest.mark.parametrize("guarded", [False, True])
def test_an_exact_fields_flood_goes_into_a_pot_through_a_narrow_opening(monkeypatch, guarded):
    """An exact field's flood (:meth:`model.shell.ShellOptions.for_clean_field`) goes wherever the
    field is above ε and joined to the border, into what the strictest flood calls interior too:
    the pot comes back one sheet with its opening's rim, the disc inside it one sheet with its own
    (2 pieces, 2 loops, the input's area). Guarded as a decoded field's flood is (kept 3 voxels from
    that interior, as before stop 48) the opening is capped and the disc's band, an island amid
    unstored blocks, comes back wrapped in a closed shell."""
    import dataclasses

    from model.shell import ShellOptions

    if guarded:
        clean = ShellOptions.for_clean_field()
        monkeypatch.setattr(pipeline.ShellOptions, "for_clean_field",
                            classmethod(lambda cls, fill_gaps=True: dataclasses.replace(clean, descent_reach=3)))
    got, area, _ = extracted(pot_with_a_narrow_opening())
    if guarded:
        assert got["loops"] < 2 and got["area"] > 1.2 * area, got
    else:
        assert (got["pieces"], got["loops"], got["nonmanifold"]) == (2, 2, 0), got
        assert got["area"] == pytest.approx(area, rel=0.01)


@pytest.mark.parametrize("floor", [0.0, 0.2])
def test_a_decoded_fields_cavity_is_kept_and_its_rims_inside_are_not(floor):
    """A disc floating in a sphere's cavity, through the default extraction: from the exact field
    three pieces (the shell, the cavity, the disc with its rim); from the field with its V rounded as
    a decoded one's (floor 0.2 voxel) the shell and the cavity only — rims inside a decoded field are
    its tears (:attr:`InteriorOptions.open_sheets`)."""
    from tests.test_udf_contour import rounded_v

    tm = trimesh.util.concatenate([sphere(), sphere(0.7, inward=True), disc(0.4)])
    field, normalization = mesh_to_field(as_mesh(tm), N)
    if floor:
        field = rounded_v(field, floor)
    surface = extract_surface(field, None, RemeshOptions(resolution=N, mode="vae"), Stages())
    got = counts(surface.vertices, surface.faces)
    assert (got["pieces"], got["loops"], got["nonmanifold"]) == ((3, 1, 0) if floor == 0.0 else (2, 0, 0)), got
