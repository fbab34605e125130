"""LoG3D: the shape representation (UDF UBlocks), the LoG-VAE network and the metrics.

Importable without the server or Blender. The public API is the handful of names below; the CLI,
the server and scripts use them, and everything else is a module one level down::

    from model import RemeshOptions, load_mesh, remesh, save_mesh

    result = remesh(load_mesh("bunny.obj"), RemeshOptions(resolution=512))
    save_mesh(result.mesh, "bunny_512.obj")

    latents, normalization = encode(load_mesh("bunny.obj"), RemeshOptions(resolution=256, mode="vae"))
    mesh = decode(latents, normalization)

The names load on first use (PEP 562): ``import model.grid`` must not pay for numba and the
pipeline's modules, which ``model.pipeline`` pulls in.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_NAMES = {
    "model.pipeline": ("remesh", "RemeshOptions", "RemeshResult"),
    "model.autoencode": ("Latents", "ModeUnavailable"),
    "model.cleanup": ("CleanupOptions",),
    "model.mesh": ("Mesh", "MeshError", "Normalization", "load_mesh", "save_mesh"),
    "model.grid": ("ResolutionError",),
    "model.stages": ("Cancelled",),
}
_EXPORTS = {name: (module, name) for module, names in _NAMES.items() for name in names}
_EXPORTS["encode"] = ("model.pipeline", "encode_mesh")
_EXPORTS["decode"] = ("model.pipeline", "decode_to_mesh")

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from .autoencode import Latents, ModeUnavailable
    from .cleanup import CleanupOptions
    from .grid import ResolutionError
    from .mesh import Mesh, MeshError, Normalization, load_mesh, save_mesh
    from .pipeline import RemeshOptions, RemeshResult, remesh
    from .pipeline import decode_to_mesh as decode
    from .pipeline import encode_mesh as encode
    from .stages import Cancelled


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'model' has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    value = getattr(import_module(module), attribute)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
