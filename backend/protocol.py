"""The wire between a client (the Blender add-on, `log3d batch`, scripts) and `log3d serve`.

One multipart ZeroMQ message per request or event: frame 0 is a small msgpack header, then one
raw little-endian frame per array named in the header. Meshes and latents never pass through
msgpack, base64 or per-element encoding, so a 10-million-triangle mesh costs one memcpy at most.

Everything a server must check before it trusts a request lives here, so the checks are the same
for every caller and every message gets a *stable* error code. This module needs only numpy and
msgpack (the add-on runs inside Blender, where torch and the ``model`` package are absent); the
few numbers it shares with ``model.grid`` are repeated below and a test keeps them equal.
The full specification, with an example session, is docs/protocol.md.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import msgpack
import numpy as np

WIRE_CHUNK_BLOCKS = 16384
"""model.grid.CHUNK_BLOCKS, written out: this module travels inside the Blender add-on, which has no
``model`` package (a test keeps the two equal)."""

PROTOCOL_VERSION = 1
DEFAULT_PORT = 5557
DEFAULT_HOST = "127.0.0.1"

# Mirrors model.grid / model.pipeline (kept equal by tests/test_protocol.py).
MIN_RESOLUTION = 64
MAX_RESOLUTION = 2048
RESOLUTION_STEP = 8
MODES = ("direct", "vae")

# ----------------------------------------------------------------------------------------------
# Error codes and events
# ----------------------------------------------------------------------------------------------

ERROR_CODES: dict[str, str] = {
    "bad_message": "not a valid message: malformed msgpack, a header that is not a map, missing or "
                   "unknown header fields, wrong frame count",
    "version_mismatch": "the header's protocol version differs from the server's",
    "unknown_type": "the request type does not exist",
    "unknown_option": "an option the request type does not have",
    "bad_option": "an option of the wrong type or out of range",
    "bad_resolution": "the resolution is not a multiple of 8 in 64..2048",
    "too_large": "the message, the mesh or the latent set is over a server limit",
    "bad_array": "an array is missing or extra, or has the wrong dtype, shape, size or values",
    "bad_mesh": "the mesh cannot be remeshed: empty, NaN/Inf coordinates, face indices out of range, "
                "zero extent, no active block",
    "empty_surface": "the reconstructed field has no surface at ε (e.g. an untrained network)",
    "mode_unavailable": "the request needs LoG-VAE weights and the server has none loaded",
    "queue_full": "too many jobs are waiting; try again later",
    "not_found": "no job with that id",
    "cancelled": "the job was cancelled (clients raise this code for a `cancelled` event)",
    "train_failed": "the training child process exited with an error",
    "wrong_model": "the latents were made by other LoG-VAE weights than the loaded ones",
    "out_of_memory": "the job ran out of memory, or its memory estimate does not fit (refused before queueing)",
    "internal": "a bug in the server; the message says what failed and the server keeps serving",
    "timeout": "client side only: no answer from the server in time",
}

ACCEPTED, PROGRESS, RESULT, ERROR, CANCELLED = "accepted", "progress", "result", "error", "cancelled"
EVENT_TYPES = (ACCEPTED, PROGRESS, RESULT, ERROR, CANCELLED)
TERMINAL_EVENTS = (RESULT, ERROR, CANCELLED)

REQUEST_HEADER_FIELDS = ("v", "type", "id", "job", "options", "arrays")
EVENT_HEADER_FIELDS = ("v", "type", "id", "job", "data", "arrays")
MAX_ID_LENGTH = 128


class ProtocolError(Exception):
    """A request the server refuses, with a stable ``code`` from :data:`ERROR_CODES`.

    ``request_id`` is the request's id when the header could be read far enough to know it, so the
    error event can still be matched to the request by the client.
    """

    def __init__(self, code: str, message: str, request_id: object = None) -> None:
        assert code in ERROR_CODES, code
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


@dataclass(frozen=True)
class Limits:
    """What the server accepts. The defaults fit a 2048³ remesh of a large scan on a 128 GB host;
    lower them to protect a smaller machine. Reported to clients in ``hello``."""

    max_message_bytes: int = 1 << 30
    max_header_bytes: int = 64 * 1024
    max_arrays: int = 4
    max_vertices: int = 25_000_000
    max_faces: int = 50_000_000
    max_blocks: int = 4_000_000
    max_queued_jobs: int = 32
    max_queued_jobs_per_client: int = 8
    max_queued_bytes_per_client: int = 4 << 30

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


# ----------------------------------------------------------------------------------------------
# Frames <-> header + arrays
# ----------------------------------------------------------------------------------------------

Frame = Any  # bytes, memoryview, or a zmq.Frame (anything exposing the buffer protocol or .buffer)


def _buffer(frame: Frame) -> memoryview:
    """A byte view of a frame without copying it (zmq.Frame exposes ``.buffer``)."""
    buf = getattr(frame, "buffer", frame)
    view = memoryview(buf)
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def pack(header: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None) -> list[Any]:
    """Frames for one message: the msgpack header (with ``arrays`` descriptors filled in) followed by
    one zero-copy buffer per array, in the order of ``arrays``."""
    head = dict(header)
    descriptors, buffers = [], []
    for name, array in (arrays or {}).items():
        arr = np.asarray(array)
        if arr.dtype.str.startswith(">"):  # big-endian data (or a big-endian host): swap once
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        arr = np.ascontiguousarray(arr)
        descriptors.append({"name": name, "dtype": arr.dtype.str, "shape": list(arr.shape)})
        buffers.append(memoryview(arr.reshape(-1)).cast("B") if arr.size else b"")
    head["arrays"] = descriptors
    return [msgpack.packb(head, use_bin_type=True), *buffers]


def _unpack_header(frame: Frame, limits: Limits) -> dict[str, Any]:
    raw = _buffer(frame)
    if raw.nbytes > limits.max_header_bytes:
        raise ProtocolError("too_large", f"header of {raw.nbytes} bytes is over the limit of {limits.max_header_bytes}")
    try:
        header = msgpack.unpackb(raw, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise ProtocolError("bad_message", f"frame 0 is not a msgpack header: {type(exc).__name__}: {exc}") from None
    if not isinstance(header, dict):
        raise ProtocolError("bad_message", f"the header must be a msgpack map, got {type(header).__name__}")
    return header


_ALLOWED_DTYPES = ("<f4", "<i4", "<f8", "<i8", "|u1", "<u4")


def _unpack_arrays(header: Mapping[str, Any], frames: Sequence[Frame], limits: Limits) -> dict[str, np.ndarray]:
    """Views (no copy) of the array frames, checked against their descriptors."""
    descriptors = header.get("arrays", [])
    if descriptors is None:
        descriptors = []
    if not isinstance(descriptors, list):
        raise ProtocolError("bad_message", "header field 'arrays' must be a list of {name, dtype, shape}")
    if len(descriptors) > limits.max_arrays:
        raise ProtocolError("too_large", f"{len(descriptors)} arrays is over the limit of {limits.max_arrays}")
    if len(frames) != len(descriptors):
        raise ProtocolError("bad_message", f"the header describes {len(descriptors)} arrays but {len(frames)} "
                                           f"array frames follow it (one raw frame per array)")
    arrays: dict[str, np.ndarray] = {}
    for desc, frame in zip(descriptors, frames):
        if not isinstance(desc, dict) or set(desc) != {"name", "dtype", "shape"}:
            raise ProtocolError("bad_message", f"array descriptor {desc!r} must be a map with exactly name, dtype, shape")
        name, dtype, shape = desc["name"], desc["dtype"], desc["shape"]
        if not isinstance(name, str) or name in arrays:
            raise ProtocolError("bad_array", f"array name {name!r} is not a string or appears twice")
        if dtype not in _ALLOWED_DTYPES:
            raise ProtocolError("bad_array", f"array '{name}': dtype {dtype!r} is not one of {list(_ALLOWED_DTYPES)} "
                                             "(little-endian numpy type strings)")
        if (not isinstance(shape, list) or not 1 <= len(shape) <= 4
                or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)):
            raise ProtocolError("bad_array", f"array '{name}': shape {shape!r} must be a list of 1..4 non-negative integers")
        itemsize = np.dtype(dtype).itemsize
        # An empty array may still declare huge dimensions ([0, 2**62]): its byte count (0) matches an
        # empty frame, but numpy refuses such a shape. No dimension product a message could carry is
        # over the message limit, so bound the product of the non-zero dimensions first.
        if math.prod(s for s in shape if s) * itemsize > limits.max_message_bytes:
            raise ProtocolError("bad_array", f"array '{name}': shape {shape!r} is larger than any message "
                                             f"can carry ({limits.max_message_bytes} bytes)")
        expected = math.prod(shape) * itemsize
        buf = _buffer(frame)
        if buf.nbytes != expected:
            raise ProtocolError("bad_array", f"array '{name}': {dtype}{shape} needs {expected} bytes, its frame has {buf.nbytes}")
        arrays[name] = np.frombuffer(buf, dtype=np.dtype(dtype)).reshape(shape)
    return arrays


# ----------------------------------------------------------------------------------------------
# Requests: per-type schema
# ----------------------------------------------------------------------------------------------

OptionCheck = Callable[[str, Any], Any]
"""Validates one option value; returns it normalised or raises ProtocolError."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_resolution_value(name: str, value: Any) -> int:
    """The resolutions the representation can do: multiples of 8 in 64..2048."""
    if not _is_int(value):
        raise ProtocolError("bad_resolution", f"option '{name}' must be an integer, got {value!r}")
    if value % RESOLUTION_STEP or not MIN_RESOLUTION <= value <= MAX_RESOLUTION:
        raise ProtocolError("bad_resolution", f"resolution {value} is not a multiple of {RESOLUTION_STEP} "
                                              f"in {MIN_RESOLUTION}..{MAX_RESOLUTION}")
    return int(value)


