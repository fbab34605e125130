"""Arguments and progress display shared by the `log3d` commands that remesh (remesh, batch,
encode, decode): one definition of each switch, so the commands cannot drift apart."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # model.cleanup loads numba (half a second): only the commands that remesh pay for it
    from model.cleanup import CleanupOptions


class StageBars:
    """One tqdm progress bar per pipeline stage, on stderr."""

    def __init__(self, enabled: bool = True) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self._enabled = enabled
        self._stage: str | None = None
        self._bar = None

    def __call__(self, stage: str, fraction: float) -> None:
        if not self._enabled:
            return
        if stage != self._stage:
            self.close()
            self._stage = stage
            self._bar = self._tqdm(total=100, desc=f"{stage:<12}", unit="%", leave=True, file=sys.stderr,
                                   bar_format="{desc} {bar} {percentage:3.0f}% [{elapsed}]")
        assert self._bar is not None
        self._bar.n = int(round(100 * min(max(fraction, 0.0), 1.0)))
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def add_cleanup_arguments(p: argparse.ArgumentParser) -> None:
    """The clean-up switches, shared by every command that remeshes."""
    g = p.add_argument_group("clean-up (deflate, outer shell and single layer on by default)")
    g.add_argument("--raw", action="store_true", help="the paper's output: the ε-surface, no clean-up at all")
    g.add_argument("--no-deflate", action="store_true", help="leave the surface at ε = 1/N instead of on the zero set")
    g.add_argument("--keep-inner", action="store_true", help="keep the inner shells of closed surfaces")
    g.add_argument("--keep-slabs", action="store_true",
                   help="leave an open sheet as a thin closed slab at ε instead of one open layer")
    g.add_argument("--target-faces", type=int, default=0, help="decimate to about this many faces (0: all)")


def cleanup_from_args(args: argparse.Namespace) -> "CleanupOptions":
    from model.cleanup import CleanupOptions

    if args.raw:
        return CleanupOptions.none()
    deflate = not args.no_deflate
    return CleanupOptions(deflate=deflate, outer_shell=not args.keep_inner,
                          single_layer=deflate and not args.keep_slabs, target_faces=args.target_faces)
