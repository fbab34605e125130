"""The clean-up of the ε-surface as torch tensors: the device twin of :func:`model.cleanup.clean_surface`.

Marching cubes on the device leaves the ε-surface there; copying tens of millions of faces to the
host only to deflate them and drop the inner shells would cost more than the steps themselves. So
the steps with a data-parallel form — field sampling, deflation, vertex normals, connected
components, signed volumes, compaction — run here on whatever device the field lives on, with the
same formulas (and the same summation order where it is cheap to keep) as the numba code, so that
both paths take the same decisions. The steps that are sequential at heart — the single-layer cut
(a k-d tree and a breadth-first two-colouring, then the pinhole filling) and quadric decimation
(fast-simplification) — have no torch version: their inputs are copied to the host once, the CPU
functions of :mod:`model.cleanup` run there and the result comes back to the device.

Vertices are voxel coordinates, float64 or float32: the work is done in the vertices' dtype
(float64 reproduces the numba path to rounding, float32 is the fast path on GPUs without full-rate
float64), except signed volumes, which always accumulate in float64 because the outer-shell and slab
decisions compare sums over millions of faces. Faces are int64. Everything stays on the field's
device; extra memory is O(V + F), and field sampling works through the points in chunks.

Loops in this module run over the 8 cell corners, the 3 axes or the rounds of the component
search (logarithmic in the mesh size in practice), never over vertices or faces.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..cleanup import (
    EXACT_ALIGNMENT,
    CleanupOptions,
    cut_slabs,
    decimate,
    lies_doubled,
    volume_slabs,
)
from ..grid import BLOCK_SIZE, FAR, ISO_VOXELS, TRUNCATION_VOXELS
from .field import TorchField, lookup_keys
from .surface import BlockCandidates, closest_points_torch

SAMPLE_CHUNK = 1 << 20
"""Points sampled per pass: the per-axis and per-corner temporaries (block coordinates, local
indices, weights, lookups) take about 200 bytes a point, so a pass needs some 200 MB however many
vertices the surface has, while still being large enough to keep a GPU busy."""


# --- field sampling ------------------------------------------------------------------------------


def _axis_steps(base: torch.Tensor, frac: torch.Tensor, resolution: int) -> tuple[tuple[torch.Tensor, ...], ...]:
    """Along one axis, for the cell's lower (d = 0) and upper (d = 1) corner: block coordinate, index
    inside the block, trilinear weight and whether the voxel is on the grid. Every corner combines
    three of these, so the per-corner work is a few products and one block lookup."""
    lower, upper = base, base + 1
    return ((lower >> 3, upper >> 3), (lower & 7, upper & 7), (1.0 - frac, frac),
            ((lower >= 0) & (lower < resolution), (upper >= 0) & (upper < resolution)))


def _sample_chunk(field: TorchField, points: torch.Tensor) -> torch.Tensor:
    """Trilinear interpolation of one chunk. The corners are summed in the numba loop's order
    (c = dx + 2dy + 4dz, weights multiplied x·y·z), so float64 results agree with it bit for bit."""
    base = torch.floor(points)
    frac = points - base
    axes = [_axis_steps(base[:, k].long(), frac[:, k], field.resolution) for k in range(3)]
    (bx, by, bz), (lx, ly, lz), (wx, wy, wz), (ix, iy, iz) = zip(*axes)
    flat = field.values.reshape(field.num_blocks, BLOCK_SIZE ** 3)
    grid = field.grid
    acc = torch.zeros(points.shape[0], dtype=points.dtype, device=points.device)
    for corner in range(8):  # eight passes over the chunk, not a loop over points
        dx, dy, dz = corner & 1, (corner >> 1) & 1, (corner >> 2) & 1
        key = (bx[dx] * grid + by[dy]) * grid + bz[dz]
        block = lookup_keys(field.keys, torch.where(ix[dx] & iy[dy] & iz[dz], key, -1))  # -1: absent or off-grid
        value = torch.full_like(acc, FAR)
        if field.num_blocks:
            local = (lx[dx] * BLOCK_SIZE + ly[dy]) * BLOCK_SIZE + lz[dz]
            value = torch.where(block >= 0, flat[block.clamp(min=0), local].to(points.dtype), value)
        acc = acc + wx[dx] * wy[dy] * wz[dz] * value
    return acc


def sample_field_torch(field: TorchField, points: torch.Tensor, chunk: int = SAMPLE_CHUNK) -> torch.Tensor:
    """Trilinear interpolation of the normalised field at points [P, 3] in voxel coordinates, in the
    points' dtype; corners in absent blocks or off the grid read FAR, as in
    :func:`model.cleanup.sample_field`."""
    points = points.to(field.device)
    if not points.is_floating_point():
        points = points.double()
    parts = [_sample_chunk(field, points[start:start + chunk]) for start in range(0, points.shape[0], chunk)]
    return torch.cat(parts) if parts else points.new_empty(0)


# --- mesh helpers --------------------------------------------------------------------------------


def _face_cross(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(b − a) × (c − a) per face, written out as the numba code does (twice the area-weighted normal)."""
    a, b, c = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    u, v = b - a, c - a
    return torch.stack([u[:, 1] * v[:, 2] - u[:, 2] * v[:, 1],
                        u[:, 2] * v[:, 0] - u[:, 0] * v[:, 2],
                        u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]], dim=1)