def _mode(name: str, value: Any) -> str:
    if value not in MODES:
        raise ProtocolError("bad_option", f"option '{name}' must be one of {list(MODES)}, got {value!r}")
    return str(value)


def _int_in(lo: int, hi: int) -> OptionCheck:
    def check(name: str, value: Any) -> int:
        if not _is_int(value) or not lo <= value <= hi:
            raise ProtocolError("bad_option", f"option '{name}' must be an integer in {lo}..{hi}, got {value!r}")
        return int(value)

    return check


def _vec3(name: str, value: Any) -> list[float]:
    if (not isinstance(value, list) or len(value) != 3
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in value)):
        raise ProtocolError("bad_option", f"option '{name}' must be a list of 3 finite numbers, got {value!r}")
    return [float(x) for x in value]


MAX_COORDINATE = 1e30
"""The largest coordinate a decoded mesh may reach (float32 holds 3.4e38; a frame that lands near it
makes NaN and infinity out of the first arithmetic on it)."""


def check_frame(center: list[float], scale: float, request_id: Any = None) -> None:
    """The frame a decode returns to, ``world = unit / scale + center`` for unit in [-0.5, 0.5]³, must
    give finite float32 coordinates: ``scale=1e-300`` or ``center=[1e308, 0, 0]`` is a bad option,
    not an internal error later."""
    reach = max(abs(c) for c in center) + 0.5 / scale
    if not math.isfinite(reach) or reach > MAX_COORDINATE:
        raise ProtocolError("bad_option", f"center {center} and scale {scale!r} put the decoded mesh at coordinates "
                                          f"up to {reach:.3g}, beyond {MAX_COORDINATE:g}", request_id)


