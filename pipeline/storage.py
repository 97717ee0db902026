"""The upscale job's rules about files, on a `storage.Store` (any fsspec URI): listing
inputs, naming outputs and the manifest. No Ray here, so the in-process engine and the Ray
pipeline share every rule about names and files.

Rules (the README's "Use" section says the same):

- Inputs are the files under SRC whose names end in an image extension. Hidden names (a part
  starting with '.') and DST's own `_manifest` folder are not read. A symlink is followed only
  while it stays inside SRC; a symlink that leaves SRC, a broken one, a folder link that loops
  back, a hidden image name and an object key with '..' / '.' segments are not read, and each
  gets a manifest row with status `skipped` and the reason.
- An output is named after its input with the output format's extension. When the extension
  changes (GIF -> PNG, wrong extension, --format) and another input has the same name before
  its extension (b.gif beside b.png), the output keeps the input's extension: b.gif -> b.gif.png.
  An output name that another input's recorded output already holds is never overwritten: that
  image gets an error row instead.
- Local writes go to a temp file in the same folder, fsync'd, renamed into place, then the
  folder is fsync'd; object stores commit a single PUT whole or not at all.
- Manifest rows are written one small JSON file per image under `_manifest/rows/RUN/`, before
  the image's output; a run folds its own rows into `_manifest/manifest-RUN.parquet` at the end,
  and the next run folds the rows that a killed run left behind."""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import posixpath
import re
import stat
import time
from dataclasses import asdict, dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from storage import Store

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif"}
MANIFEST_DIR = "_manifest"


# --- listing ------------------------------------------------------------------------

def list_inputs(store: Store) -> tuple[list[str], list[tuple[str, str]]]:
    """(inputs, skipped): the relative names of the images under the root, sorted, and
    the entries that are not read, each with its reason (see the module's rules)."""
    store.invalidate()
    if store.is_local:
        inputs, skipped = _walk_local(store.path)
    else:
        inputs, skipped = [], []
        for p in store.fs.find(store.path):
            rel = p[len(store.path) + 1:] if p.startswith(store.path + "/") else p
            parts = rel.split("/")
            if parts[0] == MANIFEST_DIR or not _is_image_name(rel):
                continue
            try:
                safe_relpath(rel)
            except UnsafePath as e:
                skipped.append((rel, f"{e}: not read"))
                continue
            if any(s.startswith(".") for s in parts):
                skipped.append((rel, "hidden name: not read"))
                continue
            inputs.append(rel)
    return sorted(inputs), sorted(skipped)

def list_images(store: Store) -> list[str]:
    """The inputs of `list_inputs` (a single file: [""])."""
    if store.fs.isfile(store.path):
        return [""]
    return list_inputs(store)[0]


