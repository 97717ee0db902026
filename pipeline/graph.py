"""The upscale job as one streaming Ray Data graph (wired here and nowhere else):

    worklist (driver, worklist.py: SRC/DST checks, killed runs' rows folded, listing, resume, output names)
      -> split_pieces task           read each header: one row per piece (reading.py), one row per
                                     block, so a photo's pieces spread over the actors
      -> DecodeGRM actor pool        read bytes, decode the piece's crop, GRM, Qmap groups
      -> a Patch-DiT actor pool per pool, in flow.pools' order:
           hard                      refines the hard group, passes the rest through
           easy                      refines simple + medium, passes the rest through
      -> StitchWrite actor pool      blend, decode, colour fix; a photo's atomic write and manifest
                                     row (writing.py; a piece of a larger photo goes to scratch:
                                     whoever finishes its last piece, as the run's hub says,
                                     puts the photo together, assembly.py)
      -> driver                      counts the small manifest rows, consolidates Parquet
    (every stage also tells the run's RunHub actor what it finished: one progress line per stage)

Each stage is a step of the photo plan (patchscaler/photo.py), which the in-process engine runs
as a loop; the stages are stages.py, one class each, and so are their rows (PieceRow).

A row is one piece of a photo carrying all its patches (a compact state: flow.py), so there is
no fan-out into tiny rows, no global groupby and no stitch state to lose: memory is bounded by
Ray Data's backpressure and the piece size, not by the number or the size of the photos.
An actor that dies on a piece is restarted and the piece tried once more; a second death
drops the piece and its photo gets an error row naming the stage ("actor died"). The two Patch-DiT pools are separate
stages with their own size and resources (GPUs, custom resources), and they run concurrently
on different images, the paper's two-GPU split. Chaining them, rather than filter + union,
keeps the GRM from running twice (Ray Data has no fork)."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time

from patchscaler import flow

from actors.hub import RunHub
from actors.runtime import check_devices, init_ray, pool

from .assembly import remove_scratch
from .manifest import remove_parts
from .options import UpscaleOptions
from .progress import PipelineProgress, Progress
from .run_model import hard_groups
from .sizing import split
from .stages import DecodeGRM, PatchDiTPool, PieceRow, StitchWrite, from_photo_row, split_pieces
from .summary import close_run, open_run, stopped_by_storage
from .tally import Tally
from .worklist import Worklist
from .writing import write_error

log = logging.getLogger("patchscaler")
SPLIT_TASKS = 2   # header-reading tasks at a time (they reserve no CPU: see _build_dataset)
ONE_ROW_BYTES = 1   # the datasets' target block size (one_row_per_block)
AUTO_SAMPLE = 2     # --pools auto: photos in the first wave at least (and one per actor it sizes)


def build_dataset(work: Worklist, cfg, pools, hub=None, inputs: list[str] | None = None):
    """The graph over `inputs` (default: every pending input of the worklist); `cfg`: the
    run's model config, `pools`: its Patch-DiT pools (flow.pools), each a stage."""
    import warnings
    with warnings.catch_warnings():
        # Ray 2.60 deprecates ray_remote_args_fn, the one way to bound an actor's task retries
        # (actors/runtime.py); nothing a user can act on
        warnings.filterwarnings("ignore", message=".*ray_remote_args_fn.*")
        return _build_dataset(work, cfg, pools, hub, work.pending if inputs is None else inputs)


