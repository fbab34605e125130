"""The training cache: UBlocks of many shapes on disk, written once by ``log3d prepare`` and read
at every training step.

Layout of a cache directory::

    CACHE/
      index.json          format, version, the prepare options, one entry per shape, the failures
      journal.jsonl       one JSON line per finished task (ok or failed), appended as work completes;
                          it is what makes ``prepare`` resumable and a half-prepared cache readable
      shards/ab/<id>.npz  one compressed NumPy archive per shape: ``blocks`` float16 [L, 12, 12, 12]
                          (the normalised UDF is in [0, 1], where float16 is exact to 5e-4) and
                          ``coords`` int16 [L, 3] (block coordinates, s = N/8 <= 256)

Every file is written to a temporary name in the same directory and renamed, so a crash never
leaves a half-written shard or index under its real name. A shard whose bytes do not match the
sha256 in the index, or that cannot be decoded, raises :class:`ShardError`; the trainer reports and
skips it instead of stopping.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from model.grid import PADDED_SIZE, check_resolution
from model.ublocks import UBlocks

FORMAT = "log3d-ublock-cache"
FORMAT_VERSION = 1
INDEX_NAME = "index.json"
JOURNAL_NAME = "journal.jsonl"
SHARD_DIR = "shards"


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "CacheEntry",
    "CacheFailure",
    "ShardError",
    "CacheError",
    "Cache",
    "atomic_write_bytes",
    "encode_shard",
    "decode_shard",
    "shard_path_for",
    "read_journal",
    "append_journal",
    "write_index",
]


class CacheError(ValueError):
    """The directory is not a cache this code can read."""


class ShardError(ValueError):
    """One shard is missing, truncated, altered or malformed; the rest of the cache is usable."""


@dataclass
class CacheEntry:
    """One shape (one source mesh at one resolution with one augmentation) in the cache."""

    id: str
    name: str
    source: str
    resolution: int
    num_blocks: int
    shard: str
    sha256: str
    bytes: int
    augment: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def group(self) -> str:
        """The source shape: augmented copies and other resolutions of one mesh share it, so a
        held-out validation shape never leaks into training through a rotated copy."""
        return self.name

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CacheEntry":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


@dataclass
class CacheFailure:
    """A task that produced no shard (unreadable mesh, empty surface, ...), with the reason."""

    id: str
    source: str
    error: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename, so
    readers see either the old file or the complete new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):  # mkstemp makes 0600; a cache or run folder is meant to be shared
            os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def shard_path_for(task_id: str) -> str:
    """Relative shard path of a task: hashed, so any shape name (paths, unicode) is a safe file name
    and no directory grows past a few thousand files."""
    h = hashlib.sha1(task_id.encode("utf-8")).hexdigest()
    return f"{SHARD_DIR}/{h[:2]}/{h[2:18]}.npz"


def encode_shard(ublocks: UBlocks) -> bytes:
    """The compressed .npz bytes of one shape's UBlocks (float16 blocks, int16 coordinates)."""
    blocks = np.asarray(ublocks.blocks)
    coords = np.asarray(ublocks.coords)
    if blocks.ndim != 4 or blocks.shape[1:] != (PADDED_SIZE,) * 3 or coords.shape != (blocks.shape[0], 3):
        raise ValueError(f"UBlocks must be [L, 12, 12, 12] + [L, 3], got {blocks.shape} and {coords.shape}")
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        blocks=blocks.astype(np.float16),
        coords=coords.astype(np.int16),
        resolution=np.int32(ublocks.resolution),
    )
    return buf.getvalue()