def vertex_normals_torch(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals (zero for unused vertices), like
    :func:`model.cleanup.vertex_normals`; index_add keeps it one pass per corner, not per face."""
    cross = _face_cross(vertices, faces)
    out = torch.zeros_like(vertices)
    for k in range(3):
        out.index_add_(0, faces[:, k], cross)
    length = (out[:, 0] * out[:, 0] + out[:, 1] * out[:, 1] + out[:, 2] * out[:, 2]).sqrt()[:, None]
    return torch.where(length > 0, out / torch.where(length > 0, length, torch.ones_like(length)), out)


def _vertex_roots(num_vertices: int, faces: torch.Tensor) -> torch.Tensor:
    """Root of each vertex's component: its smallest vertex index (isolated vertices are their own).

    Hook-and-shortcut (Shiloach–Vishkin style): each face pulls the parents of its corners — and
    their parents' parents, which moves whole trees at once — down to the smallest parent among its
    corners with an order-independent ``amin`` scatter, then every vertex jumps to its grandparent.
    Parents only ever decrease and stay inside the component, so when nothing changes every face's
    corners share one root, the component's minimum. Hooking trees rather than single vertices
    takes a number of rounds logarithmic in practice instead of the mesh's diameter (18 for a
    shuffled strip of 10⁶ vertices, 9 for an ε-surface).
    """
    parent = torch.arange(num_vertices, device=faces.device)
    corners = faces.reshape(-1)
    while True:
        previous = parent
        corner_parent = parent[faces]
        face_min = torch.minimum(torch.minimum(corner_parent[:, 0], corner_parent[:, 1]), corner_parent[:, 2])
        face_min = face_min[:, None].expand(-1, 3).reshape(-1)  # (amin over dim 1 is slow on CPU)
        parent = parent.scatter_reduce(0, corner_parent.reshape(-1), face_min, "amin")
        parent = parent.scatter_reduce(0, corners, face_min, "amin")
        parent = parent[parent]
        if torch.equal(parent, previous):
            return parent


def face_components_torch(num_vertices: int, faces: torch.Tensor) -> tuple[int, torch.Tensor]:
    """Connected components through shared vertices: (count, component id per face).

    Numbered exactly as :func:`model.cleanup.face_components` numbers them — components are ranked by
    their smallest vertex, and unused vertices count as (empty) components — so the two agree as
    arrays, not only as partitions, and the per-component arrays index the same way.
    """
    root = _vertex_roots(num_vertices, faces)
    is_root = root == torch.arange(num_vertices, device=faces.device)
    rank = torch.cumsum(is_root, dim=0) - 1
    return int(is_root.sum()), rank[root[faces[:, 0]]]


def signed_volumes_torch(vertices: torch.Tensor, faces: torch.Tensor, component: torch.Tensor,
                         count: int) -> torch.Tensor:
    """Signed enclosed volume of each component, float64, as :func:`model.cleanup.signed_volumes`:
    the origin is the vertices' mean, which keeps the products small."""
    v = vertices.double()
    v = v - v.mean(dim=0)
    a, b, c = v[faces[:, 0]], v[faces[:, 1]], v[faces[:, 2]]
    triple = (a[:, 0] * (b[:, 1] * c[:, 2] - b[:, 2] * c[:, 1])
              + a[:, 1] * (b[:, 2] * c[:, 0] - b[:, 0] * c[:, 2])
              + a[:, 2] * (b[:, 0] * c[:, 1] - b[:, 1] * c[:, 0])) / 6.0
    return torch.zeros(count, dtype=torch.float64, device=v.device).index_add_(0, component, triple)


