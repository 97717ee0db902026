"""The manifest: one row per image and run, and what resume reads from it.

Rows are written one small JSON file per image under `DST/_manifest/rows/RUN/`, before the
image's output (local writes: a temp file, fsync'd, renamed, the folder fsync'd; object stores:
one PUT, whole or not at all). A run folds its own rows into `_manifest/manifest-RUN.parquet`
at the end, and the next run folds the rows that a killed run left behind. Folding and reading
go a row group at a time, so memory does not grow with the archive."""

import contextlib
import hashlib
import io
import json
import os
import posixpath
import re
import sys
import time
from dataclasses import MISSING, asdict, dataclass, field, fields

import pyarrow as pa
import pyarrow.parquet as pq

from storage import Store

MANIFEST_DIR = "_manifest"


RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

_STR, _I32, _F64 = pa.string(), pa.int32(), pa.float64()


def column(arrow: pa.DataType, default=MISSING, factory=MISSING):
    """A manifest column: a ManifestRow field that also carries its Parquet type."""
    return field(default=default, default_factory=factory, metadata={"arrow": arrow})


@dataclass
class ManifestRow:
    """One image's row in one run; its fields, in order, are the manifest's columns."""
    run_id: str = column(_STR)
    input: str = column(_STR)
    output: str = column(_STR, "")
    status: str = column(_STR, "ok")    # ok | error | skipped (not read, see the listing rules) | interrupted
    error: str = column(_STR, "")
    notes: str = column(_STR, "")
    width: int = column(_I32, 0)
    height: int = column(_I32, 0)
    out_width: int = column(_I32, 0)
    out_height: int = column(_I32, 0)
    n_simple: int = column(_I32, 0)
    n_medium: int = column(_I32, 0)
    n_hard: int = column(_I32, 0)
    group_counts: list = column(pa.list_(_I32), factory=list)
    sec_decode: float = column(_F64, 0.0)
    sec_grm: float = column(_F64, 0.0)
    sec_dit: float = column(_F64, 0.0)
    sec_stitch: float = column(_F64, 0.0)
    sec_write: float = column(_F64, 0.0)
    model_version: str = column(_STR, "")
    seed: int = column(pa.int64(), 0)
    finished_at: float = column(_F64, 0.0)
    outscale: float = column(_F64, 4.0)    # the output's scale
    pieces: int = column(_I32, 1)          # pieces the photo was processed in (patchscaler/pieces.py)
    input_sig: str = column(_STR, "")      # the input as it was read (input_signatures): a later run redoes a changed one
    settings: str = column(_STR, "")       # the output-relevant settings' key (pipeline.options.settings_key)

    def set_groups(self, counts: list[int]):
        self.group_counts = [int(c) for c in counts]
        self.n_simple = self.group_counts[0] if counts else 0
        self.n_hard = self.group_counts[-1] if len(counts) > 1 else 0
        self.n_medium = sum(self.group_counts[1:-1]) if len(counts) > 2 else 0


MANIFEST_SCHEMA = pa.schema([(f.name, f.metadata["arrow"]) for f in fields(ManifestRow)])


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


def plan_path(run_id: str) -> str:
    """The inputs a run set out to do, written before its first photo (status counts those
    without a row of theirs as not done, whatever stopped the run)."""
    return f"{MANIFEST_DIR}/plans/plan-{run_id}.parquet"


def write_plan(dst: Store, run_id: str, inputs: list[str]) -> None:
    table = pa.table({"input": pa.array(inputs, pa.string())})
    table = table.replace_schema_metadata({"plan": json.dumps({"run_id": run_id, "started_at": time.time()})})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    dst.write_atomic(plan_path(run_id), buf.getvalue())


def read_plans(dst: Store):
    """(run_id, started_at, inputs) of every run's plan, one at a time."""
    for rel in sorted(dst.files(f"{MANIFEST_DIR}/plans")):
        if not (rel.endswith(".parquet") and posixpath.basename(rel).startswith("plan-")):
            continue
        try:
            table = pq.read_table(io.BytesIO(dst.read(rel)))
            meta = json.loads(table.schema.metadata[b"plan"])
        except (ValueError, KeyError, TypeError, FileNotFoundError, pa.ArrowException):
            continue   # not ours, or being replaced right now
        yield meta["run_id"], float(meta["started_at"]), table.column("input").to_pylist()


def maps_dir(run_id: str) -> str:
    """Each photo's difficulty map (its patches' groups), for the report."""
    return f"{MANIFEST_DIR}/maps/{run_id}"


def write_row(dst: Store, row: ManifestRow) -> None:
    """One small JSON file per image and run: a run killed midway keeps every finished
    image's record. `consolidate` folds them into Parquet."""
    row.finished_at = time.time()
    dst.write_atomic(f"{rows_dir(row.run_id)}/{row_key(row.input)}.json", json.dumps(asdict(row)).encode())


def remove_row(dst: Store, run_id: str, input_rel: str) -> None:
    """Take back a row whose output the storage refused (best effort: a storage that is down
    refuses this too, and the next run's recovery marks the row `interrupted`)."""
    with contextlib.suppress(Exception):
        dst.fs.rm(dst.full(f"{rows_dir(run_id)}/{row_key(input_rel)}.json"))


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


SHARED = ("run_id", "status", "settings", "model_version")   # a few values shared by many rows


def _keep_latest(latest: dict, r: dict) -> None:
    if r.get("status") == "skipped":
        return  # a skipped entry was never read: it says nothing about an output
    for k in SHARED:   # one copy of each, not one per row (a million-row resume holds them all)
        if isinstance(r.get(k), str):
            r[k] = sys.intern(r[k])
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


def consolidate(dst: Store, run_id: str, stopped: bool = False) -> str | None:
    """Write this run's rows as one Parquet file and remove the loose row files it holds.
    `stopped`: the run stopped early, so an ok row whose output is missing is `interrupted`."""
    mine = loose_row_paths(dst, rows_dir(run_id))
    if not mine:
        rel = f"{MANIFEST_DIR}/manifest-{run_id}.parquet"
        return dst.uri(rel) if dst.exists(rel) else None
    return _fold(dst, run_id, mine, _unwritten(set(dst.files())) if stopped else None)


def _unwritten(files: set[str]):
    """A row fix: an ok row whose output is not among `files` was written just before an output
    that never landed."""
    def fix(r: dict) -> dict:
        if r.get("status") == "ok" and r.get("output") not in files:
            return {**r, "status": "interrupted", "error": "the run stopped before this output was written"}
        return r
    return fix


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

    for other, paths in by_run.items():
        _fold(dst, other, paths, _unwritten(files))
    return {k: len(v) for k, v in by_run.items()}


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
