"""Where the add-on's wire client comes from.

There is one client implementation in the project, ``backend/client.py`` (with the message format in
``backend/protocol.py``); both need only pyzmq, msgpack and numpy. Blender cannot import the
project's ``backend`` package, so the zip build (``install.py --addon``) copies those files (with
``backend/auth.py``, the numpy-only latent file reader ``model/latent_format.py`` and the quad
layout ``model/quad_layout.py``) into the add-on
as the private sub-package ``_wire``. Run from the repository (tests, development) the add-on
uses ``backend.client`` itself. Nothing here is a second copy to keep in sync.

Importing this module imports zmq; the add-on does so only when it first talks to a backend, so a
missing pyzmq is reported in the panel instead of breaking registration.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType


def _module(vendored_name: str, repo_name: str) -> ModuleType:
    vendored = f"{__package__}._wire"
    if importlib.util.find_spec(vendored) is not None:
        return importlib.import_module(f"{vendored}.{vendored_name}")
    return importlib.import_module(repo_name)


_client = _module("client", "backend.client")
_latents = _module("latent_format", "model.latent_format")
_quads = _module("quad_layout", "model.quad_layout")

Log3DClient = _client.Log3DClient
BackendError = _client.BackendError
read_latent_arrays = _latents.read_latent_arrays
LatentFormatError = _latents.LatentFormatError
check_quad_pairs = _quads.check_quad_pairs
quad_corners = _quads.quad_corners

__all__ = ["BackendError", "LatentFormatError", "Log3DClient", "check_quad_pairs", "quad_corners", "read_latent_arrays"]
