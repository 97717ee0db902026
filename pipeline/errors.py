"""The errors that stop a whole command, each with a one-line message for the user: UsageError
(exit 2: fix the command) and, from an exception of the storage libraries, StorageError (exit 4:
storage unreachable or refusing, storage/failures.py)."""
from __future__ import annotations

from storage import StorageError, Store


class UsageError(Exception):
    """The command cannot work as given (exit 2)."""
    exit_code = 2


def one_line(e: BaseException, limit: int = 300) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def storage_error(e: BaseException, what: str, store: Store | None = None) -> Exception:
    """A one-line UsageError / StorageError for an exception from fsspec, s3fs or botocore."""
    if isinstance(e, (UsageError, StorageError)):
        return e
    msg, name = one_line(e), type(e).__name__
    if isinstance(e, FileNotFoundError):
        return UsageError(f"{what} does not exist ({msg})")
    if isinstance(e, PermissionError):
        return StorageError(f"{what}: access denied ({msg})")
    if name == "NoCredentialsError" or "Unable to locate credentials" in msg:
        return StorageError(f"{what}: no S3 credentials found: set AWS_ACCESS_KEY_ID and "
                            "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE / --s3-profile")
    where = f" at {store.endpoint}" if store is not None and store.endpoint else ""
    return StorageError(f"{what}: cannot reach the storage{where}: {name}: {msg}")
