"""The in-process engine: the same steps as the Ray pipeline, in a plain loop with a progress
bar. Used for single files, small folders and as the reference in tests and benchmarks."""
from __future__ import annotations

import logging
import posixpath
import time

import torch
from tqdm import tqdm

from patchscaler.upscale import group_batches, grm_stage, refine_stage, stitch_stage

from . import steps
from .options import UpscaleOptions
from .storage import ManifestRow, Store, consolidate, done_inputs

log = logging.getLogger("patchscaler")


def plan_inputs(opts: UpscaleOptions) -> tuple[Store, Store, list[str], bool, set[str]]:
    src, dst = Store(opts.src, opts.src_options), Store(opts.dst, opts.dst_options)
    src_is_file = src.fs.isfile(src.path)
    inputs = src.list_images() if not src_is_file else [""]
    done = done_inputs(dst) if opts.resume else set()
    return src, dst, inputs, src_is_file, done


def process_image(model, src: Store, dst: Store, rel: str, opts: UpscaleOptions,
                  src_is_file: bool) -> ManifestRow:
    name = posixpath.basename(src.path) if src_is_file else rel
    version = steps.model_version(model)
    try:
        prep, t_dec = steps.decode_input(src, rel, opts, src.fs.cat_file(src.path) if src_is_file else None)
        coarse = grm_stage(model, prep)
        t = time.perf_counter()
        refined = coarse.patches.clone()
        for group, idx in group_batches(model, coarse.groups):
            refined[idx] = refine_stage(model, coarse.patches[idx], idx, group, opts.seed)
        t_dit = time.perf_counter() - t
        t = time.perf_counter()
        image = stitch_stage(model, coarse, refined, prep)
        t_stitch = time.perf_counter() - t
        out_rel, t_write = steps.write_output(dst, rel, image, prep, opts, src_is_file, name)
    except Exception as e:  # one bad image costs one record, never the job
        return steps.record(dst, steps.error_row(opts, name, e, version))
    row = ManifestRow(run_id=opts.run_id, input=name, output=out_rel, notes="; ".join(prep.notes),
                      width=prep.size[0], height=prep.size[1], out_width=image.width, out_height=image.height,
                      sec_decode=t_dec, sec_grm=coarse.seconds, sec_dit=t_dit, sec_stitch=t_stitch,
                      sec_write=t_write, model_version=version, seed=opts.seed)
    row.set_groups(torch.bincount(coarse.groups, minlength=model.cfg.pgs.num_groups).tolist())
    return steps.record(dst, row)


def run_local(opts: UpscaleOptions, model=None) -> dict:
    t0 = time.perf_counter()
    src, dst, inputs, src_is_file, done = plan_inputs(opts)
    pending = [r for r in inputs if (posixpath.basename(src.path) if src_is_file else r) not in done]
    log.info("%d inputs, %d already done, %d to do", len(inputs), len(inputs) - len(pending), len(pending))
    model = model or steps.load_model(opts)
    rows = [process_image(model, src, dst, rel, opts, src_is_file)
            for rel in tqdm(pending, desc="upscale", unit="img")]
    manifest = consolidate(dst, opts.run_id)
    return summarize(rows, len(inputs) - len(pending), manifest, time.perf_counter() - t0)


def summarize(rows: list, skipped: int, manifest: str | None, seconds: float) -> dict:
    rows = [r if isinstance(r, dict) else r.__dict__ for r in rows]
    ok = [r for r in rows if r["status"] == "ok"]
    failed = [r for r in rows if r["status"] != "ok"]
    groups = [sum(r["group_counts"][i] for r in ok if len(r["group_counts"]) > i) for i in range(3)]
    return {"ok": len(ok), "failed": len(failed), "skipped": skipped, "manifest": manifest,
            "seconds": seconds, "patches_per_group": groups,
            "errors": [(r["input"], r["error"]) for r in failed], "rows": rows}