def _is_image_name(name: str) -> bool:
    return posixpath.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _walk_local(root: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Local listing that never leaves SRC: symlinks are followed only when their target
    resolves inside SRC, and a folder link is entered only if it does not loop back to a
    folder being walked."""
    real_root = os.path.realpath(root)
    inputs, skipped = [], []

    def walk(folder: str, prefix: str, chain: tuple[str, ...]):
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as e:
            skipped.append((prefix or "./", f"cannot list folder: {e.strerror or e}"))
            return
        for e in entries:
            rel = prefix + e.name
            if not prefix and e.name == MANIFEST_DIR:
                continue
            link = e.is_symlink()
            target = os.path.realpath(e.path) if link else e.path
            try:
                st = os.stat(e.path)  # follows links
            except OSError:
                if _is_image_name(e.name):
                    skipped.append((rel, "broken symlink: not read"))
                continue
            is_dir = stat.S_ISDIR(st.st_mode)
            if e.name.startswith("."):
                if is_dir or _is_image_name(e.name):
                    skipped.append((rel + ("/" if is_dir else ""), "hidden name: not read"))
                continue
            if link and not _inside(target, real_root):
                if is_dir or _is_image_name(e.name):
                    kind = "folder" if is_dir else "file"
                    skipped.append((rel + ("/" if is_dir else ""), f"symlinked {kind} leaves SRC (-> {target}): not read"))
                continue
            if is_dir:
                real = os.path.realpath(e.path)
                if real in chain:
                    skipped.append((rel + "/", "symlinked folder loops back into its own path: not read"))
                    continue
                walk(e.path, rel + "/", chain + (real,))
            elif stat.S_ISREG(st.st_mode) and _is_image_name(e.name):
                inputs.append(rel)

    walk(root, "", (real_root,))
    return inputs, skipped


def overlap(src: Store, dst: Store) -> str | None:
    """Why SRC and DST may not be used together (None if they are apart): DST inside SRC
    would make every run re-read its own outputs as new inputs, SRC inside DST lets outputs
    overwrite inputs."""
    if src.protocol != dst.protocol or (not src.is_local and src.endpoint != dst.endpoint):
        return None
    if src.is_local:
        a, b, sep = os.path.realpath(src.path), os.path.realpath(dst.path), os.sep
    else:
        a, b, sep = src.path.strip("/"), dst.path.strip("/"), "/"
    if a == b:
        return f"DST {dst.uri()} is SRC: outputs would overwrite inputs and be read back as inputs"
    if b.startswith(a.rstrip(sep) + sep):
        return (f"DST {dst.uri()} is inside SRC {src.uri()}: every run would upscale the previous "
                "run's outputs again; choose a DST outside SRC")
    if a.startswith(b.rstrip(sep) + sep):
        return f"SRC {src.uri()} is inside DST {dst.uri()}: outputs could overwrite inputs; choose a DST outside SRC"
    return None


class UnsafePath(ValueError):
    """An input key that would escape the output prefix."""


def safe_relpath(rel: str) -> str:
    """Refuse keys that would escape the output prefix ('..' segments, absolute paths, NUL)."""
    if "\x00" in rel or rel.startswith("/") or "\\" in rel:
        raise UnsafePath(f"unsafe key {rel!r}")
    if any(seg in ("..", ".", "") for seg in rel.split("/")):
        raise UnsafePath(f"unsafe key {rel!r}: '..', '.' or empty segment")
    return rel


# --- output names -----------------------------------------------------------------------

class OutputCollision(ValueError):
    """The output name an input would get is held by another input's output."""


def name_plans(inputs: list[str], owners: dict[str, str]) -> dict[str, dict]:
    """For each input, what its output may be called, decided from all names before the run:

    keep_ext: the output keeps the input's extension when the format changes (another input
      shares its stem, or an input is named exactly like its stem), so b.gif -> b.gif.png
      beside b.png -> b.png.
    taken: output names this input may not write, with their owner: outputs other inputs
      already have (from the manifest, `owners` = {output: input}) and, for keep_ext inputs,
      other inputs' own names (b.gif.png the input beside b.gif).

    Then no two inputs of a run can write the same name: an unchanged name is the input's own
    (unique); a changed name stem+ext is used only when no other input has that stem and no
    input is named like the stem; a kept-extension name input+ext is refused when it is an
    input's name."""
    stems: dict[str, int] = {}
    for r in inputs:
        s = posixpath.splitext(r)[0]
        stems[s] = stems.get(s, 0) + 1
    names = set(inputs)
    by_stem: dict[str, list[tuple[str, str]]] = {}
    for out, owner in owners.items():
        by_stem.setdefault(posixpath.splitext(out)[0], []).append((out, owner))
    by_input_stem: dict[str, list[str]] = {}
    for r in inputs:
        by_input_stem.setdefault(posixpath.splitext(r)[0], []).append(r)
    plans = {}
    for r in inputs:
        stem = posixpath.splitext(r)[0]
        keep = stems[stem] > 1 or stem in names
        taken = {o: w for s in ((stem, r) if keep else (stem,)) for o, w in by_stem.get(s, []) if w != r}
        if keep:
            taken.update({n: n for n in by_input_stem.get(r, []) if n != r})
        plans[r] = {"keep_ext": keep, "taken": taken}
    return plans


def output_relpath(input_rel: str, fmt: str, keep_ext: bool = False) -> str:
    from PIL import Image

    from patchscaler.imageio import WRITABLE
    rel = safe_relpath(input_rel)
    stem, ext = posixpath.splitext(rel)
    # keep the user's spelling of the extension when the format is unchanged (.jpeg, .JPG)
    if Image.registered_extensions().get(ext.lower()) == fmt:
        return rel
    return (rel if keep_ext else stem) + WRITABLE[fmt]


def check_output_name(input_rel: str, out_rel: str, plan: dict | None) -> str:
    owner = (plan or {}).get("taken", {}).get(out_rel)
    if owner is not None:
        what = "is another input's name" if owner == out_rel else f"already holds the output of {owner}"
        raise OutputCollision(f"{input_rel} would be written as {out_rel}, which {what}; "
                              "rename one of them or remove that output")
    return out_rel


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
    ("outscale", pa.float64()), ("pieces", pa.int32()),
    ("input_sig", pa.string()), ("settings", pa.string()),
])
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass
class ManifestRow:
    run_id: str
    input: str
    output: str = ""
    status: str = "ok"          # ok | error | skipped (not read, see the listing rules) | interrupted
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
    outscale: float = 4.0       # the output's scale
    pieces: int = 1             # pieces the photo was processed in (patchscaler/pieces.py)
    input_sig: str = ""         # the input as it was read (input_signatures): a later run redoes a changed one
    settings: str = ""          # the output-relevant settings' key (pipeline.options.settings_key)

    def set_groups(self, counts: list[int]):
        self.group_counts = [int(c) for c in counts]
        self.n_simple = self.group_counts[0] if counts else 0
        self.n_hard = self.group_counts[-1] if len(counts) > 1 else 0
        self.n_medium = sum(self.group_counts[1:-1]) if len(counts) > 2 else 0