def decode_shard(data: bytes, expected_blocks: int | None = None) -> tuple[int, np.ndarray, np.ndarray]:
    """(resolution, blocks float16 [L, 12³], coords int32 [L, 3]) of shard bytes; ShardError if the
    archive is damaged or its arrays are not what a shard holds."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            blocks = z["blocks"]
            coords = z["coords"].astype(np.int32)
            resolution = int(z["resolution"])
    except ShardError:
        raise
    except Exception as exc:  # zipfile, zlib, KeyError, ValueError: all mean "damaged"
        raise ShardError(f"cannot decode: {type(exc).__name__}: {exc}") from None
    b = PADDED_SIZE
    if blocks.ndim != 4 or blocks.shape[1:] != (b, b, b) or coords.shape != (blocks.shape[0], 3):
        raise ShardError(f"bad array shapes blocks={blocks.shape} coords={coords.shape}")
    if expected_blocks is not None and blocks.shape[0] != expected_blocks:
        raise ShardError(f"holds {blocks.shape[0]} blocks, the index says {expected_blocks}")
    if coords.size and (coords.min() < 0 or coords.max() >= resolution // 8):
        raise ShardError("block coordinates off the grid")
    return resolution, blocks, coords


# ----------------------------------------------------------------------------------------------
# Journal and index
# ----------------------------------------------------------------------------------------------


def append_journal(cache_dir: Path, record: dict[str, Any]) -> None:
    """Append one finished task; a line is flushed and fsynced before the next task is recorded."""
    path = cache_dir / JOURNAL_NAME
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_journal(cache_dir: Path) -> tuple[dict[str, CacheEntry], dict[str, CacheFailure]]:
    """Entries and failures recorded so far (last record per task id wins). A torn last line (the
    process was killed mid-write) is ignored: that task simply runs again."""
    entries: dict[str, CacheEntry] = {}
    failures: dict[str, CacheFailure] = {}
    path = cache_dir / JOURNAL_NAME
    if not path.is_file():
        return entries, failures
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(rec, dict) or "id" not in rec:
                continue
            if rec.get("status") == "ok":
                entries[rec["id"]] = CacheEntry.from_dict(rec["entry"])
                failures.pop(rec["id"], None)
            elif rec.get("status") == "failed":
                failures[rec["id"]] = CacheFailure(rec["id"], rec.get("source", ""), rec.get("error", ""))
                entries.pop(rec["id"], None)
    return entries, failures


def write_index(cache_dir: Path, entries: Iterable[CacheEntry], failures: Iterable[CacheFailure],
                options: dict[str, Any] | None = None) -> Path:
    """Write index.json atomically, entries sorted by id so the file is reproducible."""
    doc = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "options": options or {},
        "entries": [e.to_dict() for e in sorted(entries, key=lambda e: e.id)],
        "failed": [f.to_dict() for f in sorted(failures, key=lambda f: f.id)],
    }
    path = cache_dir / INDEX_NAME
    atomic_write_bytes(path, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode("utf-8"))
    return path


# ----------------------------------------------------------------------------------------------
# Reader
# ----------------------------------------------------------------------------------------------


class Cache:
    """Read access to a prepared cache: the entries and one shape's blocks at a time.

    Shapes are loaded on demand (a 1024³ shape is ~100k blocks, a few hundred MB as float16), so
    memory holds one shape, never the data set.
    """

    def __init__(self, root: Path, entries: list[CacheEntry], failures: list[CacheFailure],
                 options: dict[str, Any]) -> None:
        self.root = root
        self.entries = entries
        self.failures = failures
        self.options = options

    @classmethod
    def open(cls, root: str | os.PathLike[str]) -> "Cache":
        """Open ``root``: index.json if present, else the journal of a prepare still running or
        interrupted (so a partial cache can already be trained on)."""
        root = Path(root)
        index = root / INDEX_NAME
        if index.is_file():
            try:
                doc = json.loads(index.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise CacheError(f"{index}: not valid JSON ({exc})") from None
            if doc.get("format") != FORMAT:
                raise CacheError(f"{index} is not a {FORMAT} index (format={doc.get('format')!r})")
            if int(doc.get("version", -1)) > FORMAT_VERSION:
                raise CacheError(f"{index} has version {doc.get('version')}; this code reads up to {FORMAT_VERSION}")
            entries = [CacheEntry.from_dict(e) for e in doc.get("entries", [])]
            failures = [CacheFailure(**f) for f in doc.get("failed", [])]
            return cls(root, entries, failures, dict(doc.get("options", {})))
        if (root / JOURNAL_NAME).is_file():
            ents, fails = read_journal(root)
            return cls(root, sorted(ents.values(), key=lambda e: e.id), list(fails.values()), {})
        raise CacheError(f"{root} is not a training cache (no {INDEX_NAME}); create one with `log3d prepare`")

    def __len__(self) -> int:
        return len(self.entries)

    def read(self, entry: CacheEntry, verify: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(blocks float16 [L, 12³], coords int32 [L, 3]) of one entry; ShardError when damaged."""
        path = self.root / entry.shard
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ShardError(f"{entry.shard} ({entry.name}): cannot read: {exc.strerror or exc}") from None
        if verify and entry.sha256 and hashlib.sha256(data).hexdigest() != entry.sha256:
            raise ShardError(f"{entry.shard} ({entry.name}): sha256 mismatch ({len(data)} bytes, index says {entry.bytes})")
        try:
            resolution, blocks, coords = decode_shard(data, entry.num_blocks)
        except ShardError as exc:
            raise ShardError(f"{entry.shard} ({entry.name}): {exc}") from None
        if resolution != entry.resolution:
            raise ShardError(f"{entry.shard} ({entry.name}): resolution {resolution}, the index says {entry.resolution}")
        return blocks, coords

    def ublocks(self, entry: CacheEntry, verify: bool = True) -> UBlocks:
        """The entry as float32 :class:`UBlocks` (what the reconstruction path takes)."""
        blocks, coords = self.read(entry, verify)
        return UBlocks(check_resolution(entry.resolution), blocks.astype(np.float32), coords)

    def iter_ok(self, verify: bool = True) -> Iterator[tuple[CacheEntry, np.ndarray, np.ndarray]]:
        """Every readable entry with its arrays (damaged ones skipped), for tools and tests."""
        for entry in self.entries:
            try:
                blocks, coords = self.read(entry, verify)
            except ShardError:
                continue
            yield entry, blocks, coords
