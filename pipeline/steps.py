"""The per-image steps around the model, shared by the in-process engine and the Ray actors:
loading the model with the job's overrides, decode/validate, encode/write, manifest rows."""
from __future__ import annotations

import time

from patchscaler import imageio
from patchscaler.config import PGSConfig
from patchscaler.model import Runtime

from .options import UpscaleOptions
from .storage import (ManifestRow, OutputCollision, Store, UnsafePath, check_output_name, output_relpath,
                      safe_relpath, write_row)


def load_model(opts: UpscaleOptions):
    from patchscaler.upscale import build_default
    rt = Runtime(device=opts.device, precision=opts.precision, max_batch=opts.max_batch)
    model = build_default(opts.checkpoint)
    if opts.rtm:
        from rtm_index.store import expectations, load_rtm
        model.rtm = load_rtm(opts.rtm, opts.rtm_options if "://" in opts.rtm else {}, expect=expectations(model))
    p = model.cfg.pgs
    if opts.thresholds or opts.taus or opts.steps:
        model.cfg.pgs = PGSConfig(patch_size=p.patch_size, overlap=p.overlap,
                                  thresholds=tuple(opts.thresholds or p.thresholds),
                                  taus=tuple(opts.taus or p.taus), steps=tuple(opts.steps or p.steps),
                                  hard_groups=p.hard_groups if not opts.thresholds
                                  else (len(opts.thresholds),))
    return model.configure(rt)


def model_version(model) -> str:
    return model.cfg.version


def decode_input(src: Store, rel: str, opts: UpscaleOptions):
    """-> (Prepared, seconds) or raises BadImage / UnsafePath with a clear message."""
    t = time.perf_counter()
    safe_relpath(rel)
    prep = imageio.decode(src.read(rel), opts.max_pixels)
    return prep, time.perf_counter() - t


def finish_output(dst: Store, rel: str, image, prep: imageio.Prepared, opts: UpscaleOptions,
                  naming: dict | None, row: ManifestRow) -> ManifestRow:
    """Name, encode and write one output and its manifest row. The row goes first: a run
    killed between the two leaves an ok row without its output, which a re-run redoes (no
    output is ever written twice) and the next run's recovery marks `interrupted`. If the
    output write fails, the caller's error row replaces the ok row."""
    t = time.perf_counter()
    fmt = imageio.output_format(prep.format, prep.mode, prep.alpha is not None, opts.out_format)
    out_rel = check_output_name(rel, output_relpath(rel, fmt, (naming or {}).get("keep_ext", False)), naming)
    data = imageio.encode(image, fmt, opts.quality, prep.icc, prep.exif)
    row.output, row.sec_write = out_rel, time.perf_counter() - t
    write_row(dst, row)
    dst.write_atomic(out_rel, data)
    return row


def error_row(opts: UpscaleOptions, rel: str, err: Exception, version: str = "") -> ManifestRow:
    kind = "unsafe path" if isinstance(err, UnsafePath) else (
        "bad image" if isinstance(err, imageio.BadImage) else (
            "output name collision" if isinstance(err, OutputCollision) else type(err).__name__))
    return ManifestRow(run_id=opts.run_id, input=rel, status="error", error=f"{kind}: {err}",
                       model_version=version, seed=opts.seed)


def record(dst: Store, row: ManifestRow) -> ManifestRow:
    write_row(dst, row)
    return row


def record_skipped(plan) -> list[ManifestRow]:
    """A `skipped` row for every listed entry that is not read (its reason in `error`)."""
    return [record(plan.dst, ManifestRow(run_id=plan.opts.run_id, input=rel, status="skipped", error=reason,
                                         seed=plan.opts.seed)) for rel, reason in plan.skipped]
