"""Writing a file so that nobody ever sees half of it: the bytes go to a fresh temporary file
beside it, renamed into place. mkstemp makes that file under a name nobody can guess, so a link
planted in a shared folder is never followed; a kill leaves the old file or the new one."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data` in one step (readable by others, as a plain write would be)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would keep the file from the people it is shared with
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
