"""A run's worklist, made on the driver before any image is read, the same for both engines:
check SRC and DST, fold what killed runs left behind, list the inputs, drop the done ones
(resume) and decide every output's name. Problems that stop the whole run are raised as
UsageError (exit 2: fix the command) or StorageError (exit 4: storage unreachable or
refusing), each with a one-line message (errors.py)."""
from __future__ import annotations

import dataclasses
import logging
import posixpath
from dataclasses import dataclass, field

from storage import StorageError, Store

from .errors import UsageError, one_line, storage_error
from .options import UpscaleOptions, settings_key
from .listing import input_signatures, overlap, scan_inputs
from .manifest import MANIFEST_DIR, RUN_ID, done_inputs, known_bad, read_rows, recover, remove_parts, write_plan
from .naming import naming_rules, output_owners

log = logging.getLogger("patchscaler")


@dataclass
class Worklist:
    opts: UpscaleOptions            # src = the folder the inputs are named relative to
    src: Store
    dst: Store
    inputs: list[str]               # every input listed, done or not
    skipped: list[tuple[str, str]]  # entries not read: (name, reason)
    done: set[str]
    pending: list[str]
    names: dict[str, dict]          # input -> naming rules (pipeline.naming.naming_rules), with its "sig"
    recovered: dict[str, int] = field(default_factory=dict)
    sigs: dict[str, str] = field(default_factory=dict)       # input -> input_signatures
    redo: dict[str, str] = field(default_factory=dict)       # input -> why its output is made again
    still_bad: dict[str, str] = field(default_factory=dict)  # input -> "still bad (unchanged since ...)"
    cfg: object = None   # the run's model config: the checkpoint's, with the run's overrides (no networks)


def make_worklist(opts: UpscaleOptions) -> Worklist:
    if not RUN_ID.match(opts.run_id):
        raise UsageError(f"run id {opts.run_id!r}: use letters, digits, '.', '_' and '-' (at most 128)")
    try:
        src, dst = (Store(opts.src, opts.src_options, opts.storage_retry),
                    Store(opts.dst, opts.dst_options, opts.storage_retry))
    except (ValueError, ImportError, TypeError) as e:
        raise UsageError(f"cannot open SRC or DST: {one_line(e)}") from None
    why = overlap(src, dst)
    if why:
        raise UsageError(why)

    for label, store in (("SRC", src), ("DST", dst)):
        try:
            store.probe()
        except FileNotFoundError:
            raise UsageError(f"{label} {store.uri()}: no bucket {store.bucket!r}") from None
        except Exception as e:
            raise storage_error(e, f"{label} {store.uri()}", store) from None
    try:
        info = src.fs.info(src.path)
    except FileNotFoundError:
        raise UsageError(f"SRC {src.uri()} does not exist") from None
    except Exception as e:
        raise storage_error(e, f"SRC {src.uri()}", src) from None
    source_file = info.get("type") == "file"
    if source_file:  # one file: its folder is the root, its name the one input
        name = posixpath.basename(src.path)
        parent = posixpath.dirname(src.path) or "/"
        opts = dataclasses.replace(opts, src=parent if src.is_local else f"{src.protocol}://{parent}")
        src = Store(opts.src, opts.src_options, opts.storage_retry)

    check_writable(dst)
    try:
        # the outputs there (what resume and naming ask about), not the manifests' own files
        files = {f for f in dst.files() if not f.startswith(MANIFEST_DIR + "/")}
        recovered = recover(dst, opts.run_id, files)
        remove_parts(dst)   # pieces of photos a killed run did not finish: they are redone whole
        rows = read_rows(dst)
    except Exception as e:
        raise storage_error(e, f"DST {dst.uri()}", dst) from None
    for run, n in recovered.items():
        log.warning("folded %d manifest rows that run %s left behind into manifest-%s.parquet", n, run, run)

    try:
        if source_file:
            inputs, skipped, sigs = [name], [], input_signatures(src, [name])
        else:
            inputs, skipped, sigs = scan_inputs(src)
    except Exception as e:
        raise storage_error(e, f"SRC {src.uri()}", src) from None
    cfg = _run_config(opts)
    opts = dataclasses.replace(opts, settings=settings_key(opts, cfg.version))
    done, redo = done_inputs(dst, files, rows, sigs, opts.settings) if opts.resume else (set(), {})
    still_bad = {} if opts.retry_failed or not opts.resume else known_bad(rows, sigs)
    pending = [r for r in inputs if r not in done and r not in still_bad]
    names = naming_rules(inputs, output_owners(rows, files), only=pending)
    redo = {r: why for r, why in redo.items() if r not in still_bad}
    naming = {r: {**names[r], "sig": sigs.get(r, ""), **({"redo": redo[r]} if r in redo else {})} for r in pending}
    if pending:
        try:   # before the first photo: from now on `status` counts what this run has not done
            write_plan(dst, opts.run_id, pending)
        except Exception as e:
            raise storage_error(e, f"DST {dst.uri()}", dst) from None
    return Worklist(opts, src, dst, inputs, skipped, done, pending, naming, recovered, sigs, redo, still_bad, cfg)


def check_writable(dst: Store) -> None:
    """DST takes writes, or the run stops now with one line (exit 4), before any photo is
    computed: a read-only, full or forbidden DST, and a DST/sub below one, alike."""
    try:
        dst.check_writable()
    except OSError as e:
        raise StorageError(f"DST {dst.uri()} cannot be written: {e.strerror or one_line(e)}") from None


def _run_config(opts: UpscaleOptions):
    """The run's model config (its version names the outputs' settings): the checkpoint's
    config alone, no networks, with the run's overrides (--thresholds, --taus, --steps)."""
    from .run_model import load_model
    try:
        return load_model(opts, "stitch").cfg
    except FileNotFoundError:
        raise UsageError(f"--checkpoint {opts.checkpoint} does not exist") from None