def check_positive(name: str, value: Any) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ProtocolError("bad_option", f"option '{name}' must be a finite number > 0, got {value!r}")
    return float(value)


_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def _relative_name(name: str, value: Any) -> str:
    """A path *inside* one of the server's folders: relative, '/'-separated plain names (letters,
    digits, '.', '_', '-'), no '..', no empty part. The server resolves it under its own roots;
    a client never names a place on the file system."""
    parts = value.split("/") if isinstance(value, str) and 0 < len(value) <= 512 else []
    if not parts or any(not p or p in (".", "..") or not set(p) <= _NAME_CHARS for p in parts):
        raise ProtocolError("bad_option", f"option '{name}' must be a relative name inside the server's folders "
                                          f"(letters, digits, '.', '_', '-', separated by '/'; no '..'), got {value!r}")
    return value


def _hex_digest(name: str, value: Any) -> str:
    if not isinstance(value, str) or len(value) != 64 or not all(c in "0123456789abcdef" for c in value):
        raise ProtocolError("bad_option", f"option '{name}' must be a sha256 hex digest, got {value!r}")
    return value


def _optional(check: OptionCheck) -> OptionCheck:
    def optional(name: str, value: Any) -> Any:
        return None if value is None else check(name, value)

    return optional


def _one_of(*choices: str) -> OptionCheck:
    def check(name: str, value: Any) -> str:
        if value not in choices:
            raise ProtocolError("bad_option", f"option '{name}' must be one of {list(choices)}, got {value!r}")
        return str(value)

    return check


