"""One remesh, whichever engine runs it::

    vae:     mesh → UDF → UBlocks → encode → decode → Pad-Average → extraction → clean-up → mesh
    direct:  mesh → (UDF, only when a clean-up step is off) → extraction → clean-up → mesh

The one driver that the CLI, the server, the benchmarks and the tests share, over either engine
(:mod:`model.engine`: numba on the CPU, torch on a device), so that every caller runs exactly the
same stages, reports progress the same way and can be cancelled between any two of them. The
engine supplies the kernels up to Pad-Average; the extraction and clean-up below run on the host
for both (:func:`extract_surface`).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .autoencode import Latents, ModeUnavailable, decode_latents, encode_blocks, load_vae
from .bvh import PrimitiveIndex, SurfaceIndex
from .cleanup import DECODED_SPECK_AREA, CleanupOptions, clean_surface, decimate, drop_specks
from .contour import InputTopology, distinct_faces, dual_contour, tidy_contour
from .creases import flip_along_creases
from .engine import DeferredEngine, Engine, NumbaEngine, check_engine, engine_for
from .extract import marching_cubes_sparse
from .grid import (CHUNK_BLOCKS, TRUNCATION_VOXELS, SparseField, check_resolution, check_voxel_size, iso_level, resolution_for_voxel_size,
                   unit_margin, unit_to_voxel, voxel_to_unit)
from .mesh import Mesh, MeshError, Normalization, bounding_box, fit_unit_cube, used_vertices, validate_arrays
from .quads import pair_quads
from .refine import RefineOptions, refine_latents
from .interior import InteriorOptions, inner_surfaces
from .shell import Outside, ShellOptions, flood_outside, outer_shell_field
from .geometry import compact
from .stages import Cancelled, ProgressCallback, Stages
from .ublocks import iter_chunks, pad_average
from .udf_contour import FieldContourOptions, field_contour, field_near
from .zero_set import Planes, is_clean, sampled_noise, settle_and_measure, settled_points, zero_set_planes

MODES = ("direct", "vae")
log = logging.getLogger("log3d.pipeline")


FIELD_EXTRACTIONS = ("shell", "dual")

SLAB_REACH = 3.0
"""Voxels: a decoded slab is re-contoured from the field within this distance of its ε-surface
vertices — a voxel away from its zero set, which the dual contour reads to 2.5 voxels of. An ε-surface
nearer its zero set (an exact field's, :meth:`model.shell.ShellOptions.for_clean_field`) reaches as
much farther: with 3 voxels from 0.6 a square sheet's rim came back 0.09 voxel short, 0.2 at its corners."""
POLYGONS = ("quads", "triangles")

@dataclass
class RemeshOptions:
    """What to do with a mesh. ``direct`` skips the network: the surface comes from the exact zero
    set (the input contoured on the N³ grid, or the exact UDF's ε-surface when a clean-up step is
    off); ``vae`` round-trips the UBlocks through the LoG-VAE and Pad-Averages the decoded blocks.

    ``engine``: ``numba`` runs the stages up to Pad-Average on the CPU (the network on ``device``);
    ``torch`` runs them on ``device`` (:mod:`model.gpu.engine`); ``auto`` picks torch when
    ``device`` resolves to CUDA, numba otherwise (:func:`model.engine.engine_for`).

    ``field_extraction``: how a field without its input (a decoded one: VAE mode, `log3d decode`)
    becomes a mesh with the default clean-up: ``shell`` (the outside flood, the ε-surface and its
    clean-up, :mod:`model.shell`) or ``dual`` (the zero set dual-contoured from the unsigned field,
    :mod:`model.udf_contour`: one layer per sheet, cavities and separate bodies kept; experimental,
    issue 33, ``bench/bench_exact_field.py``).

    ``polygons``: ``quads`` keeps direct mode's contour quads where they are flat
    (:mod:`model.quads`; the result's ``num_quads``), ``triangles`` splits every one. VAE mode's
    marching cubes and a decimated result are triangles either way.

    ``voxel_size``: the voxel's edge in the mesh's own units; when set, N follows from it and the
    mesh's extent (:func:`grid_for`) and ``resolution`` is not used.

    ``refine_steps`` (VAE mode): after encoding, the latents are fitted to the shape's own UBlocks
    through the frozen decoder for this many Adam steps (:mod:`model.refine`; 0: the encoder's
    latents as they are). Each step costs a decode and its backward pass."""

    resolution: int = 256
    mode: str = "direct"
    chunk_blocks: int = CHUNK_BLOCKS
    device: str = "auto"
    checkpoint: str | None = None
    cleanup: CleanupOptions = field(default_factory=CleanupOptions)
    engine: str = "auto"
    field_extraction: str = "shell"
    polygons: str = "quads"
    voxel_size: float | None = None
    refine_steps: int = 0

    def validate(self) -> "RemeshOptions":
        if self.voxel_size is None:
            check_resolution(self.resolution)
        else:
            check_voxel_size(self.voxel_size)
        if self.polygons not in POLYGONS:
            raise ValueError(f"unknown polygons '{self.polygons}' (choose from: {', '.join(POLYGONS)})")
        self.cleanup.validate()
        if self.field_extraction not in FIELD_EXTRACTIONS:
            raise ValueError(f"unknown field extraction '{self.field_extraction}' (choose from: {', '.join(FIELD_EXTRACTIONS)})")
        if self.mode not in MODES:
            raise ValueError(f"unknown mode '{self.mode}' (choose from: {', '.join(MODES)})")
        check_engine(self.engine)
        if self.chunk_blocks <= 0:
            raise ValueError(f"chunk_blocks must be positive, got {self.chunk_blocks}")
        RefineOptions(steps=self.refine_steps).validate()
        return self


@dataclass
class RemeshResult:
    mesh: Mesh
    resolution: int = 0  # the N the surface was made at (from the voxel size, when one was given)
    timings: dict[str, float] = field(default_factory=dict)
    num_blocks: int = 0  # active UBlocks; 0 where no field was made (direct mode, default clean-up)
    peak_gpu_bytes: int | None = None  # peak allocated CUDA memory of the run (torch engine on CUDA)
    warnings: list[str] = field(default_factory=list)  # what the run did other than asked (a fallback)


def grid_for(mesh: Mesh, resolution: int, voxel_size: float | None = None) -> tuple[int, Normalization]:
    """The grid resolution N and the transform into the unit cube for ``mesh``: its longest side
    across N voxels less the margin (:func:`~model.grid.unit_margin`), or, with ``voxel_size`` (in the
    mesh's units), voxels of exactly that size and the smallest N that holds the mesh
    (:func:`~model.grid.resolution_for_voxel_size`): every object remeshed with one voxel size
    comes back at one density, whatever its size."""
    used = used_vertices(mesh)
    if voxel_size is None:
        n = check_resolution(resolution)
        return n, fit_unit_cube(used, unit_margin(n))
    center, extent = bounding_box(used)
    n = resolution_for_voxel_size(extent, voxel_size)
    return n, Normalization(center=center, scale=1.0 / (n * float(voxel_size)))


def mesh_to_field(mesh: Mesh, resolution: int, stages: Stages | None = None,
                  engine: Engine | None = None, voxel_size: float | None = None) -> tuple[SparseField, Normalization]:
    """Normalise a mesh into the unit cube and compute its narrow-band UDF blocks (numpy, or the
    engine's arrays); ``voxel_size``: see :func:`grid_for` (N then follows from it).

    Returns the field and the :class:`~model.mesh.Normalization` that maps results back.
    """
    stages = stages or Stages()
    engine = engine or NumbaEngine()
    n, normalization = grid_for(mesh, resolution, voxel_size)
    unit_vertices = normalization.to_unit(mesh.vertices)
    field_ = stages.run("udf", lambda report: engine.udf(unit_vertices, mesh.faces, n, report))
    return field_, normalization


def input_surface(mesh: Mesh, normalization: Normalization, resolution: int) -> SurfaceIndex:
    """The input's triangles in voxel coordinates: the exact zero set of the direct-mode field,
    for the clean-up's deflation (zero-area triangles carry no surface and are left out)."""
    return SurfaceIndex(unit_to_voxel(normalization.to_unit(mesh.vertices), resolution), mesh.faces)


def input_surface_of(exact: Mesh) -> SurfaceIndex:
    """:func:`input_surface` of a mesh already in voxel coordinates."""
    return SurfaceIndex(exact.vertices, exact.faces)


def _slab_contour(field_: SparseField, level: float, contour: FieldContourOptions
                  ) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """What replaces a decoded field's slabs (open sheets, walls thinner than the flood): the zero
    set of the field near their ε-surface vertices (at ``level``), dual-contoured
    (:mod:`model.udf_contour`, with ``contour``) — one layer with its own rim, where the single-layer
    cut tore it."""
    reach = SLAB_REACH + (iso_level() - level) * TRUNCATION_VOXELS
    return lambda points: field_contour(field_near(field_, points, reach), contour)


def contour_options_for(noise: float | None) -> FieldContourOptions:
    """How a field with this noise (:func:`model.zero_set.sampled_noise`; None: not measured) is
    dual-contoured: an exact field's rims and medial axes told apart, a decoded field's not; an exact
    field's holes judged from their centroids settled onto the zero set, up to 96 voxels round and
    1.6 voxels off (:func:`model.holes.close_false_holes`: on Suzanne at N=512 the four holes where
    its eyes cross its head close, boundary loops 10 → 6 against the input's 4, CD +6 %; no other
    shared mesh's loops change at 256 or 512, ``bench/results/holes_256.md``, ``holes_512.md``)."""
    if noise is None or not is_clean(noise):
        return FieldContourOptions()
    return dataclasses.replace(FieldContourOptions.for_clean_field(), hole_perimeter=96.0, hole_distance=1.6,
                               hole_settle=settled_centres)


def settled_centres(points: np.ndarray, field_: SparseField) -> np.ndarray:
    """``points`` (voxel coordinates) moved onto the zero set of ``field_``, each on its own."""
    return settled_points(points, field_)[0]


def _extract_field(field_: SparseField, options: RemeshOptions, stages: Stages,
                    surface: PrimitiveIndex | None) -> tuple[np.ndarray, np.ndarray]:
    """The field's ε-surface and its clean-up (voxel coordinates). A decoded field (``surface``
    None) is first flooded from outside (:mod:`model.shell`), so that the shell stays closed where
    the network's zero set rises above ε; an exact one (its planes agree: :func:`sampled_noise`) is
    flooded at a smaller ε, into gaps the decoded flood caps."""
    cleanup = dataclasses.replace(options.cleanup, target_faces=0)  # decimated once, at the end
    level = iso_level()
    planes: Planes | None = None
    noise: float | None = None
    flooded: Outside | None = None
    if surface is None and cleanup.deflate and cleanup.outer_shell:
        def flood(report: Callable[[float], None]) -> tuple:
            planes = zero_set_planes(field_)  # read by the noise measure, the settling and the crease step
            noise = sampled_noise(field_, planes)
            if is_clean(noise):  # an exact field: ε just over half a voxel, the flood into every gap it shows
                shell = ShellOptions.for_clean_field(cleanup.fill_gaps)
            else:
                shell = ShellOptions() if cleanup.fill_gaps else ShellOptions(descent_rise=None)
            flooded = flood_outside(field_, shell.iso, shell)
            return planes, noise, shell.iso, flooded, outer_shell_field(field_, shell.iso, shell, flooded)

        planes, noise, level, flooded, contoured = stages.run("outer_shell", flood)
    else:
        contoured = field_
    vertices, faces = stages.run("extract", lambda report: marching_cubes_sparse(contoured, level, report))
    if faces.shape[0] == 0 or not cleanup.active:
        return vertices, faces
    contour = contour_options_for(noise)
    contour_slabs = _slab_contour(field_, level, contour) if surface is None and cleanup.contour_slabs else None
    vertices, faces = stages.run("cleanup", lambda report: clean_surface(vertices, faces, field_, cleanup, report, surface,
                                                                         contour_slabs, level * TRUNCATION_VOXELS))
    if flooded is not None and cleanup.full:  # the cavities the outer shell's flood could not reach
        inner = InteriorOptions(open_sheets=noise is not None and is_clean(noise), contour=contour)
        inner_vertices, inner_faces = stages.run("interior", lambda report: inner_surfaces(field_, flooded, inner))
        faces = np.concatenate([faces, inner_faces + len(vertices)])
        vertices = np.concatenate([vertices, inner_vertices])
    if surface is None and cleanup.full and cleanup.settle and len(faces):
        def settle(report: Callable[[float], None]) -> tuple:
            known = planes if planes is not None else zero_set_planes(field_)
            return (known, *settle_and_measure(vertices, faces, field_, planes=known, noise=noise))

        planes, vertices, noise = stages.run("settle", settle)
        if cleanup.creases and is_clean(noise):  # a decoded field's planes name its noise, not its creases
            faces = stages.run("creases", lambda report: flip_along_creases(vertices, faces, field_, planes=planes))
    del planes
    return vertices, faces


def _extract_direct(exact: Mesh, options: RemeshOptions, stages: Stages) -> Mesh:
    """Direct mode, where the zero set is the input itself (``exact``, voxel coordinates): it is
    dual-contoured on the N³ grid (:mod:`model.contour`: closed pieces stay closed, sheets keep their
    own boundaries, junctions stay joined; every vertex on the input) and tidied; the contour's
    quads are joined again where they are flat (:mod:`model.quads`) unless triangles are asked for."""
    n = options.resolution

    def contour(report: Callable[[float], None]) -> tuple[InputTopology, tuple[np.ndarray, ...]]:
        faces = distinct_faces(exact.vertices, exact.faces)  # a face twice would cancel itself out
        topology = InputTopology.of(exact.vertices, faces)
        report(0.2)
        return topology, dual_contour(exact.vertices, faces, n, topology)

    topology, (out_vertices, out_faces, source, quad_id) = stages.run("extract", contour)
    if len(out_faces) == 0:  # both sides of every part cross the same grid edges
        raise MeshError(f"the surface at N={n} is empty: every part of the mesh is thinner than a voxel "
                        f"(1/{n} of its longest side); use a higher resolution")

    def tidy(report: Callable[[float], None]) -> Mesh:
        vertices, faces, kept = tidy_contour(out_vertices, out_faces, source, topology, report)
        if options.polygons != "quads" or len(faces) == 0:
            return Mesh(vertices, faces)
        paired, num_quads = pair_quads(vertices, faces, np.where(kept >= 0, quad_id[kept], -1))  # a gap fill (−1) pairs with none
        return Mesh(vertices, paired, num_quads)

    return stages.run("cleanup", tidy)


def _extract_dual(field_: SparseField, cleanup: CleanupOptions, stages: Stages) -> Mesh:
    """A field without its input, dual-contoured at its zero set (:mod:`model.udf_contour`), then
    rid of the specks a decoded field leaves and settled onto the zero set (:mod:`model.zero_set`)."""
    def extract(report: Callable[[float], None]) -> tuple:
        planes = zero_set_planes(field_)  # read by the noise measure and the settling
        return planes, *field_contour(field_, contour_options_for(sampled_noise(field_, planes)))

    planes, vertices, faces = stages.run("extract", extract)
    if len(faces):
        faces = stages.run("cleanup", lambda report: drop_specks(vertices, faces, DECODED_SPECK_AREA))
        vertices, faces = compact(vertices, faces)
    if len(faces) and cleanup.settle:
        vertices = stages.run("settle", lambda report: settle_and_measure(vertices, faces, field_, planes=planes)[0])
    return Mesh(vertices, faces)


def _contours(exact: Mesh | None, options: RemeshOptions) -> bool:
    """Whether the surface is the input itself contoured on the grid (:func:`_extract_direct`): it is
    known (direct mode) and every clean-up step is on. No field is read then, so none is made."""
    return exact is not None and options.cleanup.full


def extract_surface(field_: SparseField | None, exact: Mesh | None, options: RemeshOptions,
                    stages: Stages, contour: bool = True) -> Mesh:
    """The surface in voxel coordinates, decimated if asked, on the host whichever engine made the
    field: the input contoured when it is known (``exact``, voxel coordinates) and every clean-up
    step is on (:func:`_extract_direct`: the field's ε-surface of an open sheet is a slab that no cut
    splits cleanly; quads where flat), otherwise the field's ε-surface with the steps that are on (a
    decoded field, ``--raw``, ``--keep-slabs``; triangles: marching cubes makes no quads).
    Decimation returns triangles: quadric decimation collapses the edges of triangles.
    ``contour=False``: the field's ε-surface even where the input could be contoured (the fallback
    of direct mode, :func:`_remesh_direct`)."""
    if contour and _contours(exact, options):
        assert exact is not None
        surface = _extract_direct(exact, options, stages)
    elif exact is None and options.field_extraction == "dual" and options.cleanup.full:
        if field_ is None:
            raise ValueError("the field's zero set needs the field")
        surface = _extract_dual(field_, options.cleanup, stages)
    else:
        if field_ is None:
            raise ValueError("the field's ε-surface needs the field")
        index = input_surface_of(exact) if exact is not None and options.cleanup.deflate else None
        surface = Mesh(*_extract_field(field_, options, stages, index))
    if surface.faces.shape[0] == 0:
        raise MeshError(f"the surface at N={options.resolution} is empty")
    if options.cleanup.target_faces:
        return Mesh(*stages.run("decimate", lambda report: decimate(surface.vertices, surface.faces,
                                                                    int(options.cleanup.target_faces))))
    return surface


def network_for(options: RemeshOptions, vae: object | None = None) -> object:
    """The LoG-VAE a vae-mode run uses: the one the caller holds (a server keeps one loaded), else
    ``options.checkpoint`` or the shipped weights on ``options.device``."""
    if vae is not None:
        return vae
    return load_vae(options.checkpoint, options.device)


def encode_mesh(mesh: Mesh, options: RemeshOptions | None = None, progress: ProgressCallback | None = None,
                should_cancel: Callable[[], bool] | None = None, vae: object | None = None,
                stages: Stages | None = None, engine: Engine | None = None) -> tuple[Latents, Normalization]:
    """A mesh as LoG-VAE latents [L, 16] on its block coordinates, plus the transform back to its frame."""
    options = (options or RemeshOptions(mode="vae")).validate()
    engine = engine or engine_for(options.engine, options.device)
    network = network_for(options, vae)
    mesh = validate_arrays(mesh.vertices, mesh.faces)
    stages = stages or Stages(progress, should_cancel, engine.sync)
    with engine.session():
        field_, normalization = mesh_to_field(mesh, options.resolution, stages, engine, options.voxel_size)
        ublocks = stages.run("ublocks", lambda report: engine.all_ublocks(field_, options.chunk_blocks))
        del field_
        if ublocks.num_blocks == 0:
            raise MeshError("the mesh produced no active UBlocks")
        latents = stages.run("encode", lambda report: encode_blocks(network, ublocks))
        if options.refine_steps:
            refine = RefineOptions(steps=options.refine_steps)
            latents = stages.run("refine", lambda report: refine_latents(network, ublocks, latents, refine, report))
    return latents, normalization


def decode_to_mesh(latents: Latents, normalization: Normalization, options: RemeshOptions | None = None,
                   progress: ProgressCallback | None = None, should_cancel: Callable[[], bool] | None = None,
                   vae: object | None = None, stages: Stages | None = None, engine: Engine | None = None) -> Mesh:
    """Decode latents to UBlocks, Pad-Average them and extract the mesh in the original frame."""
    options = (options or RemeshOptions(mode="vae")).validate()
    engine = engine or engine_for(options.engine, options.device)
    network = network_for(options, vae)
    latents.validate()
    n = latents.resolution
    if n != options.resolution:
        options = dataclasses.replace(options, resolution=n)
    stages = stages or Stages(progress, should_cancel, engine.sync)

    with engine.session():
        decoded = stages.run("decode", lambda report: engine.adopt(n, decode_latents(network, latents), latents.coords))
        chunks = iter_chunks(decoded, options.chunk_blocks)
        averaged = stages.run("pad_average", lambda report: pad_average(chunks, n, decoded.coords, report, engine.assembler))
        del decoded, chunks
        host_field = averaged.to_host()
        del averaged
    surface = extract_surface(host_field, None, options, stages)
    return Mesh(normalization.from_unit(voxel_to_unit(surface.vertices, n)), surface.faces, surface.num_quads)


def _remesh_direct(mesh: Mesh, options: RemeshOptions, stages: Stages, engine: Engine,
                   n: int, normalization: Normalization) -> tuple[Mesh, int, list[str]]:
    """Direct mode: the exact field is never encoded, so Pad-Average of its padded blocks would give
    it back unchanged (up to float rounding) and is not run. With every clean-up step on the surface
    is the input contoured on the grid, which reads no field, so none is made — unless the contour
    comes back empty (every part thinner than a voxel cancels out by parity): then the exact field's
    ε-surface with the same clean-up is used instead, which keeps such parts as one layer, and a
    warning says so. Returns the mesh, the number of active UBlocks (0 where no field was made) and
    the warnings. ``n``, ``normalization``: the mesh's grid (:func:`grid_for`)."""
    options = dataclasses.replace(options, resolution=n)
    unit_vertices = normalization.to_unit(mesh.vertices)
    exact = Mesh(vertices=unit_to_voxel(unit_vertices, n), faces=mesh.faces)

    def exact_field() -> tuple[SparseField, int]:
        with engine.session():
            field_ = stages.run("udf", lambda report: engine.udf(unit_vertices, mesh.faces, n, report))
            count = int(engine.active_coords(field_).shape[0])
            if count == 0:
                raise MeshError("the mesh produced no active UBlocks")
            return field_.to_host(), count

    host_field, num_blocks, warnings = None, 0, []
    if not _contours(exact, options):
        host_field, num_blocks = exact_field()
    try:
        surface = extract_surface(host_field, exact, options, stages)
    except MeshError:
        if not _contours(exact, options):
            raise
        warnings.append(f"the contour at N={n} is empty (every part of the mesh is thinner than a voxel, so its two "
                        "sides cancel): the exact field's ε-surface was used instead, thin parts as one layer; a "
                        "higher resolution contours them")
        log.warning(warnings[-1])
        host_field, num_blocks = exact_field()
        surface = extract_surface(host_field, exact, options, stages, contour=False)
    return (Mesh(normalization.from_unit(voxel_to_unit(surface.vertices, n)), surface.faces, surface.num_quads),
            num_blocks, warnings)


def remesh(mesh: Mesh, options: RemeshOptions | None = None, progress: ProgressCallback | None = None,
           should_cancel: Callable[[], bool] | None = None, vae: object | None = None,
           engine: Engine | None = None) -> RemeshResult:
    """Remesh through the LoG3D representation at N³ and return the surface in the input's frame.

    ``vae``: an already loaded LoG-VAE (the server keeps one warm); otherwise ``options.checkpoint``
    (or the shipped weights) is loaded for ``mode="vae"``. ``engine``: the kernels to run on; by
    default the one ``options.engine`` and ``options.device`` pick (:func:`model.engine.engine_for`).
    """
    options = (options or RemeshOptions()).validate()
    if engine is None:  # direct mode decides at its first kernel: contouring alone needs none
        engine = engine_for(options.engine, options.device) if options.mode == "vae" else DeferredEngine(options.engine, options.device)
    network = network_for(options, vae) if options.mode == "vae" else None  # fail before any work
    mesh = validate_arrays(mesh.vertices, mesh.faces)
    stages = Stages(progress, should_cancel, engine.sync)
    engine.reset_peak()
    if options.mode == "vae":
        latents, normalization = encode_mesh(mesh, options, vae=network, stages=stages, engine=engine)
        out = decode_to_mesh(latents, normalization, options, vae=network, stages=stages, engine=engine)
        resolution, num_blocks = latents.resolution, int(latents.coords.shape[0])
        warnings: list[str] = []
    else:
        resolution, normalization = grid_for(mesh, options.resolution, options.voxel_size)
        out, num_blocks, warnings = _remesh_direct(mesh, options, stages, engine, resolution, normalization)
    return RemeshResult(mesh=out, resolution=resolution, timings=stages.timings, num_blocks=num_blocks,
                        peak_gpu_bytes=engine.peak_bytes(), warnings=warnings)


__all__ = ["Cancelled", "MODES", "POLYGONS", "ModeUnavailable", "RemeshOptions", "RemeshResult", "decode_to_mesh", "encode_mesh",
           "extract_surface", "grid_for", "input_surface", "input_surface_of", "mesh_to_field", "network_for", "remesh"]
