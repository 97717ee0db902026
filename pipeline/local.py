"""The in-process engine: the same steps as the Ray pipeline, in a plain loop with progress
per image and per patch (a large photo shows its patches done, of how many, and an ETA).
Used for single files, small folders and as the reference in tests and benchmarks."""
from __future__ import annotations

import logging
import time

import torch

from patchscaler.upscale import group_batches, grm_stage, refine_stage, stitch_stage

from . import steps
from .options import UpscaleOptions
from .plan import Plan, make_plan
from .progress import Progress
from .storage import ManifestRow, consolidate

log = logging.getLogger("patchscaler")


def process_image(model, plan: Plan, rel: str, progress: Progress | None = None) -> ManifestRow:
    """One image through decode, GRM, both Patch-DiT groups and stitch, then its output and row.
    The Patch-DiT calls are the same group batches, in the same order, as the pipeline's."""
    opts, src, dst = plan.opts, plan.src, plan.dst
    version = steps.model_version(model)
    try:
        prep, t_dec = steps.decode_input(src, rel, opts)
        if progress is not None:
            progress.add("patches", f"{rel}: GRM {prep.size[0]}x{prep.size[1]} px", "patch", None, leave=False)
        coarse = grm_stage(model, prep)
        t = time.perf_counter()
        refined = coarse.patches.clone()
        if progress is not None:
            progress.set("patches", done=0, total=len(coarse.groups), desc=f"{rel}: Patch-DiT")
        for group, idx in group_batches(model, coarse.groups):
            refined[idx] = refine_stage(model, coarse.patches[idx], idx, group, opts.seed)
            if progress is not None:
                progress.update("patches", len(idx))
        t_dit = time.perf_counter() - t
        t = time.perf_counter()
        image = stitch_stage(model, coarse, refined, prep)
        t_stitch = time.perf_counter() - t
        row = ManifestRow(run_id=opts.run_id, input=rel, notes="; ".join(prep.notes),
                          width=prep.size[0], height=prep.size[1], out_width=image.width, out_height=image.height,
                          sec_decode=t_dec, sec_grm=coarse.seconds, sec_dit=t_dit, sec_stitch=t_stitch,
                          model_version=version, seed=opts.seed)
        row.set_groups(torch.bincount(coarse.groups, minlength=model.cfg.pgs.num_groups).tolist())
        return steps.finish_output(dst, rel, image, prep, opts, plan.names.get(rel), row)
    except Exception as e:  # one bad image costs one record, never the job
        return steps.record(dst, steps.error_row(opts, rel, e, version))
    finally:
        if progress is not None:
            progress.finish("patches", quiet=True)


def run_local(opts: UpscaleOptions, model=None, progress: Progress | None = None) -> dict:
    t0 = time.perf_counter()
    plan = make_plan(opts)
    log.info("%s", plan_line(plan))
    not_read = steps.record_skipped(plan)
    rows = []
    if plan.pending:
        model = model or steps.load_model(plan.opts)
        progress = progress or Progress()
        progress.add("images", "upscale", "img", len(plan.pending))
        for rel in plan.pending:
            rows.append(process_image(model, plan, rel, progress))
            progress.update("images")
        progress.close()
    manifest = consolidate(plan.dst, opts.run_id)
    return summarize(rows, plan, manifest, time.perf_counter() - t0, not_read)


def plan_line(plan: Plan) -> str:
    text = (f"{len(plan.inputs)} inputs in {plan.src.uri()}, {len(plan.done)} already done, "
            f"{len(plan.pending)} to do (run {plan.opts.run_id})")
    if plan.skipped:
        text += f"; {len(plan.skipped)} entries not read (see the manifest)"
    if not plan.inputs:
        text += "; SRC has no images (names ending in .jpg .jpeg .png .webp .tif .tiff .bmp .gif)"
    return text


def summarize(rows: list, plan: Plan, manifest: str | None, seconds: float, not_read: list = ()) -> dict:
    rows = [r if isinstance(r, dict) else r.__dict__ for r in rows]
    ok = [r for r in rows if r["status"] == "ok"]
    failed = [r for r in rows if r["status"] != "ok"]
    groups = [sum(r["group_counts"][i] for r in ok if len(r["group_counts"]) > i) for i in range(3)]
    return {"ok": len(ok), "failed": len(failed), "skipped": len(plan.done), "inputs": len(plan.inputs),
            "not_read": [(r.input, r.error) for r in not_read], "recovered": plan.recovered,
            "manifest": manifest, "seconds": seconds, "patches_per_group": groups,
            "errors": [(r["input"], r["error"]) for r in failed], "rows": rows}
