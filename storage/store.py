"""Storage, the one I/O layer: a root on any fsspec URI (local folders, s3://, ...) with bounded
S3 calls (uri_options.py), transient faults tried again within a budget (failures.py) and writes
that never leave a partial object. Inputs, outputs, manifests, RTMs, checkpoints and training
state all go through it (one file by its URI: `read_uri`, `write_uri`). Local writes are durable
(durable.py)."""
from __future__ import annotations

import os
import posixpath
import random
import time
from dataclasses import dataclass, field

import fsspec

from .failures import (REFUSED, REFUSED_ERRNOS, RETRY_FIRST_S, RETRY_MAX_S, STORAGE_RETRY_S, StorageError, StorageRefused,
                     transient)
from .uri_options import options_for, s3_options


def _parent_and_name(uri: str) -> tuple[str, str]:
    head, _, name = uri.rstrip("/").rpartition("/")
    if not name:
        raise ValueError(f"{uri!r}: not a file's path or URI")
    if not head:   # a bare local name: the current folder
        return ".", name
    if head.endswith(":/"):   # "s3://bucket-less": keep the scheme's slashes
        head += "/"
    return head, name


def read_uri(uri: str, options: dict | None = None) -> bytes:
    """One file's bytes by its path or URI, with the URI's fsspec options (an S3 endpoint, a
    profile: `options_for`), bounded calls and retries, as every other read."""
    parent, name = _parent_and_name(uri.removeprefix("file://"))
    return Store(parent, options_for(uri, options or {})).read(name)


def write_uri(uri: str, data: bytes, options: dict | None = None) -> None:
    """One file written whole by its path or URI: durably on a local disk, one PUT on an object store."""
    parent, name = _parent_and_name(uri.removeprefix("file://"))
    Store(parent, options_for(uri, options or {})).write_atomic(name, data)


def content_tag(info: dict) -> str:
    """What says an object is still the one an output was made from, from its listing or info:
    "size:ETag" (the store's own content tag: a new upload of other bytes gets a new one; GCS and
    Azure call it etag), the modification time where a store has no tag."""
    tag = str(info.get("ETag") or info.get("etag") or info.get("mtime") or "").strip('"')
    return f"{info.get('size', '')}:{tag}"