def _cleanup_map(name: str, value: Any) -> dict[str, Any]:
    """Clean-up settings by name (booleans and integers); the server checks the names against the
    clean-up options its pipeline has (listed in hello's ``cleanup``)."""
    if (not isinstance(value, dict) or len(value) > 32
            or not all(isinstance(k, str) and isinstance(v, (bool, int, float)) for k, v in value.items())):
        raise ProtocolError("bad_option", f"option '{name}' must be a map of clean-up setting → boolean or number")
    return dict(value)


@dataclass(frozen=True)
class ArraySpec:
    """Expected dtype and shape of one array; ``None`` in the shape means any length."""

    dtype: str
    shape: tuple[int | None, ...]
    optional: bool = False


MESH_ARRAYS = {"vertices": ArraySpec("<f4", (None, 3)), "faces": ArraySpec("<i4", (None, 3))}
POLYGONS = ("quads", "triangles")  # what a remesh result is made of (model.pipeline.POLYGONS)
MAX_MATERIAL_INDEX = 32767  # Blender's limit on material slots
MAX_COLOR_CHANNELS = 64  # 16 RGBA colour attributes
# Attributes a remesh carries over to its result (docs/protocol.md): each input face's material
# index, and colour channels per input face corner (a per-vertex attribute repeated at its corners).
REMESH_ARRAYS = {**MESH_ARRAYS, "material": ArraySpec("<i4", (None,), optional=True),
                 "colors": ArraySpec("<f4", (None, 3, None), optional=True)}
LATENT_ARRAYS = {"latents": ArraySpec("<f4", (None, None)), "coords": ArraySpec("<i4", (None, 3))}


@dataclass(frozen=True)
class RequestSpec:
    """The options (validator, default) and arrays one request type takes."""

    options: Mapping[str, OptionCheck] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    arrays: Mapping[str, ArraySpec] = field(default_factory=dict)
    needs_job: bool = False
    is_job: bool = False  # queued on the compute worker; answered with accepted → … → terminal event


_CHUNK = _int_in(1, 1 << 20)
_REFINE = _int_in(0, 1000)  # model.refine.MAX_STEPS (the add-on carries this module without `model`)
REQUESTS: dict[str, RequestSpec] = {
    "hello": RequestSpec(),
    "remesh": RequestSpec(options={"resolution": check_resolution_value, "mode": _mode, "chunk_blocks": _CHUNK,
                                   "cleanup": _cleanup_map, "voxel_size": _optional(check_positive),
                                   "polygons": _one_of(*POLYGONS), "refine_steps": _REFINE},
                          defaults={"resolution": 256, "mode": "direct", "chunk_blocks": WIRE_CHUNK_BLOCKS, "cleanup": {},
                                    "voxel_size": None, "polygons": "quads", "refine_steps": 0},
                          arrays=REMESH_ARRAYS, is_job=True),
    "encode": RequestSpec(options={"resolution": check_resolution_value, "chunk_blocks": _CHUNK, "refine_steps": _REFINE},
                          defaults={"resolution": 256, "chunk_blocks": WIRE_CHUNK_BLOCKS, "refine_steps": 0},
                          arrays=MESH_ARRAYS, is_job=True),
    "decode": RequestSpec(options={"resolution": check_resolution_value, "center": _vec3, "scale": check_positive,
                                   "chunk_blocks": _CHUNK, "cleanup": _cleanup_map,
                                   "weights_sha256": _optional(_hex_digest)},
                          defaults={"chunk_blocks": WIRE_CHUNK_BLOCKS, "cleanup": {}, "weights_sha256": None}, required=("resolution", "center", "scale"),
                          arrays=LATENT_ARRAYS, is_job=True),
    "cancel": RequestSpec(needs_job=True),
    "jobs": RequestSpec(),
    # Typed training options only: the server builds the trainer's command line itself, names the run
    # folder, and resolves `data` / `init` / `resume` under its own configured folders.
    "train.start": RequestSpec(options={"data": _relative_name, "preset": _one_of("tiny", "small", "paper"),
                                        "max_steps": _int_in(1, 10_000_000), "lr": _optional(check_positive),
                                        "max_blocks": _optional(_int_in(1, 1 << 20)),
                                        "mixed_precision": _optional(_one_of("no", "fp16", "bf16")),
                                        "seed": _int_in(0, 2**31 - 1), "val_every": _int_in(0, 10_000_000),
                                        "init": _optional(_relative_name), "resume": _optional(_relative_name)},
                               defaults={"preset": "small", "max_steps": 1000, "lr": None, "max_blocks": None,
                                         "mixed_precision": None, "seed": 0, "val_every": 1000, "init": None,
                                         "resume": None},
                               required=("data",)),
    "train.status": RequestSpec(options={"last": _int_in(0, 10_000)}, defaults={"last": 20}, needs_job=True),
    "train.stop": RequestSpec(needs_job=True),
    "shutdown": RequestSpec(),
}
JOB_TYPES = tuple(t for t, spec in REQUESTS.items() if spec.is_job)


