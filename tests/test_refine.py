"""Latent refinement (model.refine): one shape's latents fitted to its own UBlocks through the frozen
decoder, with the shipped weights on the bundled sample at N=64."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model.autoencode import Latents, decode_blocks, encode_blocks, load_vae
from model.mesh import load_mesh
from model.objective import band_error, vae_loss
from model.pipeline import RemeshOptions, mesh_to_field, remesh
from model.refine import MAX_STEPS, RefineOptions, refine_latents
from model.ublocks import extract_ublocks

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "spot.obj"
N = 64


@pytest.fixture(scope="module")
def shape():
    network = load_vae(None, "cpu")
    field, _ = mesh_to_field(load_mesh(SAMPLE), N)
    ublocks = extract_ublocks(field)
    return network, ublocks, encode_blocks(network, ublocks)


def objective(network, ublocks, latents: Latents) -> float:
    with torch.no_grad():
        z = torch.as_tensor(latents.latents)
        recon = network.decode(z, torch.as_tensor(latents.coords.astype(np.int64)))
        loss, _, _ = vae_loss(recon, torch.as_tensor(ublocks.blocks).float(), z, torch.zeros_like(z),
                              **RefineOptions().objective())
    return float(loss)


def test_the_refinement_minimises_the_shipped_recipes_objective():
    """model.refine cannot import the trainer (backend), so it writes the `small` recipe's surface
    objective out; this keeps the two equal."""
    from backend.train import RECIPES

    recipe, mine = RECIPES["small"], RefineOptions().objective()
    assert mine["objective"] == recipe["objective"] == "surface"
    for key in ("surface_weight", "surface_band", "surface_delta", "slope_weight"):
        assert mine[key] == recipe[key], key


def test_refined_latents_fit_their_blocks_better_and_the_weights_stay(shape):
    network, ublocks, latents = shape
    weights = {k: v.clone() for k, v in network.state_dict().items()}
    flags = [p.requires_grad for p in network.parameters()]
    refined = refine_latents(network, ublocks, latents, RefineOptions(steps=6))
    assert refined.latents.shape == latents.latents.shape and refined.latents.dtype == np.float32
    assert np.array_equal(refined.coords, latents.coords) and refined.resolution == latents.resolution
    assert np.isfinite(refined.latents).all() and not np.array_equal(refined.latents, latents.latents)
    before, after = objective(network, ublocks, latents), objective(network, ublocks, refined)
    assert after < 0.97 * before, (before, after)
    truth = torch.as_tensor(ublocks.blocks)
    error_before = band_error(torch.as_tensor(decode_blocks(network, latents).blocks), truth)
    error_after = band_error(torch.as_tensor(decode_blocks(network, refined).blocks), truth)
    assert error_after < error_before, (error_before, error_after)
    assert all(torch.equal(v, network.state_dict()[k]) for k, v in weights.items())
    assert [p.requires_grad for p in network.parameters()] == flags
    assert not network.config.grad_checkpoint


def test_a_non_finite_loss_ends_the_refinement_with_the_best_latents_so_far(shape, monkeypatch):
    network, ublocks, latents = shape
    decode = network.decode
    calls = []

    def broken(z, coords, ctx=None):
        calls.append(1)
        out = decode(z, coords, ctx)
        return out if len(calls) == 1 else out * float("nan")

    monkeypatch.setattr(network, "decode", broken)
    refined = refine_latents(network, ublocks, latents, RefineOptions(steps=5))
    assert len(calls) == 2  # the first loss, then the broken one: no third pass
    assert np.array_equal(refined.latents, latents.latents)  # the only finite loss was the encoder's


@pytest.mark.parametrize("steps", [-1, MAX_STEPS + 1, 2.5])
def test_refinement_steps_are_checked(steps):
    with pytest.raises(ValueError, match="refinement steps"):
        RemeshOptions(mode="vae", refine_steps=steps).validate()


def test_vae_mode_refines_when_asked(shape):
    network, _, _ = shape
    result = remesh(load_mesh(SAMPLE), RemeshOptions(resolution=N, mode="vae", refine_steps=2), vae=network)
    assert "refine" in result.timings and len(result.mesh.faces) > 0
    plain = remesh(load_mesh(SAMPLE), RemeshOptions(resolution=N, mode="vae"), vae=network)
    assert "refine" not in plain.timings
