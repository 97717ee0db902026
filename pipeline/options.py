"""Options of the upscale job, declared once: `patchscaler upscale`'s command line is built
from these fields."""
from __future__ import annotations

import argparse
import secrets
import time
from dataclasses import dataclass, field

from storage.failures import STORAGE_RETRY_S

from . import fields as values
from .fields import library_constant, opt

# the library's defaults and choices (fields.library_constant says why they are read, not imported)
PIECE = library_constant("patchscaler.pieces:DEFAULT_PIECE")
MAX_BATCH = library_constant("patchscaler.model:MAX_BATCH")
PRECISION_CHOICES = ("auto", *library_constant("patchscaler.model:PRECISIONS"))
TAUS = library_constant("patchscaler.config:PGSConfig.taus")
STEPS = library_constant("patchscaler.config:PGSConfig.steps")


def _csv(values: tuple) -> str:
    return ",".join(map(str, values))


@dataclass
class UpscaleOptions:
    """One upscale run's options; the command line `patchscaler upscale` is built from the fields
    declared with `opt` (jobs/args.py), in this order."""
    src: str = opt(help="an image file, a folder or any fsspec URI (s3://bucket/prefix)", positional=True)
    dst: str = opt(help="output folder or URI, outside SRC; outputs keep the inputs' relative names",
                   positional=True)
    src_options: dict = field(default_factory=dict)   # fsspec options, e.g. S3 endpoint/credentials
    dst_options: dict = field(default_factory=dict)
    rtm_options: dict = field(default_factory=dict)   # for an --rtm URI (its own store, not SRC's)
    checkpoint_options: dict = field(default_factory=dict)   # for a --checkpoint URI
    address: str | None = opt(None, "Ray cluster address (e.g. ray://head:10001 or auto)")
    checkpoint: str | None = opt(None, "model: a shipped one by name, default (the default) or compact (a cheaper, "
                                      "softer GRM; patchscaler/weights/MODEL_CARD.md), or a checkpoint's path or URI")
    rtm: str | None = opt(None, "RTM folder written by build-rtm (FAISS index); default: the checkpoint's")
    seed: int = opt(0, "the diffusion's noise seed (default 0); the same seed gives the same pixels", type=int)
    out_format: str | None = opt(None, "output format: JPEG, PNG, WEBP, TIFF or BMP; default: as the input "
                                 "(GIF -> PNG)", flags=("--format",), type=values.image_format,
                                 metavar="FORMAT")
    quality: int = opt(95, "JPEG and WEBP quality (default 95)", type=values.quality, metavar="1-100")
    # the output's scale, 1-4 (the x4 result resized, Lanczos); None = the model's (x4)
    outscale: float | None = opt(None, "output scale from 1 to 4, e.g. 2 or 1.5: the x4 result resized (Lanczos, "
                                 "antialiased) before it is written; default 4", type=values.outscale)
    # LR px per side of a piece (patchscaler/pieces.py): a larger photo is split into pieces
    # with a halo, processed as separate rows, so memory does not grow with its size
    piece_size: int = opt(PIECE, "a photo larger than this many input px on a side is processed in pieces with a "
                          "halo, each its own row, so memory stays bounded and one photo spreads over the actors "
                          f"(default {PIECE}; docs/usage.md 'Big photos')", type=values.positive_int, metavar="PX")
    resume: bool = opt(True, "skip images whose output exists and was made from the same input (size and mtime; "
                       "an object's ETag) with the same settings (default); --no-resume redoes them all",
                       action=argparse.BooleanOptionalAction)
    # an input that failed as a bad image (or killed its worker) and has not changed since is
    # skipped as "still bad" unless this is set
    retry_failed: bool = opt(False, "try again inputs that failed as bad images and have not changed since (by "
                             "default they are listed as still bad and the run can exit 0)", action="store_true")
    max_pixels: int = opt(16_000_000, "refuse larger inputs (input pixels, default 16 M: the guard against "
                          "decompression bombs; the in-process engine holds the decoded input, 12 bytes per pixel, "
                          "and the output, 16 x 3 bytes per input pixel at x4)", type=values.positive_int)
    storage_retry: float = opt(STORAGE_RETRY_S, "seconds of retries (exponential backoff with jitter) a read or "
                               "write of one object may take through dropped connections, timeouts, 5xx and "
                               "SlowDown answers before the storage counts as down and the run stops with exit 4 "
                               f"(default {STORAGE_RETRY_S:g})", type=float, metavar="S")
    # "auto": in-process, cuda if torch sees it, else cpu; a Ray stage, cuda if it reserved GPUs
    # (--grm-gpus, --dit-gpus), else cpu. An explicit device overrides for in-process runs and
    # the stages with GPUs (patchscaler.model.resolve_device)
    device: str = opt("auto", "auto (default): in-process, cuda if torch sees one, else cpu; in the Ray engine "
                      "each stage that reserves GPUs (--grm-gpus, --dit-gpus) runs on them, the others on the CPU. "
                      "A device given here overrides for the in-process engine and the GPU stages")
    precision: str = opt("auto", "auto (default): bf16-dit (the Patch-DiT in bf16, the GRM in fp32) where the "
                         "device computes bf16 natively (CUDA, AVX512-BF16/AMX), else fp32",
                         choices=PRECISION_CHOICES)
    max_batch: int = opt(MAX_BATCH, f"patches per Patch-DiT call (default {MAX_BATCH})", type=int)
    # torch.compile backend for the Patch-DiT ("" = off); --compile-backend NAME is its other form
    compile: str = opt("", "torch.compile the Patch-DiT: 0.87x its time on a 2-core CPU after a one-time "
                       "compile of 2-5 min per process (needs a C++ compiler); for long jobs",
                       action="store_const", const="inductor")
    thresholds: tuple[float, ...] | None = opt(None, "Qmap thresholds, descending (default: the checkpoint's "
                                               "calibrated ones)", type=values.floats)
    taus: tuple[int, ...] | None = opt(None, f"shortcut point per group (default: the checkpoint's, {_csv(TAUS)})",
                                       type=values.ints)
    steps: tuple[int, ...] | None = opt(None, f"sampling steps per group (default: the checkpoint's, {_csv(STEPS)})",
                                        type=values.ints)
    # a deployment choice, not the model's: it does not change the model version
    hard_groups: tuple[int, ...] | None = opt(None, "groups the hard Patch-DiT pool serves, e.g. 2 or 3,4 "
                                              "(default: the checkpoint's, or the last group when --thresholds "
                                              "changes the number of groups)", type=values.ints)
    grm_actors: int = opt(1, "Ray: decode + GRM actors (default 1)", type=values.positive_int, ray_only=True)
    hard_actors: int = opt(1, "Ray: Patch-DiT actors for hard patches (default 1)", type=values.positive_int,
                           ray_only=True)
    easy_actors: int = opt(1, "Ray: Patch-DiT actors for simple and medium patches (default 1)",
                           type=values.positive_int, ray_only=True)
    stitch_actors: int = opt(1, "Ray: stitch + write actors (default 1)", type=values.positive_int, ray_only=True)
    # the photos of one Ray Data run: an archive runs as consecutive waves, so what Ray Data keeps
    # per block (queued pieces, per-block stats) is bounded by a wave, not by the archive
    wave: int = opt(2000, "Ray: photos per wave (default 2000): an archive runs as consecutive Ray Data runs of "
                    "this many photos, so the driver's memory does not grow with the archive; each wave starts "
                    "its actors anew (seconds)", type=values.positive_int, metavar="N")
    actor_cpus: float = opt(0.25, "Ray: CPUs each actor reserves (default 0.25; whole CPUs on a 2-core host "
                            "stall the pipeline)", type=float)
    grm_gpus: float = opt(0.0, "Ray: GPUs each GRM actor reserves (fractions share one)", type=float, ray_only=True)
    dit_gpus: float = opt(0.0, "Ray: GPUs each Patch-DiT actor reserves", type=float, ray_only=True)
    dit_images: int = opt(0, "images per Patch-DiT call, patches batched by group (default: 8 with --dit-gpus, "
                          "else 1)", type=int)
    # "auto": the GRM / hard / easy actor counts re-split, keeping their total, by the seconds
    # their actors spent on a first wave of a photo per actor (pipeline/graph.py, sizing.py)
    pools: str = opt("fixed", "auto: run a first wave of a photo per actor, then re-split the GRM/hard/easy "
                     "actors (same total) by the work they measured on it", choices=["fixed", "auto"],
                     ray_only=True)
    grm_resources: dict = opt(help="Ray custom resources per GRM actor, JSON or k=v,k=v (see cluster.yaml)",
                              factory=dict, type=values.resources, metavar="RES", ray_only=True)
    hard_resources: dict = opt(help="Ray custom resources per hard Patch-DiT actor", factory=dict,
                               type=values.resources, metavar="RES", ray_only=True)
    easy_resources: dict = opt(help="Ray custom resources per easy Patch-DiT actor", factory=dict,
                               type=values.resources, metavar="RES", ray_only=True)
    # a timestamp plus a random suffix: two runs started in the same second never share an id
    run_id: str = opt(help="run id (default: a timestamp and a random suffix)", cli_default=None,
                      factory=lambda: time.strftime("%Y%m%dT%H%M%S-") + secrets.token_hex(3))
    report: bool = opt(True, "write no HTML report", flags=("--no-report",), action="store_false")
    verbose: bool = opt(False, "Ray's own logs and progress bars, and tracebacks for errors",
                        flags=("-v", "--verbose"), action="store_true")
    settings: str = ""                # settings_key of this run (set by the worklist)


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
