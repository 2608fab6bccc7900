"""Atomic file output shared by every writer in the project (NPZ data, bundles, PNGs).

A reader never sees a half-written file: the content goes to a temporary file in the
target's directory, is flushed to disk (``fsync``) and then renamed over the target with
``os.replace``, which is atomic on POSIX and Windows.  If writing fails, the previous
target (if any) is left untouched and the temporary file is removed.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_output", "atomic_write_bytes", "atomic_write_text"]


def _current_umask() -> int:
    # Reading /proc avoids os.umask()'s set-and-restore, which races with other threads.
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not supported on every platform/filesystem.
    try:
        _fsync_path(directory)
    except OSError:
        pass


@contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; on success it atomically replaces ``path``.

    The temporary file lives in the same directory as ``path`` (created if missing) and
    keeps the target's suffix, so writers that infer a format from the extension
    (``matplotlib.savefig``) behave as for the real target.  The final file gets the
    mode of the file it replaces, or the usual ``0o666 & ~umask`` for a new file.

    Raises:
        ValueError: ``path`` is an existing directory.
    """
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"cannot write {target}: it is an existing directory")
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        mode = target.stat().st_mode & 0o7777
    else:
        mode = 0o666 & ~_current_umask()
    fd, tmp_name = tempfile.mkstemp(
        dir=parent, prefix=f".{target.name}.", suffix=f".tmp{target.suffix}"
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _fsync_path(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding=encoding)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of the whole file at ``path`` (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