@dataclass
class Store:
    """A root URI plus fsspec options (e.g. {"client_kwargs": {"endpoint_url": ...}} for S3)."""
    root: str
    options: dict = field(default_factory=dict)
    retry_budget: float = STORAGE_RETRY_S     # seconds of backoff per object operation (S3 etc.)
    down: bool = field(default=False, init=False, repr=False)   # an operation spent its whole budget

    def __post_init__(self):
        proto = fsspec.core.split_protocol(self.root)[0]
        opts = s3_options(self.options) if proto in ("s3", "s3a") else self.options
        self.fs, self.path = fsspec.core.url_to_fs(self.root, **opts)
        self.path = self.path.rstrip("/") or "/"
        if proto in ("s3", "s3a"):
            self.fs.retries = 1  # one try per call at the s3fs level: botocore retries

    @property
    def protocol(self) -> str:
        # fsspec filesystems give a str, a tuple or (s3fs, some versions) a list
        p = self.fs.protocol
        return p if isinstance(p, str) else p[0]

    @property
    def is_local(self) -> bool:
        return self.protocol in ("file", "local")

    @property
    def bucket(self) -> str:
        return "" if self.is_local else self.path.split("/")[0]

    def probe(self) -> None:
        """One bounded call that fails fast when the storage cannot be reached (S3: HEAD
        the bucket; FileNotFoundError if it does not exist)."""
        if self.protocol in ("s3", "s3a"):
            self.fs.call_s3("head_bucket", Bucket=self.bucket)

    @property
    def endpoint(self) -> str:
        return (self.options.get("client_kwargs") or {}).get("endpoint_url") or self.options.get("endpoint_url") or ""

    def full(self, rel: str) -> str:
        return posixpath.join(self.path, rel) if rel else self.path

    def uri(self, rel: str = "") -> str:
        return self.full(rel) if self.is_local else f"{self.protocol}://{self.full(rel)}"

    def invalidate(self) -> None:
        if hasattr(self.fs, "invalidate_cache"):
            self.fs.invalidate_cache()

    def retrying(self, what: str, fn):
        """fn(), tried again on transient faults (see STORAGE_RETRY_S) until the budget is spent;
        local files are not retried. Once one operation has spent a whole budget unanswered, the
        storage counts as down: later operations get one try each (no waiting) until one is
        answered, so a run meets a down storage once, not once per write it has left."""
        if self.is_local:
            return fn()
        # the budget is wall time, the tries included: a try is itself several attempts (the S3
        # client's own, each up to its timeouts), so counting only the pauses between ours let a
        # 2 s budget take 10 s, and a 120 s one many minutes against a storage that hangs
        start, delay = time.monotonic(), RETRY_FIRST_S
        while True:
            try:
                result = fn()
                self.down = False
                return result
            except Exception as e:
                if not transient(e):
                    raise
                spent = time.monotonic() - start
                if spent >= self.retry_budget or self.down:
                    msg = " ".join(str(e).split())[:200]
                    how = (f"for {spent:.0f} s of retries" if not self.down else
                           "(no retries: an earlier operation went unanswered for a whole retry budget)")
                    self.down = True
                    raise StorageError(f"the storage at {self.endpoint or self.uri()} did not answer {what} {how}: "
                                       f"{type(e).__name__}: {msg}") from e
                time.sleep(min(random.uniform(0, delay), self.retry_budget - spent))
                delay = min(2 * delay, RETRY_MAX_S)
                self.invalidate()

    def exists(self, rel: str) -> bool:
        return self.retrying(f"a check of {rel}", lambda: self.fs.exists(self.full(rel)))

    def read(self, rel: str) -> bytes:
        return self.retrying(f"a read of {rel}", lambda: self.fs.cat_file(self.full(rel)))

    def read_head(self, rel: str, n: int) -> bytes:
        """The first `n` bytes (all of a shorter file)."""
        def head():
            with self.fs.open(self.full(rel), "rb") as f:
                return f.read(n)
        return self.retrying(f"a read of {rel}", head)

    def write_atomic(self, rel: str, data: bytes) -> None:
        """Never leaves a partial object: local files are written durably (write_durable);
        object stores commit a single PUT whole or not at all (a PUT tried again replaces the
        same object whole)."""
        path = self.full(rel)
        if self.is_local:
            self._local_write(rel, data)
        else:
            self.retrying(f"a write of {rel}", lambda: self.fs.pipe_file(path, data))

    def write_stream(self, rel: str, writer) -> None:
        """write_atomic for a file too large to hold: `writer(f)` writes it to an open file. A
        local file is written durably in place; for an object store it goes to a local temp
        file first, then up in one upload (multipart where the store does that)."""
        if self.is_local:
            self._local_write(rel, writer)
            return
        import tempfile
        with tempfile.NamedTemporaryFile(prefix="patchscaler-") as tmp:
            writer(tmp)
            tmp.flush()
            self.retrying(f"a write of {rel}", lambda: self.fs.put_file(tmp.name, self.full(rel)))

    def _local_write(self, rel: str, data) -> None:
        """write_durable (a failed write leaves the old file or nothing: its temp file is
        removed), with a refusal of the disk as StorageRefused."""
        from .durable import write_durable
        try:
            write_durable(self.full(rel), data)
        except OSError as e:
            if e.errno not in REFUSED_ERRNOS:
                raise
            raise StorageRefused(f"{self.uri()} {REFUSED} of {rel}: {e.strerror}") from e

    def check_writable(self) -> None:
        """Before a run computes anything: a local root is created if need be and a small temp
        file is written, fsync'd and removed in it, so a read-only, full or forbidden folder
        fails now, not after the first photo's compute. (An S3 bucket is checked by `probe`.)"""
        if not self.is_local:
            return
        import tempfile
        from .durable import makedirs_durable
        makedirs_durable(self.path)
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".probe-")
        try:
            os.write(fd, b"probe")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(tmp)

    def files(self, sub: str = "") -> list[str]:
        """Relative names of every file under the root (or under `sub`)."""
        if self.protocol in ("s3", "s3a"):
            return [rel for rel, _ in self.walk(sub)]

        if self.is_local:     # names only: fsspec's find builds an info dict per file first
            base = self.full(sub)
            return [self._rel(os.path.join(d, f)) for d, _, names in os.walk(base) for f in names]

        def listing():
            self.invalidate()
            base = self.full(sub)
            return [self._rel(p) for p in self.fs.find(base)] if self.fs.exists(base) else []
        return self.retrying(f"a listing of {sub or 'the root'}", listing)

    def walk(self, sub: str = "", page_size: int = 1000):
        """(relative name, content tag "size:ETag") of every object under the root (or `sub`), a
        listing page at a time: an S3 prefix of a million objects is never held whole (s3fs's
        `find` builds and caches every object's info), and each page is retried like any other
        call. Other object stores: their `find`, each object tagged as `content_tag` says. (Local
        inputs are signed by pipeline/listing.py's walk, from their stat.)"""
        base = self.full(sub)
        if self.protocol not in ("s3", "s3a"):
            for p, info in self.retrying(f"a listing of {sub or 'the root'}",
                                         lambda: self.fs.find(base, detail=True) if self.fs.exists(base) else {}).items():
                yield self._rel(p), content_tag(info)
            return
        bucket, _, key = base.partition("/")
        args = {"Bucket": bucket, "Prefix": key.strip("/") + "/" if key.strip("/") else "", "MaxKeys": page_size}
        while True:
            page = self.retrying(f"a listing of {sub or 'the root'}",
                                 lambda: self.fs.call_s3("list_objects_v2", **args))
            for c in page.get("Contents", []):
                if not c["Key"].endswith("/"):         # else a folder marker, not an object
                    yield self._rel(f"{bucket}/{c['Key']}"), content_tag({"size": c.get("Size", ""), **c})
            if not page.get("IsTruncated"):
                return
            args["ContinuationToken"] = page["NextContinuationToken"]

    def _rel(self, p: str) -> str:
        p = p.rstrip("/")
        return p[len(self.path) + 1:] if self.path != "/" else p.lstrip("/")
