"""Local writes that never leave a partial file (checkpoints, training state, outputs,
manifests), under `Store` (store.py), the one I/O layer; and a local file's hash. Local writes go to a temp file in the same folder, fsync'd, renamed into place,
then the folder is fsync'd, so after a crash or power loss a path holds the old file or the
whole new one; object stores commit a single PUT whole or not at all."""
from __future__ import annotations

import hashlib
import os
import tempfile


def _read_umask() -> int:
    # read once at import: os.umask can only be read by setting it (process-wide)
    m = os.umask(0o022)
    os.umask(m)
    return m


_UMASK = _read_umask()


# --- durable local writes ---------------------------------------------------------------

def fsync_dir(path: str) -> None:
    """Make a folder's entries (a rename, a new file or folder) durable. POSIX only: other
    systems cannot open a folder for fsync."""
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def makedirs_durable(path: str) -> None:
    """os.makedirs, then fsync the parent of every folder it created."""
    path = os.path.abspath(path)
    missing = []
    p = path
    while not os.path.isdir(p):
        missing.append(p)
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    os.makedirs(path, exist_ok=True)
    for d in reversed(missing):
        fsync_dir(os.path.dirname(d))


def write_durable(path: str, data) -> None:
    """Write a local file so that after a crash or power loss it is either the old file or
    the whole new one: a temp file in the same folder, fsync'd, renamed over the target, then
    the folder fsync'd so the rename itself survives. `data`: bytes, or a function that writes
    to the open file (a large file need never be held whole)."""
    d = os.path.dirname(os.path.abspath(path))
    makedirs_durable(d)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".part-")
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; outputs get the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(d)


def sha256_file(path: str | os.PathLike) -> str:
    """A local file's SHA-256, read a block at a time (never held whole)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()
