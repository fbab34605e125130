"""The VAE leg of the pipeline: UBlocks → LoG-VAE encode → decode → decoded UBlocks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

from .grid import SparseField
from .ublocks import UBlocks

if TYPE_CHECKING:
    from .pipeline import RemeshOptions


def autoencode_chunks(field: SparseField, options: "RemeshOptions") -> Iterator[UBlocks]:
    """Decoded UBlocks of a field, ready for Pad-Average."""
    from .pipeline import ModeUnavailable

    raise ModeUnavailable(
        "--mode vae is not available yet: the LoG-VAE network (issue 3) has not landed; use --mode direct"
    )
    yield  # pragma: no cover  (keeps this a generator)
