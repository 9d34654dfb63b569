"""Durable file writes: a reader sees the whole new file or the old state, never a torn one."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["atomic_write", "fsync_dir"]


def fsync_dir(path: Path, enabled: bool = True) -> None:
    """Make renames and deletions in ``path`` durable (a no-op where directories cannot be opened)."""
    if not enabled:
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(tmp_dir: Path, dest_dir: Path, name: str, data: bytes, fsync: bool = True,
                 mtime: float | None = None) -> Path:
    """Write ``data`` to ``tmp_dir/name``, fsync it, rename it to ``dest_dir/name``, fsync the directory.

    ``tmp_dir`` must be on the same file system as ``dest_dir`` (the rename is then atomic).
    ``mtime`` stamps the file, so a merged window keeps the age of its oldest part. On any failure the
    temp file is removed before the error propagates.
    """
    tmp = tmp_dir / (name + ".tmp")
    dest = dest_dir / name
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        if mtime is not None:
            os.utime(tmp, (mtime, mtime))
        os.replace(tmp, dest)
    except BaseException:  # a full disk, a quota: leave no half-written temp file behind
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(dest_dir, fsync)
    return dest
