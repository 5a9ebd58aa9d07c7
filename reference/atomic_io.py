"""Atomic file writes: a reader sees the old file or the complete new one, never a torn or partial file.

Every writer here writes to a temporary file in the destination's directory (same filesystem, so the rename
is atomic), created with the permissions a plain ``open`` gives (0o666 less the umask; ``tempfile.mkstemp``
would leave 0o600), flushes and fsyncs it, renames it over the destination with ``os.replace`` and then
fsyncs the directory so that the rename itself survives a crash. If anything fails, including the caller's writer
raising or an interrupt, the temporary file is removed and the destination is left exactly as it was.

A process killed mid-write (SIGKILL, power loss) leaves its temp file ``.<name>.<12 hex digits>.tmp`` behind;
:func:`remove_stale_temps` removes such files, and the programs call it when they start (a run directory at the
start of training, a sweep's results directory). :func:`describe_os_error` turns a failed write (disk full,
read-only file system, permission denied, a directory in the way) into a one-line message naming the path.

This module is shared by ``reference`` (game files), ``proofs_check`` (reports) and ``drigm`` (checkpoints,
sweep results); it needs only the standard library.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "describe_not_a_file",
    "describe_os_error",
    "remove_stale_temps",
]

TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")
"""The names of this module's temp files: ``.<destination name>.<12 hex digits>.tmp``."""


def _target(path: str | os.PathLike[str], make_parents: bool) -> Path:
    """The destination as a Path whose directory exists (created if asked), else a clear error naming it."""
    path = Path(path)
    parent = path.parent
    if make_parents:
        parent.mkdir(parents=True, exist_ok=True)
    elif not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise FileNotFoundError(f"cannot write {str(path)!r}: its directory {str(parent)!r} {what}")
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {str(path)!r}: it is a directory")
    return path


def _open_temp(path: Path) -> tuple[int, Path]:
    """A new, exclusively created temp file beside `path` (mode 0o666, less the umask as the kernel applies it)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {str(path)!r}")


def _fsync_dir(directory: Path) -> None:
    """Make a completed rename durable; skipped where directories cannot be opened (e.g. Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(
    path: str | os.PathLike[str], writer: Callable[[IO[bytes]], object], make_parents: bool = False
) -> Path:
    """Call ``writer(fh)`` on a binary temp file, then atomically replace `path` with it; returns `path`.

    Guarantees `path` is either untouched or holds everything writer wrote; the temp file never outlives the call.
    """
    path = _target(path, make_parents)
    try:
        fd, tmp = _open_temp(path)
    except OSError as exc:
        if exc.filename is None:
            raise type(exc)(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    try:
        with os.fdopen(fd, "wb") as fh:
            writer(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.filename is None:  # a failed write or fsync (disk full): name the file that was being written
            raise type(exc)(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, make_parents: bool = False) -> Path:
    """Atomically replace `path` with exactly `data`; returns `path`."""
    return atomic_write(path, lambda fh: fh.write(data), make_parents)


def atomic_write_text(
    path: str | os.PathLike[str], text: str, encoding: str = "utf-8", make_parents: bool = False
) -> Path:
    """Atomically replace `path` with `text` encoded as `encoding` (no newline translation); returns `path`."""
    return atomic_write_bytes(path, text.encode(encoding), make_parents)


def atomic_write_json(
    path: str | os.PathLike[str],
    obj: Any,
    *,
    indent: int | None = 1,
    default: Callable[[Any], Any] | None = None,
    allow_nan: bool = True,
    make_parents: bool = False,
) -> Path:
    """Atomically replace `path` with ``json.dumps(obj, ...)`` and a final newline; returns `path`.

    The object is serialised before any file is created, so a value json cannot encode leaves no trace.
    """
    text = json.dumps(obj, indent=indent, default=default, allow_nan=allow_nan) + "\n"
    return atomic_write_text(path, text, make_parents=make_parents)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the file `path` (created with its parents) for the ``with`` block; the lock
    dies with its process, so a killed holder never leaves it taken."""
    import fcntl  # POSIX only: imported here so that the rest of this module imports everywhere

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def remove_stale_temps(
    directory: str | os.PathLike[str], recursive: bool = False, min_age_s: float = 0.0
) -> list[Path]:
    """Delete the temp files of atomic writes (names matching TEMP_NAME) in `directory` (and its subdirectories
    when `recursive`) last modified at least `min_age_s` seconds ago; returns the paths removed.

    Call it where no other writer can be active in `directory` (min_age_s = 0), or with an age no live write
    reaches. A missing directory, or a file that vanishes or cannot be removed, is skipped silently.
    """
    root = Path(directory)
    if not root.is_dir():
        return []
    removed: list[Path] = []
    now = time.time()
    candidates = root.rglob(".*.tmp") if recursive else root.glob(".*.tmp")
    for tmp in candidates:
        if not TEMP_NAME.match(tmp.name):
            continue
        try:
            st = tmp.lstat()
            if not os.path.isfile(tmp) or os.path.islink(tmp) or now - st.st_mtime < min_age_s:
                continue
            tmp.unlink()
        except OSError:
            continue
        removed.append(tmp)
    return removed


_ERRNO_HINTS = {
    errno.ENOSPC: "the disk is full: free some space and run again (nothing written so far was damaged)",
    errno.EDQUOT: "the disk quota is exhausted: free some space and run again",
    errno.EROFS: "the file system is read-only: choose an output path on a writable disk",
    errno.EACCES: "permission denied: choose an output path you may write to",
    errno.EPERM: "permission denied: choose an output path you may write to",
    errno.EISDIR: "it is a directory: give a file path",
    errno.ENOTDIR: "a part of the path is a file, not a directory",
    errno.EEXIST: "a file is in the way",
    errno.ENAMETOOLONG: "the path is too long",
}


def describe_os_error(exc: OSError) -> str:
    """A one-line, user-facing description of an I/O failure: the path(s) involved, the system's reason and what
    to do about it (for disk full, read-only, permission and directory-in-the-way errors)."""
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    reason = exc.strerror or str(exc) or type(exc).__name__
    where = " -> ".join(repr(p) for p in paths)
    hint = _ERRNO_HINTS.get(exc.errno) if exc.errno is not None else None
    head = f"{where}: {reason}" if where else reason
    return f"{head} ({hint})" if hint else head


def describe_not_a_file(path: str | os.PathLike[str], what: str) -> str | None:
    """None when `path` is a regular file (or a link to one); else a message naming `path` and what it is
    instead: missing, a directory, a symlink loop, a dangling link, a FIFO, a device or a socket."""
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"{what} {str(path)!r} is a symbolic link loop, not a file"
        if os.path.islink(path):
            return f"{what} {str(path)!r} is a symbolic link to {os.readlink(path)!r}, which does not exist"
        if exc.errno == errno.ENOENT:
            return f"{what} {str(path)!r} does not exist"
        if exc.errno == errno.ENOTDIR:
            return f"{what} {str(path)!r} does not exist (a part of its path is not a directory)"
        return f"{what} {str(path)!r} cannot be read: {exc.strerror or exc}"
    if stat.S_ISREG(st.st_mode):
        return None
    kind = (
        "a directory"
        if stat.S_ISDIR(st.st_mode)
        else "a FIFO (named pipe)"
        if stat.S_ISFIFO(st.st_mode)
        else "a socket"
        if stat.S_ISSOCK(st.st_mode)
        else "a device"
        if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
        else "not a regular file"
    )
    return f"{what} {str(path)!r} is {kind}; expected a regular file"
