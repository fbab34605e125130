"""Edges turned along the zero set's creases (model.creases): on an exact field's box the surface
comes closer to the box where its edges cut the box's edges, and nothing else changes — no vertex
moves, the pieces, boundary and edges of 3+ faces stay, a smooth sphere is left alone; a noisy field
is not touched."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import trimesh

from bench.bench_cleanup import boundary_stats
from model.cleanup import CleanupOptions
from model.creases import CreaseOptions, flip_along_creases, pair_edges, plane_distance
from model.mesh import Mesh
from model.pipeline import RemeshOptions, extract_surface
from model.stages import Stages
from model.zero_set import zero_set_planes
from tests.test_zero_set import field_of

N = 64


def tilted_box() -> trimesh.Trimesh:
    box = trimesh.creation.box(extents=[1.0, 0.8, 0.6])
    box.apply_transform(trimesh.transformations.rotation_matrix(0.5, [1.0, 2.0, 3.0]))
    return box


def settled_surface(tm: trimesh.Trimesh):
    """VAE mode's extraction of ``tm``'s exact field without this step; the field, ``tm`` in voxel
    coordinates (as an index), the vertices and faces."""
    field, index, _ = field_of(tm, N)
    options = RemeshOptions(resolution=N, mode="vae", cleanup=CleanupOptions(creases=False))
    surface = extract_surface(field, None, options, Stages())
    return field, index, surface.vertices, surface.faces


def surface_error(index, vertices: np.ndarray, faces: np.ndarray, count: int = 40000) -> np.ndarray:
    """Distances (voxels) from points spread evenly over the surface to the true surface."""
    points, _ = trimesh.sample.sample_surface_even(trimesh.Trimesh(vertices, faces, process=False), count, seed=2)
    return index.distance(points)


def test_pair_edges_name_each_shared_edge_with_its_two_opposite_corners():
    tet = np.array([[0, 1, 2], [0, 3, 1], [1, 3, 2], [2, 3, 0]])
    a, b, c, d, f1, f2 = pair_edges(tet)
    assert len(a) == 6
    for i in range(6):
        assert {a[i], b[i]} | {c[i], d[i]} == {0, 1, 2, 3} and c[i] != d[i]
        assert {a[i], b[i], c[i]} == set(tet[f1[i]]) and {a[i], b[i], d[i]} == set(tet[f2[i]])
    # an open strip's border edges are not interior
    a, b, c, d, _, _ = pair_edges(np.array([[0, 1, 2], [2, 1, 3]]))
    assert len(a) == 1 and {a[0], b[0]} == {1, 2} and {c[0], d[0]} == {0, 3}


def test_pair_edges_keep_only_the_bent_edges_of_the_touched_faces():
    """A flat quad's diagonal gains nothing from a flip; folded by 0.2 along it, its diagonals' middles
    stand 0.1 apart along the pair's normal, more than a gain of 0.05 and less than 0.2. Only the
    faces ``touched`` lend their edges."""
    flat = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], dtype=np.float64)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    assert len(pair_edges(faces, flat, 0.05)[0]) == 0 and len(pair_edges(faces)[0]) == 1
    folded = flat + np.array([[0, 0, 0], [0, 0, 0.2], [0, 0, 0], [0, 0, 0]])
    a, b, c, d, f1, f2 = pair_edges(faces, folded, 0.05)
    assert len(a) == 1 and {a[0], b[0]} == {0, 2} and {c[0], d[0]} == {1, 3}
    assert len(pair_edges(faces, folded, 0.2)[0]) == 0
    assert len(pair_edges(faces, folded, 0.05, np.array([False, True]))[0]) == 1
    assert len(pair_edges(faces, folded, 0.05, np.array([False, False]))[0]) == 0
    with pytest.raises(ValueError, match="vertices"):
        pair_edges(faces, None, 0.05)


def test_the_plane_distance_sees_a_chord_across_an_edge_and_not_a_point_on_a_face():
    """Points inside a box's edge (on the chord between its two faces, 0.3 voxel in) are about
    0.3 · cos 45° off the nearest face's plane; points on a face stay at 0; points farther than the
    radius from every touching plane are inf."""
    box = trimesh.creation.box(extents=[1.0, 0.8, 0.6])
    field, index, voxels = field_of(box, N)
    planes = zero_set_planes(field)
    corner_max = voxels.max(0)
    edge = np.stack([np.linspace(voxels.min(0)[0] + 5, corner_max[0] - 5, 50),
                     np.full(50, corner_max[1]), np.full(50, corner_max[2])], axis=1)
    inside = edge - 0.3 / np.sqrt(2) * np.array([0.0, 1.0, 1.0])
    on_face = edge - np.array([0.0, 2.0, 0.0])
    far = edge + np.array([0.0, 3.0, 3.0])
    chord = plane_distance(inside, field, planes)
    assert np.allclose(index.distance(inside), 0.3 / np.sqrt(2), atol=1e-6)
    assert np.all(np.abs(chord - 0.3 / np.sqrt(2)) < 0.05), chord
    assert plane_distance(on_face, field, planes).max() < 1e-4
    assert np.all(np.isinf(plane_distance(far, field, planes)))


def test_a_tilted_boxs_surface_comes_closer_and_keeps_its_vertices_and_topology():
    field, index, vertices, faces = settled_surface(tilted_box())
    turned = flip_along_creases(vertices, faces, field)
    assert turned.shape == faces.shape and not np.array_equal(turned, faces)
    before, after = surface_error(index, vertices, faces), surface_error(index, vertices, turned)
    assert after.mean() < 0.85 * before.mean(), (after.mean(), before.mean())
    assert np.percentile(after, 99.9) < 0.95 * np.percentile(before, 99.9)
    stats = boundary_stats(Mesh(vertices, turned))
    assert (stats["pieces"], stats["loops"], stats["nonmanifold_edges"]) == (1, 0, 0)
    tm = trimesh.Trimesh(vertices, turned, process=False)
    assert tm.is_watertight and tm.is_winding_consistent and tm.volume > 0
    assert abs(tm.volume - trimesh.Trimesh(vertices, faces, process=False).volume) < 1e-3 * tm.volume


def test_a_smooth_sphere_is_left_alone():
    field, index, vertices, faces = settled_surface(trimesh.creation.icosphere(subdivisions=5))
    turned = flip_along_creases(vertices, faces, field)
    assert np.mean(np.any(turned != faces, axis=1)) < 0.01
    assert surface_error(index, vertices, turned).mean() <= 1.01 * surface_error(index, vertices, faces).mean()


def test_vae_mode_turns_a_clean_fields_edges_and_leaves_a_noisy_ones():
    """The exact field is clean: its extraction has a ``creases`` stage and other faces than with the
    step off. The same field with per-voxel noise of a decoded field's size is not: no stage, the
    same faces as with the step off."""
    field, _, _ = field_of(tilted_box(), N)
    rng = np.random.default_rng(5)
    noisy = dataclasses.replace(field, values=np.clip(field.values + rng.normal(0, 0.01, field.values.shape), 0, 1)
                                .astype(field.values.dtype))
    for f, clean in ((field, True), (noisy, False)):
        stages = Stages()
        on = extract_surface(f, None, RemeshOptions(resolution=N, mode="vae"), stages)
        without = RemeshOptions(resolution=N, mode="vae", cleanup=CleanupOptions(creases=False))
        off = extract_surface(f, None, without, Stages())
        assert ("creases" in stages.timings) == clean
        assert np.array_equal(on.vertices, off.vertices)
        assert np.array_equal(on.faces, off.faces) != clean


def test_options_are_checked():
    with pytest.raises(ValueError, match="gain"):
        CreaseOptions(gain=0.0).validate()
    with pytest.raises(ValueError, match="passes"):
        CreaseOptions(passes=-1).validate()
    with pytest.raises(ValueError, match="reach"):
        CreaseOptions(reach=0).validate()
