"""Drop the known-harmless lines that Ray's C++ core writes straight to file descriptor 2 of
the driver, where Python's logging levels cannot reach them.

Today that is one line, printed on every run by Ray Data's actor pools (Ray 2.60, upstream
issue ray-project/ray#57733: Ray Data itself passes ObjectRefs to its actors' constructors):

    [... E ...] core_worker.cc:NNNN: Actor with class name: 'MapWorker(...)' ... has
    constructor arguments in the object store and max_restarts > 0. ...

Everything else passes through unchanged, bytes as they come (tqdm's carriage returns too).
Only the CLI turns this on, and not with --verbose."""
from __future__ import annotations

import os
import re
import sys
import threading
from contextlib import contextmanager

KNOWN_NOISE = [
    re.compile(rb"core_worker\.cc:\d+: Actor with class name: .* has constructor arguments in the object store"),
]


def _is_noise(line: bytes) -> bool:
    return any(p.search(line) for p in KNOWN_NOISE)


class _Filter:
    def __init__(self):
        sys.stderr.flush()
        self.saved = os.dup(2)
        r, w = os.pipe()
        os.dup2(w, 2)
        os.close(w)
        self.r = r
        self.thread = threading.Thread(target=self._pump, name="stderr-filter", daemon=True)
        self.thread.start()

    def _pump(self):
        pending = b""
        while True:
            try:
                chunk = os.read(self.r, 65536)
            except OSError:
                break
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            out = b"".join(line + b"\n" for line in lines if not _is_noise(line))
            if pending and not pending.startswith(b"["):  # not the start of a C++ log line
                out += pending
                pending = b""
            if out:
                os.write(self.saved, out)
        if pending and not _is_noise(pending):
            os.write(self.saved, pending)

    def close(self):
        try:
            sys.stderr.flush()
        except Exception:
            pass
        os.dup2(self.saved, 2)  # closes the pipe's write end: the pump reads EOF and ends
        self.thread.join(timeout=5)
        os.close(self.r)
        os.close(self.saved)


@contextmanager
def drop_known_noise(enabled: bool = True):
    if not enabled or os.name != "posix":
        yield
        return
    f = _Filter()
    try:
        yield
    finally:
        f.close()
