"""The upscale job as one streaming Ray Data graph (wired here and nowhere else):

    listing (driver; resume drops done inputs)
      -> DecodeGRM actor pool        read bytes, decode/validate, GRM, Qmap groups
      -> hard Patch-DiT actor pool   refines the hard group, passes the rest through
      -> easy Patch-DiT actor pool   refines simple + medium, passes the rest through
      -> StitchWrite actor pool      blend, decode, colour fix, atomic write, manifest row
      -> driver                      collects the small manifest rows, consolidates Parquet

A row is one image carrying all its patches (as tensors, batched per group inside), so there
is no fan-out into tiny rows, no global groupby and no stitch state to lose: memory is bounded
by Ray Data's backpressure, not by the number of images. The two Patch-DiT pools are separate
stages with their own size and resources (GPUs, custom resources), and they run concurrently
on different images, the paper's two-GPU split. Chaining them, rather than filter + union,
keeps the GRM from running twice (Ray Data has no fork)."""
from __future__ import annotations

import json
import logging
import os
import time

from tqdm import tqdm

from .local import plan_inputs, summarize
from .options import UpscaleOptions
from .storage import consolidate

log = logging.getLogger("patchscaler")


def init_ray(address: str | None = None):
    import ray
    if not ray.is_initialized():
        kw = {"address": address} if address else {}
        ray.init(log_to_driver=False, **kw)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = True
    return ray


def _pool(size: int, cpus: float, gpus: float, resources: dict) -> dict:
    from ray.data import ActorPoolStrategy
    # one call at a time per actor: a model call already uses the actor's CPU share
    kw = {"compute": ActorPoolStrategy(size=max(1, size), max_concurrent_calls_per_actor=1),
          "num_cpus": cpus, "batch_size": 1}
    if gpus:
        kw["num_gpus"] = gpus
    if resources:
        kw["resources"] = dict(resources)
    return kw


def build_dataset(opts: UpscaleOptions, pending: list[str], src_is_file: bool):
    import ray
    from actors.stages import DecodeGRM, PatchDiTPool, StitchWrite
    ds = ray.data.from_items([{"input": r} for r in pending], override_num_blocks=max(1, min(len(pending), 1000)))
    ds = ds.map_batches(DecodeGRM, fn_constructor_args=(opts, src_is_file),
                        **_pool(opts.grm_actors, opts.actor_cpus, opts.grm_gpus, opts.grm_resources))
    ds = ds.map_batches(PatchDiTPool, fn_constructor_args=(opts, "hard"),
                        **_pool(opts.hard_actors, opts.actor_cpus, opts.dit_gpus, opts.hard_resources))
    ds = ds.map_batches(PatchDiTPool, fn_constructor_args=(opts, "easy"),
                        **_pool(opts.easy_actors, opts.actor_cpus, opts.dit_gpus, opts.easy_resources))
    ds = ds.map_batches(StitchWrite, fn_constructor_args=(opts, src_is_file),
                        **_pool(opts.stitch_actors, opts.actor_cpus, 0, {}))
    return ds


def run_pipeline(opts: UpscaleOptions) -> dict:
    t0 = time.perf_counter()
    src, dst, inputs, src_is_file, done = plan_inputs(opts)
    name = os.path.basename(src.path)
    pending = [r for r in inputs if (name if src_is_file else r) not in done]
    log.info("%d inputs, %d already done, %d to do (run %s)", len(inputs), len(inputs) - len(pending), len(pending), opts.run_id)
    rows = []
    if pending:
        init_ray(opts.address)
        ds = build_dataset(opts, pending, src_is_file)
        for r in tqdm(ds.iter_rows(), total=len(pending), desc="images", unit="img"):
            r = dict(r)
            r["group_counts"] = json.loads(r["group_counts"])
            rows.append(r)
    manifest = consolidate(dst, opts.run_id)
    summary = summarize(rows, len(inputs) - len(pending), manifest, time.perf_counter() - t0)
    if opts.report and rows:
        from .report import write_report
        summary["report"] = write_report(dst, opts, rows)
    return summary
