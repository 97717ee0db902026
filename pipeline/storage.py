"""Object storage for the upscale job, on any fsspec URI (local folders, s3://, ...):
listing inputs, naming outputs, atomic writes and the manifest. No Ray here, so the
in-process engine and the Ray pipeline share every rule about names and files."""
from __future__ import annotations

import hashlib
import io
import json
import posixpath
import time
from dataclasses import asdict, dataclass, field

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from patchscaler.checkpoint import write_bytes_atomic

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif"}
MANIFEST_DIR = "_manifest"


@dataclass
class Store:
    """A root URI plus fsspec options (e.g. {"client_kwargs": {"endpoint_url": ...}} for S3)."""
    root: str
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        self.fs, self.path = fsspec.core.url_to_fs(self.root, **self.options)
        self.path = self.path.rstrip("/") or "/"

    @property
    def protocol(self) -> str:
        # fsspec filesystems give a str, a tuple or (s3fs, some versions) a list
        p = self.fs.protocol
        return p if isinstance(p, str) else p[0]

    @property
    def is_local(self) -> bool:
        return self.protocol in ("file", "local")

    def full(self, rel: str) -> str:
        return posixpath.join(self.path, rel)

    def uri(self, rel: str) -> str:
        return self.full(rel) if self.is_local else f"{self.protocol}://{self.full(rel)}"

    def exists(self, rel: str) -> bool:
        return self.fs.exists(self.full(rel))

    def read(self, rel: str) -> bytes:
        return self.fs.cat_file(self.full(rel))

    def write_atomic(self, rel: str, data: bytes) -> None:
        """Never leaves a partial object: local files go through a temp file and a rename in
        the same folder; object stores commit a single PUT whole or not at all."""
        path = self.full(rel)
        if self.is_local:
            write_bytes_atomic(path, data)
        else:
            self.fs.pipe_file(path, data)

    def list_images(self) -> list[str]:
        """Relative paths of files with an image extension under the root, sorted; the
        manifest folder and hidden files are skipped."""
        if hasattr(self.fs, "invalidate_cache"):
            self.fs.invalidate_cache()
        if self.fs.isfile(self.path):
            return [""]
        out = []
        for p in self.fs.find(self.path):
            rel = posixpath.relpath(p, self.path)
            parts = rel.split("/")
            if parts[0] == MANIFEST_DIR or any(s.startswith(".") for s in parts):
                continue
            if posixpath.splitext(rel)[1].lower() in IMAGE_EXTENSIONS:
                out.append(rel)
        return sorted(out)


class UnsafePath(ValueError):
    """An input key that would escape the output prefix."""


def safe_relpath(rel: str) -> str:
    """Refuse keys that would escape the output prefix ('..' segments, absolute paths, NUL)."""
    if "\x00" in rel or rel.startswith("/") or "\\" in rel:
        raise UnsafePath(f"unsafe key {rel!r}")
    if any(seg in ("..", ".") for seg in rel.split("/")):
        raise UnsafePath(f"unsafe key {rel!r}: '..' or '.' segment")
    return rel


def output_relpath(input_rel: str, fmt: str, src_is_file: bool = False, src_name: str = "") -> str:
    from patchscaler.imageio import WRITABLE
    rel = src_name if src_is_file else safe_relpath(input_rel)
    stem, ext = posixpath.splitext(rel)
    new_ext = WRITABLE[fmt]
    # keep the user's spelling of the extension when the format is unchanged (.jpeg, .JPG)
    from PIL import Image
    if Image.registered_extensions().get(ext.lower()) == fmt:
        new_ext = ext
    return stem + new_ext


# --- manifest -------------------------------------------------------------------------

MANIFEST_SCHEMA = pa.schema([
    ("run_id", pa.string()), ("input", pa.string()), ("output", pa.string()),
    ("status", pa.string()), ("error", pa.string()), ("notes", pa.string()),
    ("width", pa.int32()), ("height", pa.int32()), ("out_width", pa.int32()), ("out_height", pa.int32()),
    ("n_simple", pa.int32()), ("n_medium", pa.int32()), ("n_hard", pa.int32()),
    ("group_counts", pa.list_(pa.int32())),
    ("sec_decode", pa.float64()), ("sec_grm", pa.float64()), ("sec_dit", pa.float64()),
    ("sec_stitch", pa.float64()), ("sec_write", pa.float64()),
    ("model_version", pa.string()), ("seed", pa.int64()), ("finished_at", pa.float64()),
])