def row_key(input_rel: str) -> str:
    return hashlib.sha1(input_rel.encode("utf-8", "surrogatepass")).hexdigest()


def rows_dir(run_id: str) -> str:
    return f"{MANIFEST_DIR}/rows/{run_id}"


def parts_dir(run_id: str) -> str:
    """Scratch for the finished pieces of photos being put together (pieces.py)."""
    return f"{MANIFEST_DIR}/parts/{run_id}"


def remove_parts(dst: Store, run_id: str | None = None) -> None:
    """Remove a run's piece scratch (every run's if None): what is left there belongs to photos
    that were not finished, which a later run redoes whole."""
    path = dst.full(f"{MANIFEST_DIR}/parts" + (f"/{run_id}" if run_id else ""))
    with contextlib.suppress(FileNotFoundError, OSError):
        if dst.fs.exists(path):
            dst.fs.rm(path, recursive=True)
    if dst.is_local:
        with contextlib.suppress(OSError):
            os.rmdir(dst.full(f"{MANIFEST_DIR}/parts"))


def maps_dir(run_id: str) -> str:
    """Each photo's difficulty map (its patches' groups), for the report."""
    return f"{MANIFEST_DIR}/maps/{run_id}"


def write_row(dst: Store, row: ManifestRow) -> None:
    """One small JSON file per image and run: a run killed midway keeps every finished
    image's record. `consolidate` folds them into Parquet."""
    row.finished_at = time.time()
    dst.write_atomic(f"{rows_dir(row.run_id)}/{row_key(row.input)}.json", json.dumps(asdict(row)).encode())


ROWS_PER_GROUP = 2000   # manifest rows read, folded and written at a time


def loose_row_paths(dst: Store, sub: str = f"{MANIFEST_DIR}/rows") -> list[str]:
    """Every loose row file under `sub` (also the flat layout of older versions), by name."""
    return sorted(rel for rel in dst.files(sub) if rel.endswith(".json"))


def read_loose(dst: Store, paths: list[str]):
    """(path, row) of these row files, one at a time."""
    for rel in paths:
        try:
            yield rel, json.loads(dst.read(rel))
        except (ValueError, FileNotFoundError):
            continue  # a row file being replaced right now, or not ours


def manifest_files(dst: Store) -> list[str]:
    return sorted(rel for rel in dst.files(MANIFEST_DIR)
                  if rel.endswith(".parquet") and posixpath.basename(rel).startswith("manifest-"))


