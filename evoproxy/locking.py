"""Exclusive writers: one process at a time writes a run or a bench file, under an flock on a
lock file beside it that holds the writer's pid. The system releases the lock however the
process ends, so a killed writer never leaves a stale lock."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import EvoproxyError


def lock_path(path: Path) -> Path:
    """The lock file of `path`: `path.lock` beside it."""
    return path.with_name(path.name + ".lock")


def lock_holder(path: Path) -> str | None:
    """Who holds the writer's lock of `path` ("process PID"), or None where nobody does. The
    probe takes a shared lock for an instant: it never waits, and a writer starting in that
    instant is told that `path` is in use."""
    try:
        fd = os.open(lock_path(path), os.O_RDONLY)
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
    fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT, 0o644)
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
