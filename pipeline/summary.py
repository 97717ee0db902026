"""A run's start and end, the same for both engines: its worklist and that worklist's one line
before the run (`open_run`); its rows folded into the manifest, its summary and report after it
(`close_run`); and the one-line end of a run the storage stopped."""
from __future__ import annotations

import contextlib
import logging

from storage import REFUSED, StorageError

from .listing import EXTENSIONS_TEXT
from .manifest import consolidate
from .tally import Tally
from .worklist import Worklist, make_worklist
from .writing import write_skipped

log = logging.getLogger("patchscaler")


def open_run(opts) -> tuple[Worklist, list]:
    """A run's worklist (worklist.py), logged in one line, and the rows of the entries it does
    not read (written now)."""
    work = make_worklist(opts)
    log.info("%s", worklist_line(work))
    return work, write_skipped(work)


def close_run(work: Worklist, tally: Tally, seconds: float, not_read: list, **extra) -> dict:
    """A run's end: its rows folded into its manifest, its summary (with the engine's `extra`)
    and, if asked, its report."""
    summary = {**summarize(tally, work, fold_rows(work, tally), seconds, not_read), **extra}
    if work.opts.report and len(tally):
        from .report import report_or_warning
        summary["report"] = report_or_warning(work, tally)
    return summary


def fold_rows(work: Worklist, tally: Tally) -> str | None:
    """The run's rows folded into its manifest; a DST that refuses the write (full, say) stops
    the run as any storage fault does (exit 4): the loose rows stay for the next run to fold."""
    try:
        return consolidate(work.dst, work.opts.run_id)
    except StorageError as e:
        raise stopped_by_storage(work, tally, e) from None


def stopped_by_storage(work: Worklist, tally: Tally, e: Exception | str) -> StorageError:
    """The run's end when the storage stays down or refuses writes: its rows folded if DST
    still takes them (a photo whose row was written but whose output was not is
    `interrupted`), and one line for exit 4. The next run redoes only what is not written.
    (`e` may be the text a Ray stage gave, hence the message, not the type, says a refusal.)"""
    with contextlib.suppress(Exception):
        work.dst.retry_budget = 0
        consolidate(work.dst, work.opts.run_id, stopped=True)
    when = "when DST takes writes again" if REFUSED in str(e) else "when the storage is back"
    report = "; no report was written" if work.opts.report else ""
    return StorageError(f"{e}; stopped after {tally.ok} photo(s) written this run, {len(work.pending) - len(tally)} "
                        f"not done (`patchscaler status DST` lists them{report}): run the same command again {when}")


def worklist_line(work: Worklist) -> str:
    text = (f"{len(work.inputs)} inputs in {work.src.uri()}, {len(work.done)} already done, "
            f"{len(work.pending)} to do (run {work.opts.run_id})")
    changed = sum("input changed" in why for why in work.redo.values())
    if work.redo:
        text += f"; of those, {changed} changed since their output and {len(work.redo) - changed} with other settings"
    if work.still_bad:
        text += f"; {len(work.still_bad)} still bad and unchanged, not tried again (--retry-failed tries them)"
    if work.skipped:
        text += f"; {len(work.skipped)} entries not read (see the manifest)"
    if not work.inputs:
        text += f"; SRC has no images (names ending in {EXTENSIONS_TEXT})"
    return text


def summarize(tally: Tally, work: Worklist, manifest: str | None, seconds: float, not_read: list = ()) -> dict:
    """The run's summary. `rows`: the first Tally.KEEP_ROWS rows whole (every row is in the
    manifest); `errors`: the first Tally.MAX_ERRORS, `failed` counts them all."""
    return {"ok": tally.ok, "failed": tally.failed, "skipped": len(work.done), "inputs": len(work.inputs),
            "still_bad": sorted(work.still_bad.items()), "redone": dict(work.redo),
            # a still-bad input has a skipped row too, but it is counted as still bad, not here
            "not_read": [(r.input, r.error) for r in not_read if r.input not in work.still_bad],
            "recovered": work.recovered,
            "manifest": manifest, "seconds": seconds, "patches_per_group": list(tally.groups),
            "errors": list(tally.errors), "rows": tally.rows}
