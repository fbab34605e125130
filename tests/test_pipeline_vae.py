"""The VAE leg of the pipeline: encode → latents → decode → Pad-Average → mesh, and its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from backend.cli import main
from model.autoencode import Latents, decode_blocks, load_vae
from model.ublocks import iter_chunks
from model.cleanup import CleanupOptions
from model.mesh import fit_unit_cube
from model.pipeline import ModeUnavailable, RemeshOptions, decode_to_mesh, encode_mesh, remesh
from model.udf import compute_udf
from model.ublocks import active_indices
from model.grid import unit_margin


def test_encode_gives_one_latent_per_active_block(sphere, tiny_checkpoint):
    opts = RemeshOptions(resolution=64, mode="vae", checkpoint=str(tiny_checkpoint))
    latents, norm = encode_mesh(sphere, opts)
    unit = fit_unit_cube(sphere.vertices, unit_margin(64)).to_unit(sphere.vertices)
    field = compute_udf(unit, sphere.faces, 64)
    np.testing.assert_array_equal(latents.coords, field.coords[active_indices(field)])
    assert latents.latents.shape == (len(latents.coords), 16) and latents.latents.dtype == np.float32
    np.testing.assert_allclose(norm.center, fit_unit_cube(sphere.vertices, unit_margin(64)).center)

    model = load_vae(tiny_checkpoint, "cpu")
    chunks = list(iter_chunks(decode_blocks(model, latents), 50))
    assert len(chunks) == -(-len(latents.coords) // 50)
    blocks = np.concatenate([c.blocks for c in chunks])
    assert blocks.shape == (len(latents.coords), 12, 12, 12)
    assert blocks.min() >= 0.0 and blocks.max() <= 1.0


def test_remesh_vae_runs_every_stage(sphere, tiny_checkpoint):
    """An untrained network gives a poor surface, but the stages must all run, in order."""
    model = load_vae(tiny_checkpoint, "cpu")
    seen: list[str] = []
    opts = RemeshOptions(resolution=64, mode="vae", cleanup=CleanupOptions.none())
    try:
        result = remesh(sphere, opts, progress=lambda s, f: seen.append(s), vae=model)
        assert result.mesh.num_faces > 0
    except ValueError as exc:  # an untrained decoder may place no voxel below ε
        assert "empty" in str(exc)
    assert list(dict.fromkeys(seen)) == ["udf", "ublocks", "encode", "decode", "pad_average", "extract"]


def test_vae_errors(sphere, tmp_path, tiny_checkpoint):
    with pytest.raises(ModeUnavailable, match="checkpoint not found"):
        remesh(sphere, RemeshOptions(resolution=64, mode="vae", checkpoint=str(tmp_path / "none.safetensors")))
    bad = Latents(64, np.full((2, 16), np.nan, np.float32), np.array([[0, 0, 0], [1, 1, 1]], np.int32))
    with pytest.raises(ValueError, match="NaN"):
        decode_to_mesh(bad, fit_unit_cube(sphere.vertices), RemeshOptions(resolution=64, mode="vae", checkpoint=str(tiny_checkpoint)))
    dup = Latents(64, np.zeros((2, 16), np.float32), np.array([[0, 0, 0], [0, 0, 0]], np.int32))
    with pytest.raises(ValueError, match="duplicates"):
        decode_to_mesh(dup, fit_unit_cube(sphere.vertices), RemeshOptions(resolution=64, mode="vae", checkpoint=str(tiny_checkpoint)))


def test_info_command(capsys, tiny_checkpoint):
    assert main(["info", "--checkpoint", str(tiny_checkpoint), "--device", "cpu", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["preset"] == "tiny" and info["parameters"] > 0 and info["device"] == "cpu"
    assert "attention_backend" in info


class PerfectAutoencoder:
    """A stand-in LoG-VAE that decodes exactly what it encoded (keyed by block coordinates): the
    VAE leg with zero reconstruction error, so the clean-up of VAE output can be checked exactly."""

    device = torch.device("cpu")
    latent_dim = 16

    def __init__(self) -> None:
        self.blocks: dict[tuple[int, int, int], torch.Tensor] = {}

    def encode(self, blocks, coords):
        for b, c in zip(blocks, coords.tolist()):
            self.blocks[tuple(c)] = b.clone()
        return torch.zeros(len(coords), self.latent_dim), torch.zeros(len(coords), self.latent_dim)

    def decode(self, latents, coords):
        return torch.stack([self.blocks[tuple(c)] for c in coords.tolist()])


def test_default_cleanup_works_on_vae_output():
    """Deflate, outer shell and single layer act on a decoded field too (no input mesh to snap to)."""
    import trimesh

    from tests.conftest import as_mesh

    sphere = as_mesh(trimesh.creation.icosphere(subdivisions=4, radius=1.0))
    out = remesh(sphere, RemeshOptions(resolution=64, mode="vae"), vae=PerfectAutoencoder()).mesh
    tm = trimesh.Trimesh(out.vertices, out.faces, process=False)
    voxel = 2.0 / (64 - 10)
    assert len(tm.split(only_watertight=False)) == 1 and tm.is_watertight and tm.volume > 0
    assert abs((np.linalg.norm(out.vertices, axis=1) - 1.0).mean()) < 0.1 * voxel  # deflated, not at ε
    square = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], [[0, 1, 2], [0, 2, 3]]).subdivide().subdivide()
    sheet = remesh(as_mesh(square), RemeshOptions(resolution=64, mode="vae"), vae=PerfectAutoencoder()).mesh
    sheet_tm = trimesh.Trimesh(sheet.vertices, sheet.faces, process=False)
    assert abs(sheet_tm.area - 1.0) < 0.03  # one open layer, not a slab (~2)
    assert len(trimesh.grouping.group_rows(sheet_tm.edges_sorted, require_count=1)) > 0  # it has a boundary
