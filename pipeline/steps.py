"""The per-image steps around the method, the same in the in-process engine and in the Ray
actors: the job's model (with the run's overrides), decode/validate, the output and its
manifest row (built here and nowhere else). `ImageJob` bundles them for one run; it is
picklable, and the Ray graph hands one to each actor (which therefore never imports this
package)."""
from __future__ import annotations

import time
from dataclasses import dataclass

from patchscaler import imageio
from patchscaler.config import override
from patchscaler.flow import InFlight
from patchscaler.model import Runtime

from storage import Store, options_for

from .options import UpscaleOptions
from .storage import ManifestRow, OutputCollision, UnsafePath, check_output_name, output_relpath, safe_relpath, write_row


# what each stage needs of the model (checkpoint.PARTS; the codec always comes)
STAGE_PARTS = {"grm": ("grm",), "dit": ("texture", "dit", "rtm"), "stitch": ()}


def load_model(opts: UpscaleOptions, parts=None):
    """The run's model with its overrides; `parts`: only these (None: all, in-process)."""
    from patchscaler.upscale import build_default
    rt = Runtime(device=opts.device, precision=opts.precision, max_batch=opts.max_batch, compile=opts.compile)
    model = build_default(opts.checkpoint, parts)
    if opts.rtm and (parts is None or "rtm" in parts):
        from rtm_index.store import expectations, load_rtm
        model.rtm = load_rtm(opts.rtm, options_for(opts.rtm, opts.rtm_options), expect=expectations(model))
    p = model.cfg.pgs
    if opts.thresholds or opts.taus or opts.steps:
        # through config.override: validated, and every other PGS field (seam_shift) kept
        model.cfg = override(model.cfg, pgs={
            "thresholds": tuple(opts.thresholds or p.thresholds), "taus": tuple(opts.taus or p.taus),
            "steps": tuple(opts.steps or p.steps),
            "hard_groups": p.hard_groups if not opts.thresholds else (len(opts.thresholds),)})
    return model.configure(rt)


def model_version(model) -> str:
    return model.cfg.version


def hard_groups(opts: UpscaleOptions, model) -> set[int]:
    """The groups the hard pool serves (UpscaleOptions.hard_groups)."""
    n = model.cfg.pgs.num_groups
    groups = opts.hard_groups or model.cfg.pgs.hard_groups
    bad = [g for g in groups if not 0 <= g < n]
    if bad:
        raise ValueError(f"hard groups {bad} do not exist: the model has groups 0..{n - 1}")
    return set(groups)


def error_text(err: Exception) -> str:
    kind = "unsafe path" if isinstance(err, UnsafePath) else (
        "bad image" if isinstance(err, imageio.BadImage) else (
            "output name collision" if isinstance(err, OutputCollision) else type(err).__name__))
    return f"{kind}: {err}"


def record(dst: Store, row: ManifestRow) -> ManifestRow:
    write_row(dst, row)
    return row


def record_skipped(plan) -> list[ManifestRow]:
    """A `skipped` row for every listed entry that is not read (its reason in `error`)."""
    return [record(plan.dst, ManifestRow(run_id=plan.opts.run_id, input=rel, status="skipped", error=reason,
                                         seed=plan.opts.seed)) for rel, reason in plan.skipped]


@dataclass
class ImageJob:
    """One run's steps for one image. `src`/`dst` default to the options' stores, opened
    lazily where the job is used (an actor opens its own)."""
    opts: UpscaleOptions
    src: Store | None = None
    dst: Store | None = None

    def __getstate__(self):
        return {"opts": self.opts, "src": None, "dst": None}

    def source(self) -> Store:
        if self.src is None:
            self.src = Store(self.opts.src, self.opts.src_options)
        return self.src

    def dest(self) -> Store:
        if self.dst is None:
            self.dst = Store(self.opts.dst, self.opts.dst_options)
        return self.dst

    error_text = staticmethod(error_text)

    def hard_groups(self, model) -> set[int]:
        return hard_groups(self.opts, model)

    def load_model(self, stage: str | None = None):
        """The model for one stage of STAGE_PARTS (None: the whole model)."""
        return load_model(self.opts, None if stage is None else STAGE_PARTS[stage])

    def decode(self, rel: str) -> tuple[imageio.Prepared, float]:
        """-> (Prepared, seconds) or raises BadImage / UnsafePath with a clear message."""
        t = time.perf_counter()
        safe_relpath(rel)
        prep = imageio.decode(self.source().read(rel), self.opts.max_pixels)
        return prep, time.perf_counter() - t

    def write_ok(self, rel: str, state: InFlight, image, naming: dict | None, model) -> ManifestRow:
        """Name, encode and write one output and its manifest row. The row goes first: a run
        killed between the two leaves an ok row without its output, which a re-run redoes (no
        output is ever written twice) and the next run's recovery marks `interrupted`. If the
        output write fails, the caller's error row replaces the ok row."""
        opts, prep, s = self.opts, state.prep, state.seconds
        row = ManifestRow(run_id=opts.run_id, input=rel, notes="; ".join(prep.notes),
                          width=prep.size[0], height=prep.size[1], out_width=image.width, out_height=image.height,
                          sec_decode=s.get("decode", 0.0), sec_grm=s["grm"], sec_dit=s["dit"],
                          sec_stitch=s["stitch"], model_version=model_version(model), seed=opts.seed)
        row.set_groups(state.group_counts(model.cfg.pgs.num_groups))
        t = time.perf_counter()
        fmt = imageio.output_format(prep.format, prep.mode, prep.alpha is not None, opts.out_format)
        out_rel = check_output_name(rel, output_relpath(rel, fmt, (naming or {}).get("keep_ext", False)), naming)
        data = imageio.encode(image, fmt, opts.quality, prep.icc, prep.exif)
        row.output, row.sec_write = out_rel, time.perf_counter() - t
        write_row(self.dest(), row)
        self.dest().write_atomic(out_rel, data)
        return row

    def write_error(self, rel: str, err: Exception | str, version: str = "") -> ManifestRow:
        """The image's error row (err: the exception, or the text an earlier stage gave)."""
        text = err if isinstance(err, str) else error_text(err)
        return record(self.dest(), ManifestRow(run_id=self.opts.run_id, input=rel, status="error", error=text,
                                               model_version=version, seed=self.opts.seed))
