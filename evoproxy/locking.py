"""Exclusive writers: one process at a time writes a run or a bench file, under an flock on a
lock file beside it that holds the writer's pid. The system releases the lock however the
process ends, so a killed writer never leaves a stale lock. A lock file is never opened through
a link: one planted in a shared folder would make the writer truncate the file it points to."""

from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import EvoproxyError


def lock_path(path: Path) -> Path:
    """The lock file of `path`: `path.lock` beside it."""
    return path.with_name(path.name + ".lock")


def _open(path: Path, flags: int) -> int:
    """The lock file of `path` opened with `flags`, never through a link, never waiting (a FIFO
    in its place): a one-line error where something else is in its place. FileNotFoundError
    where it is missing and `flags` does not create it."""
    lock = lock_path(path)
    try:
        fd = os.open(lock, flags | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except FileNotFoundError:
        raise
    except OSError as exc:
        why = "is a symbolic link, never followed" if os.path.islink(lock) else f"cannot be opened ({exc.strerror})"
        raise EvoproxyError(f"the lock file {lock} {why}; remove it and try again") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise EvoproxyError(f"the lock file {lock} is not a plain file; remove it and try again")
    return fd


def lock_holder(path: Path) -> str | None:
    """Who holds the writer's lock of `path` ("process PID"), or None where nobody does. The
    probe takes a shared lock for an instant: it never waits, and a writer starting in that
    instant is told that `path` is in use."""
    try:
        fd = _open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.read(fd, 32).decode("ascii", "replace").strip()
            return f"process {pid}" if pid.isdigit() else "another process"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def acquire(path: Path, what: str) -> int:
    """The exclusive writer's lock of `path`, as an open descriptor (closing it releases the
    lock), or a one-line error naming the holder; `what` names `path` in it."""
    fd = _open(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise EvoproxyError(
            f"{what} is in use by {lock_holder(path) or 'another process'}; wait until it ends "
            "(or stop it), then try again"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


@contextmanager
def held(path: Path, what: str) -> Iterator[None]:
    """`acquire` for the time of a with block."""
    fd = acquire(path, what)
    try:
        yield
    finally:
        os.close(fd)
