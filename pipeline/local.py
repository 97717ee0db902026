"""The in-process engine: the same steps as the Ray pipeline, in a plain loop with progress
per image and per patch (a large photo shows its patches done, of how many, and an ETA).
Used for single files, small folders and as the reference in tests and benchmarks."""
from __future__ import annotations

import contextlib
import logging
import threading
import time

from patchscaler import flow
from storage import REFUSED, StorageDown

from . import steps
from .options import UpscaleOptions
from .plan import Plan, StorageError, make_plan
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
    except StorageDown:
        raise   # not the photo's fault: the run stops (run_local), the next one redoes it
    except Exception as e:  # one bad image costs one record, never the job
        return job.write_error(rel, e, steps.model_version(model), naming)
    finally:
        if progress is not None:
            progress.finish("step", quiet=True)
            progress.finish("photo", quiet=True)


def run_local(opts: UpscaleOptions, model=None, progress: Progress | None = None) -> dict:
    t0 = time.perf_counter()
    plan = make_plan(opts)
    log.info("%s", plan_line(plan))
    not_read = steps.record_skipped(plan)
    tally = Tally()
    if plan.pending:
        job = steps.ImageJob(plan.opts, plan.src, plan.dst)
        model = model or job.load_model()
        job.hard_groups(model)  # a --hard-groups the model does not have fails here, as in the pipeline
        progress = progress or Progress()
        progress.add("images", "upscale", "img", len(plan.pending))
        pixels = InputPixels(job, plan.pending)
        try:
            for n, rel in enumerate(plan.pending, 1):
                tally.add(process_image(model, job, rel, plan.names.get(rel), progress))
                progress.set("images", done=n, work=pixels.done(rel))
        except StorageDown as e:
            raise stopped_by_storage(plan, tally, e) from None
        finally:
            pixels.stop()
            progress.close()
    manifest = fold_rows(plan, tally)
    summary = summarize(tally, plan, manifest, time.perf_counter() - t0, not_read)
    if opts.report and len(tally):
        from .report import report_or_warning
        summary["report"] = report_or_warning(plan, tally)
    return summary


class InputPixels:
    """The input pixels of the photos to do, read from their headers by a thread ahead of the
    work, so that the ETA is the work left at the rate of work done: one 24 MP scan is the work
    of a hundred thumbnails, and a rate in photos would mislead on mixed sizes. A photo whose
    header is not read yet counts as the mean of those read."""

    def __init__(self, job: steps.ImageJob, pending: list[str]):
        self.job, self.count = job, len(pending)
        self.pixels: dict[str, int] = {}
        self.read_sum, self.done_sum = 0, 0.0
        self._stop = threading.Event()
        threading.Thread(target=self._read, args=(list(pending),), name="headers", daemon=True).start()

    def _read(self, pending: list[str]) -> None:
        for rel in pending:
            if self._stop.is_set():
                return
            n = self._probe(rel)
            self.pixels[rel] = n
            self.read_sum += n

    def _probe(self, rel: str) -> int:
        from patchscaler import imageio
        data = b""
        for head in (1 << 16, 1 << 20):   # most headers are in the first 64 KiB; a large EXIF block is not
            try:
                data = self.job.source().read_head(rel, head)
                w, h = imageio.probe(data, self.job.opts.max_pixels)
                return w * h
            except Exception:   # a bad or unsafe input: its own decode says why, at next to no cost
                if len(data) < head:
                    break
        return 0

    def _mean(self) -> float:
        read = len(self.pixels)
        return self.read_sum / read if read else 1.0

    def done(self, rel: str) -> tuple[float, float]:
        """After `rel` is finished: (pixels done, pixels of the whole run)."""
        self.done_sum += self.pixels.get(rel, self._mean())
        return self.done_sum, self.read_sum + self._mean() * (self.count - len(self.pixels))

    def stop(self) -> None:
        self._stop.set()


def fold_rows(plan: Plan, tally: Tally) -> str | None:
    """The run's rows folded into its manifest; a DST that refuses the write (full, say) stops
    the run as any storage fault does (exit 4): the loose rows stay for the next run to fold."""
    try:
        return consolidate(plan.dst, plan.opts.run_id)
    except StorageDown as e:
        raise stopped_by_storage(plan, tally, e) from None


def stopped_by_storage(plan: Plan, tally: Tally, e: Exception | str) -> StorageError:
    """The run's end when the storage stays down or refuses writes: its rows folded if DST
    still takes them (a photo whose row was written but whose output was not is
    `interrupted`), and one line for exit 4. The next run redoes only what is not written."""
    with contextlib.suppress(Exception):
        plan.dst.retry_budget = 0
        consolidate(plan.dst, plan.opts.run_id, stopped=True)
    when = "when DST takes writes again" if REFUSED in str(e) else "when the storage is back"
    return StorageError(f"{e}; stopped after {tally.ok} photo(s) written this run, {len(plan.pending) - len(tally)} "
                        f"not done: run the same command again {when}")


def plan_line(plan: Plan) -> str:
    text = (f"{len(plan.inputs)} inputs in {plan.src.uri()}, {len(plan.done)} already done, "
            f"{len(plan.pending)} to do (run {plan.opts.run_id})")
    changed = sum("input changed" in why for why in plan.redo.values())
    if plan.redo:
        text += f"; of those, {changed} changed since their output and {len(plan.redo) - changed} with other settings"
    if plan.still_bad:
        text += f"; {len(plan.still_bad)} still bad and unchanged, not tried again (--retry-failed tries them)"
    if plan.skipped:
        text += f"; {len(plan.skipped)} entries not read (see the manifest)"
    if not plan.inputs:
        text += f"; SRC has no images (names ending in {EXTENSIONS_TEXT})"
    return text


def summarize(tally: Tally, plan: Plan, manifest: str | None, seconds: float, not_read: list = ()) -> dict:
    """The run's summary. `rows`: the first Tally.KEEP_ROWS rows whole (every row is in the
    manifest); `errors`: the first Tally.MAX_ERRORS, `failed` counts them all."""
    return {"ok": tally.ok, "failed": tally.failed, "skipped": len(plan.done), "inputs": len(plan.inputs),
            "still_bad": sorted(plan.still_bad.items()), "redone": dict(plan.redo),
            # a still-bad input has a skipped row too, but it is counted as still bad, not here
            "not_read": [(r.input, r.error) for r in not_read if r.input not in plan.still_bad],
            "recovered": plan.recovered,
            "manifest": manifest, "seconds": seconds, "patches_per_group": list(tally.groups),
            "errors": list(tally.errors), "rows": tally.rows}