@dataclass
class Request:
    """A validated request: options normalised and filled with defaults, arrays as read-only views."""

    type: str
    id: str | int | None
    job: str | None
    options: dict[str, Any]
    arrays: dict[str, np.ndarray]


def _check_options(kind: str, spec: RequestSpec, given: Any) -> dict[str, Any]:
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise ProtocolError("bad_message", "header field 'options' must be a map")
    unknown = sorted((k for k in given if k not in spec.options), key=repr)
    if unknown:
        allowed = ", ".join(sorted(spec.options)) or "none"
        raise ProtocolError("unknown_option", f"'{kind}' has no option {', '.join(map(repr, unknown))} (allowed: {allowed})")
    missing = [name for name in spec.required if name not in given]
    if missing:
        raise ProtocolError("bad_option", f"'{kind}' needs option(s) {', '.join(map(repr, missing))}")
    options = dict(spec.defaults)
    for name, value in given.items():
        options[name] = spec.options[name](name, value)
    return options


def _check_array_set(kind: str, spec: RequestSpec, arrays: Mapping[str, np.ndarray]) -> None:
    required = {name for name, want in spec.arrays.items() if not want.optional}
    if not required <= set(arrays) <= set(spec.arrays):
        optional = sorted(set(spec.arrays) - required)
        takes = f"{sorted(required)}" + (f" (and optionally {optional})" if optional else "")
        raise ProtocolError("bad_array", f"'{kind}' takes arrays {takes}, got {sorted(arrays)}")
    for name, want in spec.arrays.items():
        if name not in arrays:
            continue
        arr = arrays[name]
        if arr.dtype.str != want.dtype:
            raise ProtocolError("bad_array", f"array '{name}' must have dtype {want.dtype}, got {arr.dtype.str}")
        if arr.ndim != len(want.shape) or any(w is not None and w != s for w, s in zip(want.shape, arr.shape)):
            shown = "[" + ", ".join("N" if w is None else str(w) for w in want.shape) + "]"
            raise ProtocolError("bad_array", f"array '{name}' must have shape {shown}, got {list(arr.shape)}")


def validate_mesh_arrays(vertices: np.ndarray, faces: np.ndarray, limits: Limits) -> None:
    """Checks a mesh needs before any compute: size limits, finiteness, index range."""
    v, f = vertices.shape[0], faces.shape[0]
    if v > limits.max_vertices or f > limits.max_faces:
        raise ProtocolError("too_large", f"mesh of {v} vertices / {f} faces is over the limits of "
                                         f"{limits.max_vertices} vertices / {limits.max_faces} faces")
    if v == 0 or f == 0:
        raise ProtocolError("bad_mesh", f"the mesh is empty ({v} vertices, {f} faces)")
    finite = np.isfinite(vertices).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ProtocolError("bad_mesh", f"{bad.size} vertices have NaN or Inf coordinates (first: vertex {int(bad[0])})")
    lo, hi = int(faces.min()), int(faces.max())
    if lo < 0 or hi >= v:
        raise ProtocolError("bad_mesh", f"face index {lo if lo < 0 else hi} is out of range for {v} vertices (valid: 0..{v - 1})")


