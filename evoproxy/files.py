"""Writing a file so that nobody ever sees half of it: the content goes to a fresh temporary
file beside it, renamed into place. mkstemp makes that file under a name nobody can guess, so a
link planted in a shared folder is never followed; a kill leaves the old file or the new one
(and at most a stray temporary file)."""

from __future__ import annotations

import contextlib
import glob
import hashlib
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


CACHE_ENV = "EVOPROXY_CACHE_DIR"
CHECKSUM_MISMATCH = "it does not match the checksum recorded beside it (changed or damaged since it was written)"


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """Where computed results are kept (statistics, distilled images): `override`, else
    $EVOPROXY_CACHE_DIR, else ~/.cache/evoproxy."""
    return Path(override or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "evoproxy")


def checksum_path(path: Path) -> Path:
    """Where the sha256 of a cache entry is recorded: beside it, as NAME.sha256."""
    return path.with_name(path.name + ".sha256")


def write_with_checksum(path: Path, data: bytes) -> None:
    """A cache entry: `data` to `path`, then its sha256 beside it, so that a reader in between finds
    no match. The checksum guards against damage and stale writes, not against a writer: anyone
    who can change the entry can change its checksum too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, data)
    write_atomically(checksum_path(path), hashlib.sha256(data).hexdigest().encode("ascii"))


def read_with_checksum(path: Path) -> tuple[bytes | None, str | None]:
    """A cache entry's bytes and None if they match the sha256 recorded beside them, else None and
    why not (CHECKSUM_MISMATCH where both files are there but differ)."""
    try:
        data, recorded = path.read_bytes(), checksum_path(path).read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None, "it has no checksum beside it" if path.is_file() else "it is not there"
    except (OSError, UnicodeDecodeError) as exc:
        return None, str(exc)
    if hashlib.sha256(data).hexdigest() != recorded:
        return None, CHECKSUM_MISMATCH
    return data, None


def remove_leftovers(path: Path) -> None:
    """Remove the temporary files of `path` that writers killed inside `replacing` left behind.
    Call it only where no other writer of `path` can be in `replacing` (under its writer's lock)."""
    prefix, suffix = _temporary_name(path)
    for tmp in path.parent.glob(f"{glob.escape(prefix)}*{glob.escape(suffix)}"):
        if tmp.is_symlink() or tmp.is_file():  # a link is removed, never followed; a folder is left
            with contextlib.suppress(OSError):  # one we may not remove stays: it harms nothing but space
                tmp.unlink()