def compact_torch(vertices: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop vertices no face uses, keeping the order of the rest (as :func:`model.cleanup.compact`)."""
    used = torch.zeros(vertices.shape[0], dtype=torch.bool, device=vertices.device)
    used[faces.reshape(-1)] = True
    remap = torch.cumsum(used, dim=0) - 1
    return vertices[used], remap[faces]


# --- the steps -----------------------------------------------------------------------------------


def deflate_torch(vertices: torch.Tensor, faces: torch.Tensor, field: TorchField,
                  surface: BlockCandidates | None = None) -> torch.Tensor:
    """Move ε-surface vertices (voxel coordinates) onto the zero level set of the field.

    The two-sided estimate of :func:`model.cleanup.deflate`: from inside t₀ = 2ε·a/(a + b) with
    b = u(p − 2εn), from outside t₀ = ε·a/(c − a) with c = u(p + εn); neither undershoots, so the
    smaller is taken, clamped to [0, 2ε]. The bounds on the denominators are the numba code's.

    ``surface``: the input triangles binned by block (direct mode, from
    ``compute_udf_torch(..., return_candidates=True)``); then, as in the CPU deflate, vertices whose
    closest input point lies along their normal go exactly there and the others' field estimates are
    put onto their own closest input point (:func:`_onto_surface`).
    """
    normals = vertex_normals_torch(vertices, faces)
    eps = ISO_VOXELS
    a = TRUNCATION_VOXELS * sample_field_torch(field, vertices)
    b = TRUNCATION_VOXELS * sample_field_torch(field, vertices - 2 * eps * normals)
    c = TRUNCATION_VOXELS * sample_field_torch(field, vertices + eps * normals)
    from_inside = 2.0 * eps * a / (a + b).clamp(min=1e-9)
    from_outside = eps * a / (c - a).clamp(min=1e-3)
    depth = torch.minimum(from_inside, from_outside).clamp(min=0.0, max=2.0 * eps)
    estimate = vertices - depth[:, None] * normals
    if surface is None or vertices.shape[0] == 0:
        return estimate
    if surface.resolution != field.resolution:
        raise ValueError(f"the surface is binned at N={surface.resolution}, the field is at N={field.resolution}")
    return _onto_surface(vertices, normals, estimate, surface.to(vertices.device))


def _onto_surface(vertices: torch.Tensor, normals: torch.Tensor, estimate: torch.Tensor,
                  surface: BlockCandidates) -> torch.Tensor:
    """The direct-mode step of :func:`model.cleanup.deflate`, with the same rule and guard.

    Where the closest input point of a vertex lies along its normal (cosine above
    :data:`~model.cleanup.EXACT_ALIGNMENT`: flat parts, convex edges and corners, which the
    interpolated field rounds off) and within 2ε, the vertex goes exactly there. Elsewhere (near
    concave creases, where that point jumps to one face and would chamfer the crease) the field's
    estimate comes first and is then put onto its own closest input point. Closest points are
    exact float64 block-list queries (:func:`~model.gpu.surface.closest_points_torch`); the rest of
    the arithmetic is done in the vertices' dtype, as the numpy code does it. A point whose block
    has no candidate triangles (none in practice: ε-surface vertices lie about a voxel from the
    input) keeps the field's estimate.
    """
    closest = closest_points_torch(vertices, surface)[1].to(vertices.dtype)
    to_point = vertices - closest
    length = (to_point * to_point).sum(dim=1).sqrt()
    aligned = (to_point * normals).sum(dim=1) > EXACT_ALIGNMENT * length
    aligned &= length <= 2.0 * ISO_VOXELS  # never further than the band the field estimate trusts
    out = torch.where(aligned[:, None], closest, estimate)
    rest = ~aligned
    out[rest] = closest_points_torch(estimate[rest], surface)[1].to(vertices.dtype)
    return out


class _HostSurface:
    """The one question :func:`model.cleanup.fill_small_holes` asks of the input — the closest
    points of a few hole centres, as host arrays, like :meth:`model.bvh.PrimitiveIndex.closest_points`
    — answered by the block lists on their device (a centre whose block has no candidates stays)."""

    def __init__(self, candidates: BlockCandidates):
        self.candidates = candidates

    def closest_points(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        dist, closest = closest_points_torch(torch.as_tensor(np.asarray(points, dtype=np.float64)), self.candidates)
        return dist.cpu().numpy(), np.full(len(dist), -1, dtype=np.int64), closest.cpu().numpy()


def _single_layer_on_host(vertices: torch.Tensor, before: torch.Tensor, faces: torch.Tensor, slab: torch.Tensor,
                          component: torch.Tensor, surface: BlockCandidates | None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`model.cleanup.cut_slabs` on host copies of its inputs, the result back."""
    v, f = cut_slabs(vertices.double().cpu().numpy(), before.double().cpu().numpy(), faces.cpu().numpy(),
                     slab.cpu().numpy(), component.cpu().numpy(), None if surface is None else _HostSurface(surface))
    return (torch.as_tensor(np.ascontiguousarray(v), device=vertices.device).to(vertices.dtype),
            torch.as_tensor(np.ascontiguousarray(f), device=faces.device))


def _decimate_on_host(vertices: torch.Tensor, faces: torch.Tensor,
                      target_faces: int) -> tuple[torch.Tensor, torch.Tensor]:
    """fast-simplification only takes host arrays: one copy there and the (much smaller) result back."""
    v, f = decimate(vertices.double().cpu().numpy(), faces.cpu().numpy(), target_faces)
    return (torch.as_tensor(np.ascontiguousarray(v), device=vertices.device).to(vertices.dtype),
            torch.as_tensor(np.ascontiguousarray(f), device=faces.device))


def _slab_components(vertices: torch.Tensor, faces: torch.Tensor, component: torch.Tensor,
                      volume_before: torch.Tensor, volume_after: torch.Tensor) -> torch.Tensor:
    """:func:`model.cleanup.slab_components` on the device; the rare components it must check for
    doubled faces (a sheet nearly enclosing a cavity) go to the host, only their faces."""
    slab, check = volume_slabs(volume_before, volume_after)
    if bool(check.any()):
        host_vertices = vertices.double().cpu().numpy()
        for c in torch.nonzero(check).flatten().tolist():
            slab[c] = lies_doubled(host_vertices, faces[component == c].cpu().numpy())
    return slab


def clean_surface_torch(vertices: torch.Tensor, faces: torch.Tensor, field: TorchField, options: CleanupOptions,
                        progress: Callable[[float], None] | None = None,
                        surface: BlockCandidates | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the enabled clean-up steps to an ε-surface on the field's device, taking the decisions
    :func:`model.cleanup.clean_surface` takes, in the same order (outer shell by negative signed
    volume, slabs by :data:`~model.cleanup.SLAB_VOLUME_RATIO`, kept at ε unless the options cut them
    to a single layer, which then starts from the field-only deflate of the slabs).

    ``vertices``: float64 or float32 [V, 3] voxel coordinates; ``faces``: int64 [F, 3]; both are
    moved to the field's device. ``single_layer`` (the cut and the pinhole filling) and
    ``target_faces`` have no torch version: at those steps the mesh is copied to the host once, the
    CPU functions of :mod:`model.cleanup` run, and the result comes back. ``progress`` is called
    between steps, as on the CPU path.

    ``surface``: the exact zero set when it is known (direct mode: the input triangles binned by
    block, ``compute_udf_torch(..., return_candidates=True)``), used by :func:`deflate_torch` and
    the pinhole filling as the CPU clean-up uses its ``surface``; None for a decoded field.
    """
    options.validate()
    report = progress or (lambda fraction: None)
    device = field.device
    vertices, faces = vertices.to(device), faces.to(device=device, dtype=torch.int64)
    has_faces = faces.shape[0] > 0
    if has_faces and (options.outer_shell or options.deflate):
        count, component = face_components_torch(vertices.shape[0], faces)
        volume_before = signed_volumes_torch(vertices, faces, component, count)
        if options.outer_shell:  # inner shells enclose negative volume
            kept = volume_before[component] >= 0.0
            faces, component = faces[kept], component[kept]
            vertices, faces = compact_torch(vertices, faces)  # the dropped shells' vertices need no more work
            has_faces = faces.shape[0] > 0
    report(0.2)
    before = vertices
    if options.deflate and has_faces:
        vertices = deflate_torch(vertices, faces, field, surface)
        # a slab's volume (its sheet's area times 2ε) vanishes once deflated; a solid keeps its own
        volume_after = signed_volumes_torch(vertices, faces, component, count)
        slab = _slab_components(vertices, faces, component, volume_before, volume_after)[component]
        if (surface is not None or not options.cuts_slabs) and bool(slab.any()):
            in_slab = torch.zeros(vertices.shape[0], dtype=torch.bool, device=device)
            in_slab[faces[slab].reshape(-1)] = True
            if not options.cuts_slabs:  # keep slabs closed at ε rather than doubled
                vertices = torch.where(in_slab[:, None], before, vertices)
            else:  # the single-layer cut is tuned on the field's estimate (see the CPU clean-up)
                vertices = torch.where(in_slab[:, None], deflate_torch(before, faces[slab], field), vertices)
    report(0.5)
    if options.cuts_slabs and has_faces and bool(slab.any()):  # closed solids never leave the device
        vertices, faces = _single_layer_on_host(vertices, before, faces, slab, component, surface)
    if faces.shape[0]:
        vertices, faces = compact_torch(vertices, faces)
    report(0.8)
    if options.target_faces:
        vertices, faces = _decimate_on_host(vertices, faces, int(options.target_faces))
    return vertices, faces


__all__ = [
    "SAMPLE_CHUNK",
    "sample_field_torch",
    "vertex_normals_torch",
    "face_components_torch",
    "signed_volumes_torch",
    "compact_torch",
    "deflate_torch",
    "clean_surface_torch",
]
