"""When storage fails: the one storage failure (StorageError, exit 4), a local store that
refuses writes, and which faults a later try may not meet (`transient`), with the backoff the
stores use for them (store.py)."""
from __future__ import annotations

import errno
import re

# Past botocore's attempts, a transient fault on one object (a dropped connection, a timeout,
# a 5xx answer, SlowDown throttling) is tried again with exponential backoff and full jitter,
# 0.5 s doubling up to 15 s between tries, for up to `Store.retry_budget` seconds per object
# operation, its tries included (STORAGE_RETRY_S by default; `upscale --storage-retry`). Past
# that the storage counts as down: StorageError, and the run stops with exit 4; that Store's later
# operations get one try each until one is answered (Store.retrying).
STORAGE_RETRY_S = 120.0
RETRY_FIRST_S, RETRY_MAX_S = 0.5, 15.0
_TRANSIENT_NAMES = ("EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError", "ConnectTimeoutError",
                    "ClientConnectorError", "ServerDisconnectedError", "ClientOSError", "ClientPayloadError",
                    "ServerTimeoutError", "IncompleteRead", "ResponseStreamingError", "TimeoutError",
                    "ConnectionError", "ConnectionResetError", "ConnectionRefusedError", "ConnectionAbortedError",
                    "BrokenPipeError")
_TRANSIENT_TEXT = re.compile(r"SlowDown|Slow Down|ServiceUnavailable|Service Unavailable|InternalError|RequestTimeout|"
                             r"Throttl|reduce your request rate|Internal Server Error|Bad Gateway|Gateway Time|"
                             r"\b50[0234]\b", re.IGNORECASE)


class StorageError(OSError):
    """SRC, DST or an RTM cannot be reached, read or written: refused before the run, or
    unreachable for a whole retry budget during it. Not the photo's fault: the run stops with
    one line and exit 4, and the next run redoes only what is not written."""
    exit_code = 4


# a local store that answers these to one write will answer them to every write: the run
# stops (exit 4) rather than failing each photo in turn
REFUSED_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
REFUSED = "refused a write"    # how the message of StorageRefused says it


class StorageRefused(StorageError):
    """A local store refuses writes: disk full, read-only, no permission. A StorageError like
    any other (exit 4, one line); its own kind only so the stop line can say what will let the
    next run through (DST taking writes again, not the storage coming back)."""


def transient(e: BaseException) -> bool:
    """A fault that a later try may not meet: connection, timeout, 5xx or throttling, anywhere in
    the exception's chain. A missing object or a refused permission is not one."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (FileNotFoundError, PermissionError, StorageError)):
            return False
        if type(e).__name__ in _TRANSIENT_NAMES or _TRANSIENT_TEXT.search(str(e)):
            return True
        e = e.__cause__ or e.__context__
    return False