def _build_dataset(work: Worklist, cfg, pools, hub, pending: list[str]):
    import ray
    from ray.data import TaskPoolStrategy
    opts = work.opts
    items = [PieceRow(input=r, naming=json.dumps(work.names[r])).to_dict() for r in pending]
    with one_row_per_block():
        ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(pending), 1000)))
    # reading headers costs next to nothing: a task that reserves no CPU (a 1-CPU head whose
    # actors hold it all must still run it). Reserving nothing, it must be bounded otherwise:
    # Ray Data would start a task, and a worker process, per block (a hundred and more processes
    # of ~150 MB each on an archive); SPLIT_TASKS at a time keep ahead of the GRM pool.
    ds = ds.map_batches(split_pieces, fn_kwargs={"opts": opts, "cfg": cfg, "hub": hub}, batch_size=1,
                        num_cpus=0, compute=TaskPoolStrategy(size=SPLIT_TASKS))
    ds = ds.map_batches(DecodeGRM, fn_constructor_args=(opts, pools, hub),
                        **pool(opts.grm_actors, opts.actor_cpus, opts.grm_gpus, opts.grm_resources))
    rows = opts.dit_images or (8 if opts.dit_gpus else 1)  # a GPU wants many patches per call
    for name, groups in pools:   # each its own stage: its own size and resources (--hard-actors, --easy-resources)
        ds = ds.map_batches(PatchDiTPool, fn_constructor_args=(opts, name, groups, hub),
                            **pool(getattr(opts, f"{name}_actors"), opts.actor_cpus, opts.dit_gpus,
                                   getattr(opts, f"{name}_resources"), rows))
    ds = ds.map_batches(StitchWrite, fn_constructor_args=(opts, hub),
                        **pool(opts.stitch_actors, opts.actor_cpus, 0, {}))
    return ds


@contextlib.contextmanager
def one_row_per_block():
    """A dataset created inside has blocks of one row at every stage: the header split emits a
    photo's pieces together, and an actor pool takes a block whole, so one row per block is what
    spreads a photo's pieces over the actors of each pool. Ray Data cuts each stage's output into
    blocks of at most DataContext.target_max_block_size bytes, never less than a row; a Dataset
    keeps the DataContext current when it is created (Ray Data's documented way to tune one
    dataset), so the run's datasets get ONE_ROW_BYTES and the process's context is given back.
    (Ray 2.60's public `repartition(target_num_rows_per_block=1)` would do the same as a stage of
    its own, but it takes neither resources nor a pool size: its tasks reserve a whole CPU each,
    which a 2-core host whose actors hold more than one CPU, or a 1-CPU head whose actors hold it
    all, cannot give, and the run waits forever.)"""
    from ray.data import DataContext
    ctx = DataContext.get_current()
    kept = ctx.target_max_block_size
    ctx.target_max_block_size = ONE_ROW_BYTES
    try:
        yield
    finally:
        ctx.target_max_block_size = kept


def pool_actors(opts: UpscaleOptions, pools) -> dict[str, int]:
    """The actors of the GRM and of each Patch-DiT pool (`pools`: flow.pools), by name."""
    return {"grm": opts.grm_actors, **{name: getattr(opts, f"{name}_actors") for name, _ in pools}}


def auto_pools(opts: UpscaleOptions, pools, busy: dict[str, float], photos: int) -> UpscaleOptions:
    """The options with the GRM and Patch-DiT pools' (`pools`) actor counts re-split (same
    total, pipeline/sizing.py) by the seconds their actors spent (`busy`, the hub's) on the
    first wave's `photos` photos: measured where the run computes, on its own devices."""
    actors = pool_actors(opts, pools)
    names = list(actors)
    seconds = {k: busy.get(k, 0.0) / max(1, photos) for k in names}   # per photo
    if not photos or not any(seconds.values()):
        log.info("pools kept: no photo of the first wave was upscaled to measure them by")
        return opts
    sizes = split(seconds, sum(actors.values()))
    log.info("pools from the work of %d photo(s) (s/photo: %s): %s", photos,
             ", ".join(f"{k} {seconds[k]:.2f}" for k in names), ", ".join(f"{k} {sizes[k]} actors" for k in names))
    return dataclasses.replace(opts, **{f"{k}_actors": sizes[k] for k in names})


