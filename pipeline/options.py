"""Options of the upscale job (CLI flags map one to one)."""
from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field


@dataclass
class UpscaleOptions:
    src: str
    dst: str
    src_options: dict = field(default_factory=dict)   # fsspec options, e.g. S3 endpoint/credentials
    dst_options: dict = field(default_factory=dict)
    rtm_options: dict = field(default_factory=dict)   # for an --rtm URI (its own store, not SRC's)
    checkpoint: str | None = None                     # None = the shipped default
    rtm: str | None = None                            # an RTM folder from build-rtm (FAISS); None = the checkpoint's
    seed: int = 0
    out_format: str | None = None                     # None = same as input
    # the output's scale, 1-4 (the x4 result resized, Lanczos); None = the model's (x4)
    outscale: float | None = None
    # LR px per side of a piece (patchscaler/pieces.py): a larger photo is split into pieces
    # with a halo, processed as separate rows, so memory does not grow with its size
    piece_size: int = 768
    quality: int = 95
    resume: bool = True
    max_pixels: int = 16_000_000
    # "auto": in-process, cuda if torch sees it, else cpu; a Ray stage, cuda if it reserved GPUs
    # (--grm-gpus, --dit-gpus), else cpu. An explicit device overrides for in-process runs and
    # the stages with GPUs (patchscaler.model.resolve_device)
    device: str = "auto"
    precision: str = "auto"                           # auto: bf16-dit where the device computes bf16 natively
    max_batch: int = 64
    compile: str = ""                                 # torch.compile backend for the Patch-DiT ("" = off)
    thresholds: tuple[float, ...] | None = None
    taus: tuple[int, ...] | None = None
    steps: tuple[int, ...] | None = None
    # groups the hard Patch-DiT pool serves (a deployment choice, not the model's: it does not
    # change the model version); None: the checkpoint's, or the last group when --thresholds
    # changes the number of groups
    hard_groups: tuple[int, ...] | None = None
    # a timestamp plus a random suffix: two runs started in the same second never share an id
    run_id: str = field(default_factory=lambda: time.strftime("%Y%m%dT%H%M%S-") + secrets.token_hex(3))
    # Ray engine
    address: str | None = None
    grm_actors: int = 1
    hard_actors: int = 1
    easy_actors: int = 1
    stitch_actors: int = 1
    actor_cpus: float = 0.25          # fractional CPUs per actor (on 2 cores whole CPUs hang)
    grm_gpus: float = 0.0
    dit_gpus: float = 0.0
    # images per Patch-DiT call, their patches batched by group (0: 8 with GPUs, else 1)
    dit_images: int = 0
    # "auto": the GRM / hard / easy actor counts re-split from the work measured on the first
    # images (pipeline/sizing.py), keeping their total
    pools: str = "fixed"
    grm_resources: dict = field(default_factory=dict)   # custom resources per pool
    hard_resources: dict = field(default_factory=dict)
    easy_resources: dict = field(default_factory=dict)
    report: bool = True
    verbose: bool = False             # Ray's own logs and progress bars too
    # an input that failed as a bad image (or killed its worker) and has not changed since is
    # skipped as "still bad" unless this is set
    retry_failed: bool = False
    settings: str = ""                # settings_key of this run (set by the plan)


def settings_key(opts: UpscaleOptions, model_version: str) -> str:
    """A short key of everything that decides an output's pixels or bytes: the model's version,
    the seed, the sampling overrides, the output format, quality and scale. An output made with
    another key is made again on resume; device, precision, batch sizes and pools are not in it
    (they change pixels by float rounding at most)."""
    import hashlib
    import json
    fields = {"model": model_version, "seed": opts.seed, "thresholds": opts.thresholds, "taus": opts.taus,
              "steps": opts.steps, "format": (opts.out_format or "").upper(), "quality": opts.quality,
              "outscale": opts.outscale, "rtm": opts.rtm}
    return hashlib.sha1(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:12]
