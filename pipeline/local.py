"""The in-process engine: the photo plan (patchscaler/photo.py) in a plain loop, between the
same input and output as the Ray engine's (reading.py, writing.py), with progress per image
and per patch (a large photo shows its patches done, of how many, and an ETA). Used for single
files, small folders and as the reference in tests and benchmarks."""
from __future__ import annotations

import logging
import threading
import time

from patchscaler import photo
from storage import StorageError, Store

from .manifest import ManifestRow
from .options import UpscaleOptions
from .progress import Progress
from .reading import FIRST_HEADER_BYTES, HEADER_BYTES, decode
from .run_model import hard_groups, load_model
from .summary import close_run, open_run, stopped_by_storage
from .tally import Tally
from .writing import write_error, write_photo

log = logging.getLogger("patchscaler")


def process_image(model, opts: UpscaleOptions, src: Store, dst: Store, rel: str, naming: dict | None = None,
                  progress: Progress | None = None) -> ManifestRow:
    """One image through decode, the photo plan (photo.run_image: the same group batches, in
    the same order, as the Ray engine's) and its output and row. Progress: the photo's pieces
    (with an ETA for the photo) and, within a piece, its GRM tiles, then its patches."""
    try:
        prep, t_dec = decode(src, rel, opts)
        w, h = prep.size
        on_piece = on_batch = on_tile = None
        if progress is not None:
            progress.add("photo", f"{rel} ({w}x{h})", "piece", None, leave=False)

            patch_bar = set()   # the pieces whose Patch-DiT bar is up: one bar for all the pools

            def on_piece(part, step, state):
                where = f"  piece {part.index + 1}/{part.count}"
                if step == "grm":
                    progress.set("photo", done=part.index, total=part.count)
                    progress.add("step", f"{where}: GRM", "tile", None, leave=False)
                elif step == "finish":
                    progress.finish("step", quiet=True)
                elif part.index not in patch_bar:
                    patch_bar.add(part.index)
                    progress.add("step", f"{where}: Patch-DiT", "patch", len(state.coarse.index), leave=False)

            on_tile = lambda done, total: progress.set("step", done=done, total=total)  # noqa: E731
            on_batch = lambda group, n: progress.update("step", n)  # noqa: E731
        made = photo.run_image(model, prep, opts.seed, opts.piece_size, opts.outscale, hard_groups(opts, model.cfg),
                               {"decode": t_dec}, on_piece, on_batch, on_tile)
        return write_photo(dst, opts, rel, made, naming, model)
    except StorageError:
        raise   # not the photo's fault: the run stops (run_local), the next one redoes it
    except Exception as e:  # one bad image costs one record, never the job
        return write_error(dst, opts, rel, e, model.cfg.version, naming)
    finally:
        if progress is not None:
            progress.finish("step", quiet=True)
            progress.finish("photo", quiet=True)


def run_local(opts: UpscaleOptions, model=None, progress: Progress | None = None) -> dict:
    t0 = time.perf_counter()
    work, not_read = open_run(opts)
    tally = Tally()
    if work.pending:
        model = model or load_model(work.opts)
        hard_groups(work.opts, model.cfg)  # a --hard-groups the model does not have fails here, as in the pipeline
        progress = progress or Progress()
        progress.add("images", "upscale", "img", len(work.pending))
        pixels = InputPixels(work.src, work.opts, work.pending)
        try:
            for n, rel in enumerate(work.pending, 1):
                tally.add(process_image(model, work.opts, work.src, work.dst, rel, work.names.get(rel), progress))
                progress.set("images", done=n, work=pixels.done(rel))
        except StorageError as e:
            raise stopped_by_storage(work, tally, e) from None
        finally:
            pixels.stop()
            progress.close()
    return close_run(work, tally, time.perf_counter() - t0, not_read)


class InputPixels:
    """The input pixels of the photos to do, read from their headers by a thread ahead of the
    work, so that the ETA is the work left at the rate of work done: one 24 MP scan is the work
    of a hundred thumbnails, and a rate in photos would mislead on mixed sizes. A photo whose
    header is not read yet counts as the mean of those read."""

    def __init__(self, src: Store, opts: UpscaleOptions, pending: list[str]):
        self.src, self.max_pixels, self.count = src, opts.max_pixels, len(pending)
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
        for head in (FIRST_HEADER_BYTES, HEADER_BYTES):
            try:
                data = self.src.read_head(rel, head)
                w, h = imageio.probe(data, self.max_pixels)
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
