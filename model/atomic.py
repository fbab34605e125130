"""Writing an output so that it is either whole under its real name or absent.

Every command that writes results (remesh batches, latent files, decoded meshes) goes through this:
the file is written under a hidden temporary name next to its destination, flushed to disk, renamed
over the destination, and the rename itself made durable; on any failure the temporary file is
removed. A resumable run that skips existing outputs can then trust every one it finds.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield the temporary path to write; on leaving the block without error, fsync it and rename it
    to ``path``. The temporary name keeps ``path``'s suffix (format-by-extension writers need it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")
    try:
        yield partial
        with open(partial, "rb") as f:
            os.fsync(f.fileno())
        os.replace(partial, path)
        _fsync_dir(path.parent)
    finally:
        if partial.exists():
            partial.unlink()


def _fsync_dir(path: Path) -> None:
    """Make a rename durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
