"""File writes that either land whole or fail as one clear error naming the file.

Every write of a store goes through :func:`atomic_write_bytes` (a hidden temporary name, fsync,
rename), so a failed write never leaves half a file under a real name. When the operating system
refuses (disk full, a file size limit, permission denied, an immutable folder, a read-only file
system, a corpus file that vanished or shrank), the code that touched the file raises an
:class:`EnvironmentFault`: the file, what went wrong, and whether the store can be resumed. The
fault pickles whole, so one raised on a Dask worker reaches the driver as itself.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_UMASK = os.umask(0)
os.umask(_UMASK)

RESUME = "the store is consistent and can be resumed: fix this and run the same command again"
NO_STORE = "no store was written, so there is nothing to resume: fix this and run the command again"


class EnvironmentFault(RuntimeError):
    """The machine, not the data, stopped the job: one line naming the file.

    Args:
        path: the file or folder the operating system refused.
        reason: what went wrong, e.g. ``cannot write: no space left on device (ENOSPC)``.
        resumable: True when the store is consistent and re-running the same command resumes it
            (partitions are committed by the manifest, which is only ever replaced whole).
    """

    def __init__(self, path: str, reason: str, resumable: bool):
        super().__init__(str(path), reason, resumable)
        self.path, self.reason, self.resumable = str(path), reason, resumable

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}; {RESUME if self.resumable else NO_STORE}"


def describe_oserror(e: OSError) -> str:
    """``no space left on device (ENOSPC)``: the system's words and the errno's name."""
    if e.errno is None:
        return str(e)
    return f"{os.strerror(e.errno).lower()} ({errno.errorcode.get(e.errno, e.errno)})"


@contextlib.contextmanager
def reporting(path: Path | str, action: str, resumable: bool = True) -> Iterator[None]:
    """Turn an ``OSError`` inside the block into an :class:`EnvironmentFault` about ``path``
    (or the more precise file the system names, unless that is a hidden temporary)."""
    try:
        yield
    except EnvironmentFault:
        raise
    except OSError as e:
        named = str(e.filename) if e.filename and not str(e.filename).endswith(".tmp") else path
        raise EnvironmentFault(named, f"cannot {action}: {describe_oserror(e)}", resumable) from e


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes, resumable: bool = True) -> None:
    """Write ``data`` to ``path`` via a hidden temporary file in the same folder and a rename.

    Raises:
        EnvironmentFault: the folder or the file cannot be written; nothing is left behind.
    """
    path = Path(path)
    with reporting(path, "write", resumable):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o666 & ~_UMASK)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def atomic_write_json(path: Path, obj: Any, resumable: bool = True) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode(), resumable)


def probe_writable(folder: Path, resumable: bool = True) -> None:
    """Create and remove a file in ``folder``: a read-only or immutable folder fails here, early.

    Raises:
        EnvironmentFault: ``folder`` cannot be written.
    """
    with reporting(folder, "write", resumable):
        fd, tmp = tempfile.mkstemp(prefix=".probe.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(tmp)
