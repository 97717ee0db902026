"""Drop the known-harmless lines that Ray's C++ core writes straight to file descriptor 2 of
the driver, where Python's logging levels cannot reach them.

Today that is one line, printed on every run by Ray Data's actor pools (Ray 2.60, upstream
issue ray-project/ray#57733: Ray Data itself passes ObjectRefs to its actors' constructors):

    [... E ...] core_worker.cc:NNNN: Actor with class name: 'MapWorker(...)' ... has
    constructor arguments in the object store and max_restarts > 0. ...

Everything else passes through unchanged, bytes as they come (tqdm's carriage returns too).
Only the CLI turns this on, and not with --verbose."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from contextlib import contextmanager

KNOWN_NOISE = [
    rb"core_worker\.cc:\d+: Actor with class name: .* has constructor arguments in the object store",
]

# The filter runs in a process of its own, so that whatever the driver writes last before a
# hard exit (a C++ fatal error, say) still gets through: the filter reads until every writer
# has closed the pipe. It ignores Ctrl-C (that is for the driver).
_PUMP = r"""
import os, re, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
pats = [re.compile(os.fsencode(p)) for p in sys.argv[1:]]
noise = lambda line: any(p.search(line) for p in pats)
pending = b""
while True:
    chunk = os.read(0, 65536)
    if not chunk:
        break
    pending += chunk
    *lines, pending = pending.split(b"\n")
    out = b"".join(line + b"\n" for line in lines if not noise(line))
    if pending and not pending.startswith(b"["):  # not the start of a C++ log line: pass it now
        out, pending = out + pending, b""
    if out:
        os.write(1, out)
if pending and not noise(pending):
    os.write(1, pending)
"""


@contextmanager
def drop_known_noise(enabled: bool = True):
    """While inside, file descriptor 2 goes through the filter process to the real stderr."""
    if not enabled or os.name != "posix":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    r, w = os.pipe()
    pump = subprocess.Popen([sys.executable, "-c", _PUMP, *[os.fsdecode(p) for p in KNOWN_NOISE]],
                            stdin=r, stdout=saved, stderr=saved, close_fds=True, start_new_session=True)
    os.close(r)
    os.dup2(w, 2)
    os.close(w)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):  # a closed stderr has nothing left to lose
            sys.stderr.flush()
        os.dup2(saved, 2)  # our end of the pipe closes: the filter drains it and exits
        os.close(saved)
        # a child that inherited the pipe keeps it open: don't hang on it; the filter exits by
        # itself once that child is gone (killing it would break the child's stderr)
        with contextlib.suppress(subprocess.TimeoutExpired):
            pump.wait(timeout=5)