@dataclass
class ManifestRow:
    run_id: str
    input: str
    output: str = ""
    status: str = "ok"          # ok | error | skipped
    error: str = ""
    notes: str = ""
    width: int = 0
    height: int = 0
    out_width: int = 0
    out_height: int = 0
    n_simple: int = 0
    n_medium: int = 0
    n_hard: int = 0
    group_counts: list = field(default_factory=list)
    sec_decode: float = 0.0
    sec_grm: float = 0.0
    sec_dit: float = 0.0
    sec_stitch: float = 0.0
    sec_write: float = 0.0
    model_version: str = ""
    seed: int = 0
    finished_at: float = 0.0

    def set_groups(self, counts: list[int]):
        self.group_counts = [int(c) for c in counts]
        self.n_simple = self.group_counts[0] if counts else 0
        self.n_hard = self.group_counts[-1] if len(counts) > 1 else 0
        self.n_medium = sum(self.group_counts[1:-1]) if len(counts) > 2 else 0


def row_key(input_rel: str) -> str:
    return hashlib.sha1(input_rel.encode("utf-8", "surrogatepass")).hexdigest()


def write_row(dst: Store, row: ManifestRow) -> None:
    """One small JSON file per image, written after its output: a run killed midway keeps
    every finished image's record. `consolidate` folds them into Parquet at the end."""
    row.finished_at = time.time()
    dst.write_atomic(f"{MANIFEST_DIR}/rows/{row_key(row.input)}.json", json.dumps(asdict(row)).encode())


def read_rows(dst: Store) -> dict[str, dict]:
    """Latest record per input: consolidated Parquet manifests, then loose row files."""
    latest: dict[str, dict] = {}
    base = dst.full(MANIFEST_DIR)
    if hasattr(dst.fs, "invalidate_cache"):
        dst.fs.invalidate_cache()
    if not dst.fs.exists(base):
        return latest
    files = sorted(dst.fs.find(base))
    for p in files:
        if p.endswith(".parquet"):
            for r in pq.read_table(io.BytesIO(dst.fs.cat_file(p))).to_pylist():
                _keep_latest(latest, r)
    for p in files:
        if p.endswith(".json") and "/rows/" in p:
            try:
                _keep_latest(latest, json.loads(dst.fs.cat_file(p)))
            except ValueError:
                continue
    return latest


def _keep_latest(latest: dict, r: dict) -> None:
    old = latest.get(r["input"])
    if old is None or (r.get("finished_at") or 0) >= (old.get("finished_at") or 0):
        latest[r["input"]] = r


def consolidate(dst: Store, run_id: str) -> str | None:
    """Write this run's rows as one Parquet file and remove the loose row files it holds."""
    base = dst.full(f"{MANIFEST_DIR}/rows")
    if hasattr(dst.fs, "invalidate_cache"):
        dst.fs.invalidate_cache()
    if not dst.fs.exists(base):
        return None
    rows, paths = [], []
    for p in dst.fs.find(base):
        if p.endswith(".json"):
            r = json.loads(dst.fs.cat_file(p))
            if r["run_id"] == run_id:
                rows.append(r)
                paths.append(p)
    if not rows:
        return None
    rel = f"{MANIFEST_DIR}/manifest-{run_id}.parquet"
    if dst.exists(rel):  # a resumed run with the same id: keep what it already recorded
        kept = {r["input"]: r for r in pq.read_table(io.BytesIO(dst.read(rel))).to_pylist()}
        kept.update({r["input"]: r for r in rows})
        rows = list(kept.values())
    rows.sort(key=lambda r: r["input"])
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA), buf)
    dst.write_atomic(rel, buf.getvalue())
    for p in paths:
        dst.fs.rm(p)
    if dst.is_local and not dst.fs.ls(base):  # don't leave an empty rows/ folder behind
        dst.fs.rmdir(base)
    return dst.uri(rel)


def done_inputs(dst: Store) -> set[str]:
    """Inputs whose latest record is ok and whose output exists: a resumed run skips them."""
    done = set()
    for inp, r in read_rows(dst).items():
        if r["status"] == "ok" and r["output"] and dst.exists(r["output"]):
            done.add(inp)
    return done
