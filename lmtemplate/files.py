"""Files that readers never see half-written: every file lmtemplate writes goes through ``atomic_file``."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import IO, Iterator


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` as UTF-8 through ``atomic_file``."""
    with atomic_file(Path(path)) as f:
        f.write(text)


@contextlib.contextmanager
def atomic_file(path: Path, binary: bool = False) -> Iterator[IO]:
    """Write through a temporary file in the same folder, renamed over ``path`` when whole: readers never see half a file.

    The temporary file is made by ``open``, so the file gets the mode the umask gives (0644 under umask 022), as
    other files do; ``tempfile.mkstemp`` would make it 0600.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb" if binary else "x", encoding=None if binary else "utf-8") as f:
            yield f
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def stale_temporaries(folder: Path) -> list[Path]:
    """``atomic_file``'s temporary files in ``folder`` whose writer is no longer running (killed mid-write)."""
    stale = []
    for path in folder.glob(".*.tmp"):
        m = re.fullmatch(r"\..+\.(\d+)\.[0-9a-f]{8}\.tmp", path.name)
        if m and not _running(int(m[1])):
            stale.append(path)
    return stale


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}  # the disk's fault, not the code's


def cannot_write(path, error: OSError, needed: int | None = None) -> str:
    """Why ``path`` could not be written, with the space it needed (when known) and the space free."""
    path = Path(path)
    folder = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    need = f"it needs about {mib(needed)}, " if needed else ""
    return f"cannot write {path}: {error.strerror}; {need}{mib(shutil.disk_usage(folder).free)} free on the disk of {folder}"


def mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"