def validate_attribute_arrays(arrays: Mapping[str, np.ndarray]) -> None:
    """The optional per-face material indices and per-corner colours of a remesh: one row per face,
    indices a Blender slot can take, colour channels finite and not too many."""
    faces = arrays["faces"].shape[0]
    material = arrays.get("material")
    if material is not None:
        if material.shape[0] != faces:
            raise ProtocolError("bad_array", f"array 'material' has {material.shape[0]} entries for {faces} faces")
        if material.size and (int(material.min()) < 0 or int(material.max()) > MAX_MATERIAL_INDEX):
            raise ProtocolError("bad_array", f"material indices must lie in 0..{MAX_MATERIAL_INDEX}, "
                                             f"got {int(material.min())}..{int(material.max())}")
    colors = arrays.get("colors")
    if colors is not None:
        if colors.shape[0] != faces:
            raise ProtocolError("bad_array", f"array 'colors' has {colors.shape[0]} faces' corners for {faces} faces")
        if not 1 <= colors.shape[2] <= MAX_COLOR_CHANNELS:
            raise ProtocolError("bad_array", f"array 'colors' must have 1..{MAX_COLOR_CHANNELS} channels, got {colors.shape[2]}")
        if not np.isfinite(colors).all():
            raise ProtocolError("bad_array", "array 'colors' holds NaN or Inf")


def validate_latent_arrays(latents: np.ndarray, coords: np.ndarray, resolution: int, limits: Limits) -> None:
    """Checks a latent set needs before decoding: one row per block, finite, on the grid, unique."""
    count = latents.shape[0]
    if count > limits.max_blocks:
        raise ProtocolError("too_large", f"{count} blocks is over the limit of {limits.max_blocks}")
    if count == 0 or latents.shape[1] == 0:
        raise ProtocolError("bad_array", f"latents must be a non-empty [L, C] array, got {list(latents.shape)}")
    if coords.shape[0] != count:
        raise ProtocolError("bad_array", f"{count} latents but {coords.shape[0]} block coordinates (one per latent)")
    if not np.isfinite(latents).all():
        raise ProtocolError("bad_array", "latents contain NaN or Inf")
    grid = resolution // RESOLUTION_STEP
    if coords.min() < 0 or coords.max() >= grid:
        raise ProtocolError("bad_array", f"block coordinates must lie in [0, {grid}) at resolution {resolution}")
    c = coords.astype(np.int64)
    keys = (c[:, 0] * grid + c[:, 1]) * grid + c[:, 2]
    if np.unique(keys).shape[0] != count:
        raise ProtocolError("bad_array", "block coordinates contain duplicates")


def message_size(frames: Iterable[Frame]) -> int:
    return sum(_buffer(f).nbytes for f in frames)


def parse_request(frames: Sequence[Frame], limits: Limits) -> Request:
    """Decode and fully validate one request (the frames after the ROUTER's routing identity).

    Who may send is settled before any frame arrives here: ZeroMQ's CURVE handshake and the ZAP
    handler (``backend.auth``). Checks, in order: size, msgpack header, protocol version, header fields, type, job id,
    array frames, arrays against the type's schema, options, and the arrays' contents.
    """
    if not frames:
        raise ProtocolError("bad_message", "empty message: expected a header frame")
    size = message_size(frames)
    if size > limits.max_message_bytes:
        raise ProtocolError("too_large", f"message of {size} bytes is over the limit of {limits.max_message_bytes}")
    header = _unpack_header(frames[0], limits)
    request_id = header.get("id")
    if not (request_id is None or _is_int(request_id) or (isinstance(request_id, str) and len(request_id) <= MAX_ID_LENGTH)):
        raise ProtocolError("bad_message", f"header field 'id' must be a string (≤ {MAX_ID_LENGTH} chars) or an integer")
    try:
        return _validate(header, frames[1:], limits, request_id)
    except ProtocolError as exc:
        exc.request_id = request_id
        raise


