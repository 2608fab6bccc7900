"""Output locations: atomic writes, up-front writability checks and the run lock.

Atomic writes (every writer in the project: NPZ data, bundles, checkpoints, PNGs): a
reader never sees a half-written file.  The content goes to a temporary file in the
target's directory, is flushed to disk (``fsync``) and then renamed over the target with
``os.replace``, which is atomic on POSIX and Windows.  If writing fails, the previous
target (if any) is left untouched and the temporary file is removed; a temporary left
behind by a killed process (its name carries the host and process id) is removed by the
next write of the same target.

Before long work starts, :func:`check_output_dir` / :func:`check_output_file` prove that
the outputs can be written, and :func:`output_dir_lock` makes sure no other run writes
into the same directory (``specs/errors.md``).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import socket
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from ptychopinn.errors import OutputLocationError, SaveError

__all__ = [
    "LOCK_NAMES",
    "atomic_output",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_output_dir",
    "check_output_file",
    "existing_outputs",
    "file_sha256",
    "launched_worker",
    "output_dir_lock",
    "save_failure",
]

#: Lock file and its owner record in an output directory (not counted as outputs).
LOCK_FILENAME = ".ptychopinn.lock"
LOCK_OWNER_FILENAME = ".ptychopinn.lock.json"
LOCK_NAMES = (LOCK_FILENAME, LOCK_OWNER_FILENAME)


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


# host name as it appears in temporary file names (no dots or separators)
_HOST = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname()) or "host"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True
    return True


def _remove_stale_temporaries(target: Path) -> None:
    """Remove temporaries of ``target`` left by killed processes on this host (their
    process id no longer runs); a live writer's temporary is never touched."""
    pattern = re.compile(
        rf"^\.{re.escape(target.name)}\.{_HOST}-(\d+)\.[^.]+\.tmp{re.escape(target.suffix)}$"
    )
    try:
        candidates = list(target.parent.iterdir())
    except OSError:
        return
    for candidate in candidates:
        match = pattern.match(candidate.name)
        if match is None or _process_alive(int(match.group(1))):
            continue
        try:
            candidate.unlink()
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
    _remove_stale_temporaries(target)
    fd, tmp_name = tempfile.mkstemp(
        dir=parent, prefix=f".{target.name}.{_HOST}-{os.getpid()}.", suffix=f".tmp{target.suffix}"
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


# --------------------------------------------------------------------------- checks
def _nearest_existing(path: Path) -> Path:
    current = path
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def _probe_writable(directory: Path, flag: str, shown: Path) -> None:
    """Create and remove a scratch directory in ``directory`` (the only reliable test:
    permission bits do not tell for root, read-only mounts or full quotas)."""
    try:
        scratch = tempfile.mkdtemp(prefix=".ptychopinn-write-test-", dir=directory)
        os.rmdir(scratch)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise OutputLocationError(
            f"{flag} {shown} is not writable ({reason} in {directory}); choose a directory "
            "you can write to"
        ) from None


def check_output_dir(path: str | os.PathLike[str], flag: str = "--output_dir") -> None:
    """Raise :class:`OutputLocationError` unless ``path`` is, or can be created as, a
    writable directory.  Creates nothing (a scratch entry is made and removed)."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise OutputLocationError(
            f"{flag} {target} is a file, not a directory; choose a directory path"
        )
    existing = _nearest_existing(target.absolute())
    if not existing.is_dir():
        raise OutputLocationError(
            f"{flag} {target} lies under {existing}, which is a file, not a directory; "
            "choose another path"
        )
    _probe_writable(existing, flag, target)


def check_output_file(path: str | os.PathLike[str], flag: str = "--output") -> None:
    """Raise :class:`OutputLocationError` unless a file can be written at ``path``: it
    is not a directory and its folder exists (or can be created) and is writable."""
    target = Path(path)
    if target.is_dir():
        raise OutputLocationError(f"{flag} {target} is a directory; give a file path")
    existing = _nearest_existing(target.absolute().parent)
    if not existing.is_dir():
        raise OutputLocationError(
            f"{flag} {target} lies under {existing}, which is a file, not a directory; "
            "choose another path"
        )
    _probe_writable(existing, flag, target)


def existing_outputs(directory: str | os.PathLike[str]) -> list[str]:
    """Names of the entries in ``directory`` (directories with a trailing ``/``), lock
    files excluded; empty when it does not exist."""
    path = Path(directory)
    if not path.is_dir():
        return []
    return sorted(
        entry.name + ("/" if entry.is_dir() else "")
        for entry in path.iterdir()
        if entry.name not in LOCK_NAMES
    )


def save_failure(path: str | os.PathLike[str], exc: OSError) -> SaveError:
    """The one-line error for a failed write of ``path`` (disk full, file too large)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = "free some disk space and run again"
    elif exc.errno == errno.EFBIG:
        hint = "the file size limit (ulimit -f) is too small for it"
    else:
        hint = "check the disk and run again"
    return SaveError(f"could not write {path}: {reason}; {hint}. Earlier files are intact")


def launched_worker() -> bool:
    """True in the extra processes a DDP launcher (Lightning, torchrun) starts: they re-run
    the command with LOCAL_RANK / NODE_RANK set. Only the launching process checks and
    locks the output directory; the others write into the one it prepared."""
    return os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0"


@contextmanager
def output_dir_lock(
    directory: str | os.PathLike[str], purpose: str, flag: str = "--output_dir"
) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` (created if missing) for one run.

    A second run on the same directory, in any process, is refused at once with
    :class:`OutputLocationError` naming the first (its purpose, process, host, start
    time and command).  The lock is an OS file lock (``filelock``): the system releases
    it when the holding process ends, even after ``kill -9``.
    """
    from filelock import FileLock, Timeout

    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path / LOCK_FILENAME), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise OutputLocationError(
            f"{flag} {path} is in use by {_owner_text(path)}; wait for it to finish or "
            f"choose another {flag}"
        ) from None
    owner_file = path / LOCK_OWNER_FILENAME
    try:
        atomic_write_text(owner_file, json.dumps({
            "purpose": purpose,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": _command_line(),
        }))
        yield
    finally:
        owner_file.unlink(missing_ok=True)
        lock.release()


def _command_line() -> str:
    """This process's command as the user typed it (``python -m pkg`` for a package)."""
    program = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path("python")
    shown = (f"python -m {program.parent.name}" if program.name == "__main__.py"
             else program.name)
    return " ".join([shown, *sys.argv[1:]])


def _owner_text(directory: Path) -> str:
    try:
        owner = json.loads((directory / LOCK_OWNER_FILENAME).read_text(encoding="utf-8"))
        return (
            f"another {owner['purpose']} (process {owner['pid']} on {owner['host']}, started "
            f"{owner['started_utc']}: {owner['command']})"
        )
    except (OSError, ValueError, KeyError, TypeError):
        return f"another process (it holds {directory / LOCK_FILENAME})"
