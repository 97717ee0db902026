"""The in-process engine: the same steps as the Ray pipeline, in a plain loop with progress
per image and per patch (a large photo shows its patches done, of how many, and an ETA).
Used for single files, small folders and as the reference in tests and benchmarks."""
from __future__ import annotations

import contextlib
import logging
import time

from patchscaler import flow
from storage import StorageError

from . import steps
from .options import UpscaleOptions
from .worklist import Worklist, make_worklist
from .progress import Progress
from .listing import EXTENSIONS_TEXT
from .manifest import ManifestRow, consolidate
from .tally import Tally

log = logging.getLogger("patchscaler")


def process_image(model, job: steps.ImageJob, rel: str, naming: dict | None = None,
                  progress: Progress | None = None) -> ManifestRow:
    """One image through decode, the method piece by piece (flow.run_image: the same group
    batches, in the same order, as the pipeline's) and its output and row. Progress: the
    photo's pieces (with an ETA for the photo) and, within a piece, its GRM tiles, then its
    patches."""
    try:
        prep, t_dec = job.decode(rel)
        w, h = prep.size
        on_piece = on_batch = on_tile = None
        if progress is not None:
            progress.add("photo", f"{rel} ({w}x{h})", "piece", None, leave=False)

            def on_piece(part, step):
                if step == "grm":
                    progress.set("photo", done=part.index, total=part.count)
                    progress.add("step", f"  piece {part.index + 1}/{part.count}: GRM", "tile", None, leave=False)
                elif step == "dit":
                    progress.add("step", f"  piece {part.index + 1}/{part.count}: Patch-DiT", "patch", None, leave=False)
                    progress.set("step", total=expected["patches"])
                else:
                    progress.finish("step", quiet=True)

            expected = {"patches": None}
            on_tile = lambda done, total: progress.set("step", done=done, total=total)  # noqa: E731
            on_batch = lambda group, idx: progress.update("step", len(idx))  # noqa: E731
        image, done = flow.run_image(model, prep, job.opts.seed, job.opts.piece_size, job.opts.outscale,
                                     job.hard_groups(model), {"decode": t_dec}, on_piece,
                                     on_batch, on_tile, on_begun=lambda st: expected.__setitem__(
                                         "patches", len(st.coarse.index)) if progress is not None else None)
        row = job.write_ok(rel, prep, image, done, naming, model)
        job.write_map(rel, done.groups, prep.size, model)
        return row
    except StorageError:
        raise   # not the photo's fault: the run stops (run_local), the next one redoes it
    except Exception as e:  # one bad image costs one record, never the job
        return job.write_error(rel, e, steps.model_version(model), naming)
    finally:
        if progress is not None:
            progress.finish("step", quiet=True)
            progress.finish("photo", quiet=True)


def run_local(opts: UpscaleOptions, model=None, progress: Progress | None = None) -> dict:
    t0 = time.perf_counter()
    work = make_worklist(opts)
    log.info("%s", worklist_line(work))
    not_read = steps.record_skipped(work)
    tally = Tally()
    if work.pending:
        job = steps.ImageJob(work.opts, work.src, work.dst)
        model = model or job.load_model()
        job.hard_groups(model)  # a --hard-groups the model does not have fails here, as in the pipeline
        progress = progress or Progress()
        progress.add("images", "upscale", "img", len(work.pending))
        try:
            for rel in work.pending:
                tally.add(process_image(model, job, rel, work.names.get(rel), progress))
                progress.update("images")
        except StorageError as e:
            progress.close()
            raise stopped_by_storage(work, tally, e) from None
        progress.close()
    manifest = consolidate(work.dst, opts.run_id)
    summary = summarize(tally, work, manifest, time.perf_counter() - t0, not_read)
    if opts.report and len(tally):
        from .report import write_report
        summary["report"] = write_report(work, tally)
    return summary


def stopped_by_storage(work: Worklist, tally: Tally, e: Exception) -> StorageError:
    """The run's end when the storage stays down: its rows folded if DST still answers (a
    photo whose row was written but whose output was not becomes `interrupted` on the next
    run), and one line for exit 4. The next run redoes only what is not written."""
    with contextlib.suppress(Exception):
        work.dst.retry_budget = 0
        consolidate(work.dst, work.opts.run_id)
    return StorageError(f"{e}; stopped after {tally.ok} photo(s) written this run, {len(work.pending) - len(tally)} "
                        "not done: run the same command again when the storage is back")


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
            "not_read": [(r.input, r.error) for r in not_read], "recovered": work.recovered,
            "manifest": manifest, "seconds": seconds, "patches_per_group": list(tally.groups),
            "errors": list(tally.errors), "rows": tally.rows}