def manifest_rows(dst: Store, rel: str, columns: list[str] | None = None):
    """The rows of one manifest, a row group at a time."""
    f = pq.ParquetFile(io.BytesIO(dst.read(rel)))
    for batch in f.iter_batches(batch_size=ROWS_PER_GROUP, columns=columns):
        yield from batch.to_pylist()


# what resume needs of a row (read_rows keeps these only: its memory is per input, not per row)
RESUME_COLUMNS = ["run_id", "input", "output", "status", "error", "finished_at", "input_sig", "settings"]


def read_rows(dst: Store, columns: list[str] | None = RESUME_COLUMNS) -> dict[str, dict]:
    """Latest record per input (`columns` of it): consolidated Parquet manifests, then loose row
    files."""
    latest: dict[str, dict] = {}
    for rel in manifest_files(dst):
        names = set(pq.read_schema(io.BytesIO(dst.read(rel))).names)
        cols = [c for c in columns if c in names] if columns else None
        for r in manifest_rows(dst, rel, cols):
            _keep_latest(latest, r)
    for _, r in read_loose(dst, loose_row_paths(dst)):
        _keep_latest(latest, {k: r.get(k) for k in columns} if columns else r)
    return latest


def _keep_latest(latest: dict, r: dict) -> None:
    if r.get("status") == "skipped":
        return  # a skipped entry was never read: it says nothing about an output
    old = latest.get(r["input"])
    if old is None or (r.get("finished_at") or 0) >= (old.get("finished_at") or 0):
        latest[r["input"]] = r


def _fold(dst: Store, run_id: str, paths: list[str], fix=None) -> str:
    """Fold the loose row files at `paths` (rows of run `run_id`; `fix(row)` may change each)
    into manifest-RUN.parquet, ROWS_PER_GROUP rows at a time, so memory does not grow with the
    run; then remove them. A manifest the run already has (a resumed run with the same id)
    keeps its rows that no loose row replaces."""
    rel = f"{MANIFEST_DIR}/manifest-{run_id}.parquet"
    old = dst.exists(rel)
    buf = io.BytesIO()
    new_inputs: set[str] = set()
    with pq.ParquetWriter(buf, MANIFEST_SCHEMA) as w:
        for i in range(0, len(paths), ROWS_PER_GROUP):
            rows = [fix(r) if fix else r for _, r in read_loose(dst, paths[i:i + ROWS_PER_GROUP])]
            rows.sort(key=lambda r: r["input"])
            new_inputs.update(r["input"] for r in rows)
            if rows:
                w.write_table(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA))
        if old:
            kept = []
            for r in manifest_rows(dst, rel):
                if r["input"] not in new_inputs:
                    kept.append(r)
                if len(kept) == ROWS_PER_GROUP:
                    w.write_table(pa.Table.from_pylist(kept, schema=MANIFEST_SCHEMA))
                    kept = []
            if kept:
                w.write_table(pa.Table.from_pylist(kept, schema=MANIFEST_SCHEMA))
    dst.write_atomic(rel, buf.getvalue())
    for p in paths:
        dst.fs.rm(dst.full(p))
    if dst.is_local:  # don't leave empty rows/ folders behind
        for d in (f"{rows_dir(run_id)}", f"{MANIFEST_DIR}/rows"):
            with contextlib.suppress(OSError):   # not empty: another run's rows are still there
                os.rmdir(dst.full(d))
    return dst.uri(rel)


def consolidate(dst: Store, run_id: str) -> str | None:
    """Write this run's rows as one Parquet file and remove the loose row files it holds."""
    mine = loose_row_paths(dst, rows_dir(run_id))
    if not mine:
        rel = f"{MANIFEST_DIR}/manifest-{run_id}.parquet"
        return dst.uri(rel) if dst.exists(rel) else None
    return _fold(dst, run_id, mine)


