"""Writing a file so that nobody ever sees half of it: the content goes to a fresh temporary
file beside it, renamed into place. mkstemp makes that file under a name nobody can guess, so a
link planted in a shared folder is never followed; a kill leaves the old file or the new one
(and at most a stray temporary file)."""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _temporary_name(path: Path) -> tuple[str, str]:
    """The prefix and suffix of the temporary files of `path`."""
    return f".{path.name}-", ".tmp"


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A fresh, empty temporary file beside `path` to write; renamed onto `path` when the block
    ends, removed if it raises."""
    prefix, suffix = _temporary_name(path)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would keep the file from the people it is shared with
        os.close(fd)
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data` in one step."""
    with replacing(path) as tmp:
        tmp.write_bytes(data)


def remove_leftovers(path: Path) -> None:
    """Remove the temporary files of `path` that writers killed inside `replacing` left behind.
    Call it only where no other writer of `path` can be in `replacing` (under its writer's lock)."""
    prefix, suffix = _temporary_name(path)
    for tmp in path.parent.glob(f"{glob.escape(prefix)}*{glob.escape(suffix)}"):
        if tmp.is_symlink() or tmp.is_file():  # a link is removed, never followed; a folder is left
            with contextlib.suppress(OSError):  # one we may not remove stays: it harms nothing but space
                tmp.unlink()
