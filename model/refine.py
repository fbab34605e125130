"""Latent refinement: one shape's latents fitted to its own UBlocks through the frozen decoder.

Why: the encoder is amortised — one pass has to serve every shape — and leaves a gap the decoder
could close. VAE mode knows the field it encodes (the input's UBlocks), so it can close part of that
gap for the one shape at hand: the latents [L, 16] are optimised (Adam) to minimise the trainer's own
objective (:func:`model.objective.vae_loss`, the shipped recipe's surface loss) between the decoded
blocks and the true ones, the network's weights untouched. The latents stay [L, 16] on the same
blocks, so a refined latent file decodes like any other (`log3d decode`, the add-on's import).

Measured (`bench/bench_refine.py`, shipped weights, N=128, CD ×1e3 after 0 / 10 / 25 / 50 steps): the
cow 2.38 / 2.07 / 1.85 / 1.71, spot 1.18 / 0.90 / 0.80 / 0.75, fandisk 1.29 / 0.98 / 0.87 / 0.79, the
band error and F1 better with them (`bench/results/refine_128.md`). Each step is a decode and its
backward pass: 3–5 s on a 2-core CPU at N=128 and about four times that at 256, a small fraction of
a second on a workstation GPU — so it is off by default (``RemeshOptions.refine_steps``;
``--refine-steps`` on the command line, ``refine_steps`` on the wire).

Never worse than the encoder's latents by the objective: the latents with the lowest loss seen
are kept (the encoder's own included), and a non-finite loss ends the refinement there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .autoencode import Latents
from .objective import vae_loss
from .ublocks import UBlocks

MAX_STEPS = 1000
"""More steps than this are refused: the gain saturates long before (about 50 steps at N=128)."""


@dataclass(frozen=True)
class RefineOptions:
    """``steps``: Adam steps (0: the encoder's latents as they are); ``learning_rate``: Adam's step
    in latent units (the latents' spread is about 1). The objective's terms are those of the
    shipped recipe (the `small` preset's surface loss: smooth L1 with β ``surface_delta`` weighted
    up to ×(1 + ``surface_weight``) near the surface, plus ``slope_weight`` × the slope error)."""

    steps: int = 0
    learning_rate: float = 0.02
    surface_weight: float = 4.0
    surface_band: float = 0.75
    surface_delta: float = 0.01
    slope_weight: float = 0.5
    kl_weight: float = 1e-6

    def validate(self) -> "RefineOptions":
        if not isinstance(self.steps, (int, np.integer)) or not 0 <= self.steps <= MAX_STEPS:
            raise ValueError(f"refinement steps must be an integer in 0..{MAX_STEPS}, got {self.steps!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"the refinement's learning rate must be > 0, got {self.learning_rate}")
        return self

    def objective(self) -> dict[str, object]:
        """The keyword arguments of :func:`model.objective.vae_loss` beyond the tensors (the surface
        objective; Huber's δ is unused by it)."""
        return {"huber_delta": 0.2, "kl_weight": self.kl_weight, "surface_weight": self.surface_weight,
                "surface_band": self.surface_band, "objective": "surface", "surface_delta": self.surface_delta,
                "slope_weight": self.slope_weight}


def refine_latents(model, ublocks: UBlocks, latents: Latents, options: RefineOptions,
                   report: Callable[[float], None] | None = None) -> Latents:
    """``latents`` of ``ublocks`` (the same blocks, in the same order) moved to fit those blocks through
    ``model``'s decoder (see the module's docstring). The weights are frozen for the duration and
    left as they were; activations of the local decoder are recomputed in the backward pass (chunk by
    chunk), so the memory is that of a decode plus the transformer's activations."""
    import torch

    options.validate()
    if options.steps == 0 or len(latents.latents) == 0:
        return latents
    if ublocks.blocks.shape[0] != latents.latents.shape[0]:
        raise ValueError(f"{ublocks.blocks.shape[0]} blocks for {latents.latents.shape[0]} latents")
    report = report or (lambda fraction: None)
    device = model.device
    target = torch.as_tensor(ublocks.blocks).to(device).float()  # numpy, or the torch engine's tensors
    coords = torch.as_tensor(np.asarray(latents.coords, dtype=np.int64), device=device)
    z = torch.tensor(np.asarray(latents.latents, dtype=np.float32), device=device, requires_grad=True)
    no_spread = torch.zeros_like(z)
    objective = options.objective()
    optimiser = torch.optim.Adam([z], lr=options.learning_rate)
    frozen = [p.requires_grad for p in model.parameters()]
    was_training, was_checkpointing = model.training, model.config.grad_checkpoint
    best, best_loss = z.detach().clone(), float("inf")
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        model.eval()
        model.config.grad_checkpoint = True
        with torch.enable_grad():
            for step in range(options.steps + 1):  # the last pass only scores the last update
                optimiser.zero_grad(set_to_none=True)
                loss, _, _ = vae_loss(model.decode(z, coords), target, z, no_spread, **objective)
                value = float(loss.detach())
                if not np.isfinite(value):
                    break
                if value < best_loss:
                    best, best_loss = z.detach().clone(), value
                if step == options.steps:
                    break
                loss.backward()
                optimiser.step()
                report((step + 1) / options.steps)
    finally:
        for p, flag in zip(model.parameters(), frozen):
            p.requires_grad_(flag)
        model.train(was_training)
        model.config.grad_checkpoint = was_checkpointing
    return Latents(latents.resolution, best.cpu().numpy().astype(np.float32), np.asarray(latents.coords))


__all__ = ["MAX_STEPS", "RefineOptions", "refine_latents"]
