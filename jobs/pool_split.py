"""`patchscaler plan SRC --gpus N`: how to split a cluster's accelerators among the GRM pool and
the two Patch-DiT pools for this archive, and the images/hour to expect, from the method run on
a sample of SRC on this machine's device (pipeline/sizing.py says how). Run it on one of the
cluster's own nodes (`--device cuda`) so the measured seconds are the cluster's."""
from __future__ import annotations

import logging

log = logging.getLogger("patchscaler")


def add_args(p) -> None:
    p.add_argument("src", help="an image folder or URI (s3://bucket/prefix): the archive to plan for")
    p.add_argument("--gpus", type=int, default=0,
                   help="accelerators to split among the pools (0: plan CPU actors, --workers)")
    p.add_argument("--workers", type=int, default=3, help="actors to split when --gpus is 0 (default %(default)s)")
    p.add_argument("--sample", type=int, default=3, help="images of SRC to measure, spread over the listing")
    # the model's options are upscale's own (measured here with the in-process device rule:
    # run it on a GPU node to plan GPU pools)
    from jobs.args import add_fields, add_storage_args
    from pipeline.options import UpscaleOptions
    add_fields(p, UpscaleOptions, only=("checkpoint", "device", "precision", "hard_groups"))
    add_storage_args(p)


def sample_names(names: list[str], n: int) -> list[str]:
    """n names spread evenly over the (sorted) listing, so one folder does not stand for all."""
    if len(names) <= n:
        return list(names)
    return [names[round(i * (len(names) - 1) / max(1, n - 1))] for i in range(n)]


def main(a) -> int:
    from patchscaler import flow, imageio
    from patchscaler.model import Runtime, resolve_device
    from patchscaler.upscale import build_default
    from pipeline.sizing import measure, pool_split_text
    from pipeline.listing import list_images
    from jobs.args import storage_options
    from storage import Store, options_for

    src = Store(a.src, options_for(a.src, storage_options(a)))
    names = list_images(src)
    if not names:
        raise SystemExit(f"patchscaler plan: no images in {a.src}")
    chosen = sample_names(names, a.sample)
    preps = []
    for rel in chosen:
        try:
            preps.append(imageio.decode(src.read(rel)))
        except Exception as e:  # a bad image is not a sample
            log.warning("%s: not measured (%s)", rel or a.src, e)
    if not preps:
        raise SystemExit("patchscaler plan: none of the sampled images could be read")
    device = resolve_device(a.device)   # the in-process rule: the measurement runs here
    if a.gpus and not device.startswith("cuda"):
        log.warning("planning %d GPUs on %s: the split follows this machine's relative timings; run plan on "
                    "a GPU node for the cluster's own", a.gpus, device)
    model = build_default(a.checkpoint).configure(Runtime(device=device, precision=a.precision))
    pools = flow.pools(model.cfg, a.hard_groups or None)
    log.info("measuring %d of %d images on %s (%s)", len(preps), len(names), device, model.runtime.precision)
    profile = measure(model, preps)
    workers = a.gpus if a.gpus else a.workers
    print(f"{len(names)} images in {a.src}; {workers} {'GPUs' if a.gpus else 'actors'} to split")
    print(pool_split_text(profile, pools, workers))
    return 0