def run_pipeline(opts: UpscaleOptions, progress: Progress | None = None) -> dict:
    t0 = time.perf_counter()
    work, not_read = open_run(opts)
    tally, stages, peaks = Tally(), {}, {}
    if work.pending:
        cfg = work.cfg
        # the photo plan's Patch-DiT pools, each a stage; a --hard-groups the model does not have
        # fails here, before Ray starts, not in the actors
        pools = flow.pools(cfg, hard_groups(opts, cfg))
        ray = init_ray(opts.address, opts.verbose)
        own = not (opts.address or os.environ.get("RAY_ADDRESS"))
        devices = check_devices({"GRM": (opts.grm_gpus, opts.grm_resources),
                                 **{f"{name} Patch-DiT": (opts.dit_gpus, getattr(opts, f"{name}_resources"))
                                    for name, _ in pools}}, opts.device, own)
        for name, d in devices.items():
            log.info("%s stage: %s (GPU ids %s)", name, d["device"], ",".join(d["gpu_ids"]) or "none")
        hub = ray.remote(num_cpus=0)(RunHub).remote()
        down = None
        with PipelineProgress(hub, len(work.pending), progress or Progress()) as pp:
            # --pools auto: a first wave, a photo per actor, run with the sizes given, measures
            # the work that re-splits them for the rest
            first = max(AUTO_SAMPLE, sum(pool_actors(opts, pools).values())) if opts.pools == "auto" else None
            size = max(1, opts.wave)
            count = wave_count(len(work.pending), size, first)
            for i, wave in enumerate(waves(work.pending, size, first)):
                if count > 1:
                    log.info("wave %d of %d: %d photo%s, from %s", i + 1, count, len(wave),
                             "" if len(wave) == 1 else "s", wave[0])
                down = _run_wave(build_dataset(work, cfg, pools, hub, wave), tally)
                if down is not None:
                    break
                if i == 0 and first and count > 1:
                    work.opts = opts = auto_pools(opts, pools, ray.get(hub.busy_seconds.remote()), tally.ok)
        if down is not None:
            ray.kill(hub)
            raise stopped_by_storage(work, tally, down)
        stages = pp.final
        for r in _lost(work, tally.seen, ray.get(hub.stuck.remote()), cfg.version):
            tally.add(r)
        peaks = ray.get(hub.peak_memory.remote())
        log.info("peak memory per actor: %s", ", ".join(f"{k} {v:.2f} GiB" for k, v in peaks.items()))
        ray.kill(hub)
        remove_parts(work.dst, opts.run_id)
    return close_run(work, tally, time.perf_counter() - t0, not_read, stages=stages, actor_peaks=peaks)


def waves(pending: list[str], size: int, first: int | None = None):
    """The pending inputs in consecutive runs of at most `size` (>= 1), the first of at most
    `first` if given. Ray Data keeps state per block for the whole of a run (each queued piece's
    block and its statistics: ~45 KB per photo on the driver, measured), so an archive is run as
    waves and the driver's memory is bounded by a wave, not by the archive; the actors start anew
    for each wave."""
    start = min(first or 0, size, len(pending))
    if start:
        yield pending[:start]
    for i in range(start, len(pending), size):
        yield pending[i:i + size]


def wave_count(n: int, size: int, first: int | None = None) -> int:
    """How many waves `waves` makes of `n` inputs (counted, not listed: the lists would copy an
    archive's names once more)."""
    start = min(first or 0, size, n)
    return (start > 0) + -(-(n - start) // size)


def _run_wave(ds, tally: Tally) -> str | None:
    """Count one wave's manifest rows; the error of a storage that stayed down, if one came back."""
    for r in ds.iter_rows():
        if r["status"] == "part":
            continue
        if r["status"] == "interrupted":    # only the storage stops a photo in the stages
            return r["error"]      # the storage stayed down: stop here, not one error per photo
        tally.add(from_photo_row(r))
    return None


def _lost(work: Worklist, seen: set[str], stuck: dict[str, str], version: str) -> list[dict]:
    """Error rows for the photos that came back with no row: a piece of theirs killed its actor
    on both tries (a crash in a decoder, the kernel's OOM killer) and was dropped."""
    out = []
    for rel in work.pending:
        if rel in seen:
            continue
        stage = stuck.get(rel, "an unknown stage")
        log.warning("%s: its worker died twice in the %s stage; recorded as failed", rel, stage)
        why = (f"actor died: processing it killed its worker in the {stage} stage (twice); a crash or the "
               "out-of-memory killer")
        r = write_error(work.dst, work.opts, rel, why, version, work.names.get(rel))
        remove_scratch(work.dst, work.opts, rel)
        out.append({**r.__dict__})
    return out