def _validate(header: dict[str, Any], array_frames: Sequence[Frame], limits: Limits, request_id: Any) -> Request:
    version = header.get("v")
    if not _is_int(version) or version != PROTOCOL_VERSION:
        raise ProtocolError("version_mismatch", f"this server speaks protocol version {PROTOCOL_VERSION}, "
                                                f"the request has {version!r}")
    unknown = sorted((k for k in header if k not in REQUEST_HEADER_FIELDS), key=repr)
    if unknown:
        raise ProtocolError("bad_message", f"unknown header field(s) {unknown} (allowed: {list(REQUEST_HEADER_FIELDS)})")
    kind = header.get("type")
    if not isinstance(kind, str) or kind not in REQUESTS:
        raise ProtocolError("unknown_type", f"unknown request type {kind!r} (known: {', '.join(REQUESTS)})")
    spec = REQUESTS[kind]
    job = header.get("job")
    if spec.needs_job and not (isinstance(job, str) and 0 < len(job) <= MAX_ID_LENGTH):
        raise ProtocolError("bad_message", f"'{kind}' needs the job id in header field 'job'")
    arrays = _unpack_arrays(header, array_frames, limits)
    _check_array_set(kind, spec, arrays)
    options = _check_options(kind, spec, header.get("options"))
    if "vertices" in spec.arrays:
        validate_mesh_arrays(arrays["vertices"], arrays["faces"], limits)
        validate_attribute_arrays(arrays)
    elif spec.arrays is LATENT_ARRAYS:
        validate_latent_arrays(arrays["latents"], arrays["coords"], options["resolution"], limits)
    if "center" in options and "scale" in options:
        check_frame(options["center"], options["scale"], request_id)
    return Request(type=kind, id=request_id, job=job if spec.needs_job else None, options=options, arrays=arrays)


def request_frames(kind: str, request_id: str | int | None, options: Mapping[str, Any] | None = None,
                   arrays: Mapping[str, np.ndarray] | None = None, job: str | None = None) -> list[Any]:
    """Frames of a request as a client sends them on its DEALER socket."""
    header: dict[str, Any] = {"v": PROTOCOL_VERSION, "type": kind, "id": request_id, "options": dict(options or {})}
    if job is not None:
        header["job"] = job
    return pack(header, arrays)


# ----------------------------------------------------------------------------------------------
# Events
# ----------------------------------------------------------------------------------------------


@dataclass
class Event:
    """One message from the server: ``type`` is one of :data:`EVENT_TYPES`."""

    type: str
    id: str | int | None
    job: str | None
    data: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_EVENTS


def event_frames(kind: str, request_id: Any, job: str | None = None, data: Mapping[str, Any] | None = None,
                 arrays: Mapping[str, np.ndarray] | None = None) -> list[Any]:
    """Frames of an event as the server sends them (after the client's routing identity)."""
    assert kind in EVENT_TYPES, kind
    return pack({"v": PROTOCOL_VERSION, "type": kind, "id": request_id, "job": job, "data": dict(data or {})}, arrays)


def error_frames(code: str, message: str, request_id: Any = None, job: str | None = None) -> list[Any]:
    assert code in ERROR_CODES, code
    return event_frames(ERROR, request_id, job, {"code": code, "message": message})


# Events come from a trusted server, so the client's limits only guard against a wrong port.
CLIENT_LIMITS = Limits(max_message_bytes=1 << 40, max_header_bytes=16 << 20, max_arrays=16)


def parse_event(frames: Sequence[Frame], limits: Limits = CLIENT_LIMITS) -> Event:
    """Decode one event on the client side (arrays are read-only views of the received frames)."""
    if not frames:
        raise ProtocolError("bad_message", "empty event")
    header = _unpack_header(frames[0], limits)
    if header.get("v") != PROTOCOL_VERSION:
        raise ProtocolError("version_mismatch", f"the server speaks protocol version {header.get('v')!r}, "
                                                f"this client {PROTOCOL_VERSION}")
    kind = header.get("type")
    if not isinstance(kind, str) or kind not in EVENT_TYPES:
        raise ProtocolError("bad_message", f"unknown event type {kind!r}")
    data = header.get("data") or {}
    if not isinstance(data, dict):
        raise ProtocolError("bad_message", "event field 'data' must be a map")
    arrays = _unpack_arrays(header, frames[1:], limits)
    return Event(type=kind, id=header.get("id"), job=header.get("job"), data=data, arrays=arrays)


def capabilities(limits: Limits, modes: Sequence[str]) -> dict[str, Any]:
    """What ``hello`` advertises: request types and their options, modes, resolutions, limits."""
    return {
        "types": list(REQUESTS),
        "options": {kind: sorted(spec.options) for kind, spec in REQUESTS.items() if spec.options},
        "modes": list(modes),
        "resolutions": {"min": MIN_RESOLUTION, "max": MAX_RESOLUTION, "multiple_of": RESOLUTION_STEP},
        "limits": limits.to_dict(),
        "error_codes": list(ERROR_CODES),
    }
