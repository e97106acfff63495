"""Writing a file so that nobody ever sees half of it: the content goes to a fresh temporary
file beside it, renamed into place. mkstemp makes that file under a name nobody can guess, and the
rename replaces a link in the file's place instead of writing through it, so a link planted in a
shared folder never redirects a write; a kill leaves the old file or the new one (and at most a
stray temporary file). Files that grow in place (a bench file) are opened with O_NOFOLLOW."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, BinaryIO

from .errors import EvoproxyError


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


def write_atomically(path: str | os.PathLike, data: bytes | str) -> None:
    """Replace `path` with `data` (text is written as UTF-8) in one step."""
    with replacing(Path(path)) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)


def save_figure(fig, path: str | os.PathLike) -> None:
    """Write a matplotlib figure to `path` in one step, in the format its suffix names (else PNG),
    and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with replacing(path) as tmp:
            fig.savefig(tmp, format=path.suffix.lstrip(".").lower() or "png", dpi=120)
    finally:
        plt.close(fig)


@contextmanager
def filling(folder: Path) -> Iterator[Path]:
    """A fresh temporary folder inside `folder` for a writer that makes several files (as
    transformers' save_pretrained does); when the block ends, each of its entries is renamed into
    `folder`, replacing what stands there (a link included, never followed)."""
    tmp = Path(tempfile.mkdtemp(prefix=".evoproxy-", dir=folder))
    try:
        yield tmp
        for entry in tmp.iterdir():
            os.replace(entry, folder / entry.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def refuse_link(path: str | os.PathLike, what: str) -> Path:
    """`path`, or a one-line error where a symbolic link stands in its place: nothing is ever
    written through one (`what` names the path in the message)."""
    path = Path(path)
    if path.is_symlink():
        raise EvoproxyError(
            f"{what} {path} is a symbolic link, which is never written through: remove it or give another path"
        )
    return path


def output_file(path: str | None, flag: str) -> None:
    """Refuse, before any work, a file flag's `path` that cannot be written: its folder missing (it
    is not created, so that a typo does not scatter outputs) or not writable, a folder itself, or a
    symbolic link (the file would replace the link, not write through it: say so instead)."""
    if path is None:
        return
    refuse_link(path, flag)
    folder = Path(path).parent
    if Path(path).is_dir() or not folder.is_dir() or not os.access(folder, os.W_OK):
        why = "is a folder" if Path(path).is_dir() else f"needs an existing, writable folder {folder}"
        raise EvoproxyError(f"{flag} {path} {why}: give a file in a folder you can write to")


def output_folder(path: str, flag: str) -> None:
    """Create the folder of a folder flag, or refuse in one line the one that cannot be written."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EvoproxyError(f"{flag} {path}: {exc.strerror}; give a folder you can write to") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise EvoproxyError(f"{flag} {path} is not writable; give a folder you can write to")


def open_in_place(path: Path, mode: str = "a") -> IO:
    """`path` opened to grow ("a") or change ("r+b") in place, never through a symbolic link."""
    flags = {"a": os.O_WRONLY | os.O_APPEND, "r+b": os.O_RDWR}[mode]
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW)
    except OSError as exc:
        refuse_link(path, "the file")
        raise EvoproxyError(f"cannot open {path} to write ({exc.strerror})") from None
    return os.fdopen(fd, mode)


CACHE_ENV = "EVOPROXY_CACHE_DIR"
CHECKSUM_MISMATCH = "it does not match the checksum recorded beside it (changed or damaged since it was written)"


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """Where computed results are kept (statistics, distilled images): `override`, else
    $EVOPROXY_CACHE_DIR, else ~/.cache/evoproxy."""
    return Path(override or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "evoproxy")


def checksum_path(path: Path) -> Path:
    """Where the sha256 of a cache entry is recorded: beside it, as NAME.sha256."""
    return path.with_name(path.name + ".sha256")


def save_with_checksum(path: Path, write: Callable[[Path], None]) -> str:
    """A cache entry that `write(tmp)` writes to a temporary file, put in place as `path`, then its
    sha256 beside it, so that a reader in between finds no match; returns the sha256. The checksum
    guards against damage and stale writes, not against a writer: anyone who can change the entry
    can change its checksum too. It is hashed from the file, so a large entry (a big model's
    statistics) is never held in memory as bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        write(tmp)
        with tmp.open("rb") as file:
            digest = _sha256(file)
    write_atomically(checksum_path(path), digest.encode("ascii"))
    return digest


def open_with_checksum(path: Path) -> tuple[BinaryIO | None, str]:
    """A cache entry open for reading at its start, and its sha256, if its bytes match the sha256
    recorded beside them; else None and why not (CHECKSUM_MISMATCH where both files are there but
    differ). Hashed in chunks and read from the same open file: a large entry is never held in memory
    as bytes, and one put in its place after the check is not read."""
    try:
        recorded = checksum_path(path).read_text(encoding="ascii").strip()
        file = path.open("rb")
    except FileNotFoundError:
        return None, "it has no checksum beside it" if path.is_file() else "it is not there"
    except (OSError, UnicodeDecodeError) as exc:
        return None, str(exc)
    if _sha256(file) != recorded:
        file.close()
        return None, CHECKSUM_MISMATCH
    file.seek(0)
    return file, recorded


def _sha256(file: BinaryIO) -> str:
    """The sha256 of what is left to read of `file`, read 1 MiB at a time (hashlib.file_digest is 3.11's)."""
    digest = hashlib.sha256()
    while chunk := file.read(1 << 20):
        digest.update(chunk)
    return digest.hexdigest()


def remove_leftovers(path: Path) -> None:
    """Remove the temporary files of `path` that writers killed inside `replacing` left behind.
    Call it only where no other writer of `path` can be in `replacing` (under its writer's lock)."""
    prefix, suffix = _temporary_name(path)
    for tmp in path.parent.glob(f"{glob.escape(prefix)}*{glob.escape(suffix)}"):
        if tmp.is_symlink() or tmp.is_file():  # a link is removed, never followed; a folder is left
            with contextlib.suppress(OSError):  # one we may not remove stays: it harms nothing but space
                tmp.unlink()