def recover(dst: Store, run_id: str, files: set[str] | None = None) -> dict[str, int]:
    """Fold the loose rows that other runs left behind (killed, or stopped by a power cut)
    into their own manifest-RUN.parquet. A row was written just before its output, so an ok
    row whose output is missing marks an image the run never finished: it becomes
    `interrupted`. Returns {run id: rows folded}. Run one job per DST at a time: a run that is
    still going would have its rows folded under it."""
    files = set(dst.files()) if files is None else files
    by_run: dict[str, list[str]] = {}
    for p, r in read_loose(dst, loose_row_paths(dst)):   # run ids only are kept
        if r.get("run_id") != run_id:
            by_run.setdefault(r.get("run_id") or "unknown", []).append(p)

    def interrupted(r: dict) -> dict:
        if r.get("status") == "ok" and r.get("output") not in files:
            return {**r, "status": "interrupted", "error": "the run stopped before this output was written"}
        return r
    for other, paths in by_run.items():
        _fold(dst, other, paths, interrupted)
    return {k: len(v) for k, v in by_run.items()}


def input_signatures(store: Store, inputs: list[str]) -> dict[str, str]:
    """What says an input is still the one an output was made from, without reading it: a local
    file's size and modification time (a replaced or edited file gets a new mtime; reading every
    photo to hash it would cost a nightly run as much I/O as the archive), an object's ETag (the
    store's own content tag: a new upload of other bytes gets a new one) and size. One listing
    with details for object stores, one stat per local file."""
    out = {}
    if store.is_local:
        for rel in inputs:
            with contextlib.suppress(OSError):
                st = os.stat(store.full(rel))
                out[rel] = f"{st.st_size}:{st.st_mtime_ns}"
        return out
    wanted = set(inputs)
    base = store.path if not store.fs.isfile(store.path) else posixpath.dirname(store.path)
    for p, info in store.fs.find(base, detail=True).items():
        rel = p[len(base) + 1:] if p.startswith(base + "/") else p
        if rel in wanted or (inputs == [""] and p.rstrip("/") == store.path):
            tag = str(info.get("ETag") or info.get("etag") or info.get("mtime") or "").strip('"')
            out[rel if rel in wanted else ""] = f"{info.get('size', '')}:{tag}"
    return out


def done_inputs(dst: Store, files: set[str] | None = None, rows: dict | None = None,
                sigs: dict[str, str] | None = None, settings: str | None = None) -> tuple[set[str], dict[str, str]]:
    """(done, redo): inputs whose latest record is ok, whose output exists and which were made
    from the same input (`sigs`) with the same settings: a resumed run skips them; `redo`: the
    inputs with an ok output that must be made again, and why ("input changed", "settings
    changed"). Rows written before these were recorded count as the same."""
    files = set(dst.files()) if files is None else files
    rows = read_rows(dst) if rows is None else rows
    done, redo = set(), {}
    for inp, r in rows.items():
        if not (r["status"] == "ok" and r["output"] and r["output"] in files):
            continue
        if sigs is not None and r.get("input_sig") and inp in sigs and r["input_sig"] != sigs[inp]:
            redo[inp] = f"input changed since run {r['run_id']}"
        elif settings is not None and r.get("settings") and r["settings"] != settings:
            redo[inp] = f"settings changed since run {r['run_id']}"
        else:
            done.add(inp)
    return done, redo


KNOWN_BAD = ("bad image:", "actor died:")   # failures that come from the input itself


def known_bad(rows: dict[str, dict], sigs: dict[str, str]) -> dict[str, str]:
    """Inputs whose latest record is a failure of the input itself (not a storage or internal
    error) and which have not changed since: {input: "still bad (unchanged since RUN): error"}."""
    out = {}
    for inp, r in rows.items():
        if (r["status"] == "error" and str(r.get("error", "")).startswith(KNOWN_BAD) and r.get("input_sig")
                and sigs.get(inp) == r["input_sig"]):
            out[inp] = f"still bad (unchanged since run {r['run_id']}): {r['error']}"
    return out


def output_owners(rows: dict[str, dict], files: set[str]) -> dict[str, str]:
    """{output name: input} of the outputs the manifest records and that still exist."""
    return {r["output"]: inp for inp, r in rows.items()
            if r["status"] == "ok" and r["output"] and r["output"] in files}
