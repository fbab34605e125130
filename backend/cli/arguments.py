"""Arguments and progress display shared by the `log3d` commands (remesh, batch, encode, decode,
serve, info): one definition of each switch, so the commands cannot drift apart."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
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


def add_grid_arguments(p: argparse.ArgumentParser, mode: bool = True) -> None:
    """The grid resolution N and, for the commands that remesh, the mode."""
    p.add_argument("--resolution", "-n", type=int, default=256, help="grid resolution N (multiple of 8, 64..2048; default 256)")
    if mode:
        p.add_argument("--mode", choices=("direct", "vae"), default="direct",
                       help="direct: exact UDF blocks; vae: round trip through the LoG-VAE (default: direct)")


def add_refine_argument(p: argparse.ArgumentParser) -> None:
    """VAE mode's latent refinement (model/refine.py)."""
    p.add_argument("--refine-steps", type=int, default=0, metavar="STEPS",
                   help="VAE mode: fit the latents to the shape's own blocks through the frozen decoder for this "
                        "many Adam steps after encoding (0..1000; default 0). Closer to the input (the cow at "
                        "N=128: CD -13%% at 10 steps, -28%% at 50), but each step costs a decode and its "
                        "backward pass: seconds on a CPU at N=256, far less on a GPU")


def add_surface_arguments(p: argparse.ArgumentParser) -> None:
    """What the surface is made of and how fine it is, beside --resolution."""
    p.add_argument("--voxel-size", type=float, default=None, metavar="SIZE",
                   help="voxel edge in the mesh's own units; N then follows from it and each mesh's extent "
                        "(every mesh at one density), and --resolution is not used")
    p.add_argument("--triangles", action="store_true",
                   help="split every quad into two triangles (default: direct mode keeps its flat quads "
                        "in OBJ, PLY and OFF; glTF and STL always get triangles)")


def add_network_arguments(p: argparse.ArgumentParser, device_help: str, checkpoint_help: str) -> None:
    """Where the LoG-VAE runs and which weights it loads."""
    p.add_argument("--device", default="auto", help=device_help)
    p.add_argument("--checkpoint", type=Path, default=None, help=checkpoint_help)


def add_chunk_argument(p: argparse.ArgumentParser) -> None:
    from model.grid import CHUNK_BLOCKS

    p.add_argument("--chunk-blocks", type=int, default=CHUNK_BLOCKS, help="UBlocks processed per chunk (bounds memory)")


def add_server_arguments(p: argparse.ArgumentParser, host_help: str, port_help: str, connection_help: str) -> None:
    """The server's address and the file with the keys its clients need."""
    from backend.protocol import DEFAULT_HOST, DEFAULT_PORT

    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=port_help.format(port=DEFAULT_PORT))
    p.add_argument("--host", default=DEFAULT_HOST, help=host_help)
    p.add_argument("--connection-file", type=Path, default=None, help=connection_help)


def add_quiet_argument(p: argparse.ArgumentParser, help: str = "no progress bars") -> None:
    p.add_argument("--quiet", "-q", action="store_true", help=help)


def add_cleanup_arguments(p: argparse.ArgumentParser) -> None:
    """The clean-up switches, shared by every command that remeshes."""
    g = p.add_argument_group("clean-up (deflate, outer shell and single layer on by default)")
    g.add_argument("--raw", action="store_true", help="the paper's output: the ε-surface, no clean-up at all")
    g.add_argument("--no-deflate", action="store_true", help="leave the surface at ε = 1/N instead of on the zero set")
    g.add_argument("--keep-inner", action="store_true", help="keep the inner shells of closed surfaces")
    g.add_argument("--keep-slabs", action="store_true",
                   help="leave an open sheet as a thin closed slab at ε instead of one open layer")
    g.add_argument("--no-settle", action="store_true",
                   help="VAE mode: leave the cleaned surface where deflate put it instead of settling it onto the "
                        "field's zero set by the voxels' tangent planes")
    g.add_argument("--cut-slabs", action="store_true",
                   help="VAE mode: cut an open sheet's slab down to one layer (the path before stop 42) instead of "
                        "contouring the field's zero set around it")
    g.add_argument("--no-fill-gaps", action="store_true",
                   help="VAE mode: the outside flood stops at gaps narrower than 4 voxels (the path before stop 43) "
                        "instead of going on down into them")
    g.add_argument("--no-creases", action="store_true",
                   help="VAE mode, a clean field: keep the triangulation across the zero set's creases instead of "
                        "turning its edges along them")
    g.add_argument("--target-faces", type=int, default=0, help="decimate to about this many faces (0: all)")


def cleanup_from_args(args: argparse.Namespace) -> "CleanupOptions":
    from model.cleanup import CleanupOptions

    if args.raw:
        return CleanupOptions.none()
    deflate = not args.no_deflate
    return CleanupOptions(deflate=deflate, outer_shell=not args.keep_inner,
                          single_layer=deflate and not args.keep_slabs, target_faces=args.target_faces,
                          settle=not args.no_settle, contour_slabs=not args.cut_slabs,
                          fill_gaps=not args.no_fill_gaps, creases=not args.no_creases)
