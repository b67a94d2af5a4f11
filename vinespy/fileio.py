"""Durable file replacement and directory creation, shared by the fs
storages (accounts, the archive) and certificate writing."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename or creation in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:          # some file systems cannot fsync a directory
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def make_dirs(root: Path, path: Path) -> None:
    """Create ``path`` (below ``root``) and the directories between, mode
    0700, each creation made durable in its parent: a crash never leaves a
    file whose directory entry was lost."""
    if path.is_dir():
        return
    os.makedirs(root, mode=0o700, exist_ok=True)
    current = root
    for part in path.relative_to(root).parts:
        parent, current = current, current / part
        try:
            os.mkdir(current, 0o700)
        except FileExistsError:
            continue
        fsync_dir(parent)


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data``: a crash leaves the old file or the new
    one, never a mix. The temp file gets ``mode`` before any byte lands; the
    data and the rename are fsynced."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def read_if_present(path: Path) -> bytes | None:
    """The file's bytes, or None if it (or a directory above it) is missing."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None
