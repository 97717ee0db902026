"""`patchscaler build-rtm SRC DST`: build a Reference Texture Memory (paper Algorithm 1) from a
folder or bucket of HR images with Ray Data, in memory that follows the candidate count, not
the dataset (rtm_index/build.py):

    listing -> candidate slots (which seeded crops of which image are candidates)
            -> feature actor pool (read, decode, the kept crops, codec latents -> values written
               in shard files under DST/_build/, T keys returned)
            -> farthest point sampling over the keys (exact, or two-stage: a Ray task per shard)
            -> the chosen values read back from the shards
            -> FAISS index + keys/values + config, written to DST/rtm-VERSION/

A corrupt image is skipped and listed in the job's summary (and in rtm.json's "skipped")."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from jobs.args import add_fields, add_storage_args, storage_options
from pipeline.fields import opt

log = logging.getLogger("patchscaler")
SHARD_IMAGES = 16   # images per feature call, and per shard file of values


@dataclass
class BuildRTMOptions:
    """One RTM build's options; `patchscaler build-rtm`'s command line is built from them (plus
    the storage arguments)."""
    src: str = opt(help="folder or URI of HR images", positional=True)
    dst: str = opt(help="folder or URI to write rtm-VERSION/ into", positional=True)
    checkpoint: str | None = opt(None, "model whose codec and T build the keys (default: shipped)")
    crops_per_image: int = opt(32, "random crops per image", type=int)
    candidates: int = opt(20000, "at most this many crops (paper: 20k)", type=int)
    size: int = opt(2000, "RTM entries after farthest point sampling (paper: 2k)", type=int)
    shards: int = opt(1, ">1: two-stage FPS over this many shards", type=int)
    index: str = opt("flat", "FAISS index kind", choices=["flat", "ivf", "hnsw"])
    seed: int = opt(0, "seed of the crops and of FPS's first pick", type=int)
    version: str | None = opt(None, "RTM version (default: content hash)")
    feature_actors: int = opt(1, "Ray: feature actors", type=int)
    actor_cpus: float = opt(0.5, "Ray: CPUs each feature actor reserves", type=float)
    gpus: float = opt(0.0, "Ray: GPUs each feature actor reserves", type=float)
    address: str | None = opt(None, "Ray cluster address (default: a local Ray)")
    engine: str = opt("ray", "ray: feature actors on Ray Data; local: in this process", choices=["ray", "local"])
    s3_endpoint: str | None = None
    s3_profile: str | None = None
    storage_options: dict = field(default_factory=dict)

    def namespace(self) -> argparse.Namespace:
        """What build() reads (it takes the parsed command line)."""
        return argparse.Namespace(**dataclasses.asdict(self))


def add_args(p):
    add_fields(p, BuildRTMOptions)
    add_storage_args(p)  # --s3-endpoint, --s3-profile, --storage-options (no secrets)


def build(a) -> dict:
    """Build an RTM (rtm_index/build.py has the steps and why): candidate slots -> feature shards ->
    FPS over the keys -> the chosen values gathered from the shards -> DST/rtm-VERSION/."""
    from jobs.train_data import name_key
    from patchscaler.upscale import build_default
    from pipeline.listing import list_images
    from patchscaler.rtm_build import farthest_point_sampling, rtm_meta
    from rtm_index.build import candidate_slots, encode_shard, gather_values, keys_matrix, new_scratch
    from rtm_index.fps import two_stage_fps
    from rtm_index.format import save_rtm
    from storage import Store, options_for
    t0 = time.perf_counter()
    so = storage_options(a)
    src, dst = Store(a.src, options_for(a.src, so)), Store(a.dst, options_for(a.dst, so))
    inputs = list_images(src)
    keep = candidate_slots(len(inputs), a.crops_per_image, a.candidates, a.seed)
    items = [{"input": r, "key": name_key(r), "keep": k.astype(np.int64).tobytes(), "crops": a.crops_per_image,
              "seed": a.seed} for r, k in zip(inputs, keep) if len(k)]
    del keep
    model = build_default(a.checkpoint, components=("texture",))  # the codec and T make the keys
    d = model.cfg.texture.feature_dim
    scratch = new_scratch()
    fps_trace = []
    try:
        if a.engine == "local":
            from tqdm import tqdm
            rows = []
            for i in tqdm(range(0, len(items), SHARD_IMAGES), desc="crops", unit="shard"):
                rows += encode_shard(model, dst, scratch, items[i:i + SHARD_IMAGES], src.read)
            map_shards = None
        else:
            from actors.rtm_shards import CropFeatures, fps_shard
            from actors.runtime import init_ray, pool
            ray = init_ray(a.address)
            ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 1000)))
            ds = ds.map_batches(CropFeatures, fn_constructor_args=(a.src, src.options, a.dst, dst.options, scratch,
                                                                  a.checkpoint),
                                **pool(a.feature_actors, a.actor_cpus, a.gpus, rows=SHARD_IMAGES))
            rows = list(ds.iter_rows())    # keys only: the values stay in the shard files
            task = ray.remote(num_cpus=a.actor_cpus)(fps_shard)

            def map_shards(work):
                out = ray.get([task.remote(chunk, k) for chunk, k in work])
                fps_trace.extend(where for _, where in out)
                return [picked for picked, _ in out]
        del items
        rows.sort(key=lambda r: r["input"])  # arrival order must not change the result
        skipped = [(r["input"], r["error"]) for r in rows if r["error"]]
        good = [r for r in rows if not r["error"]]
        if not good:
            raise SystemExit(f"no usable images among {len(rows)}: {skipped[:3]}")
        keys = torch.from_numpy(keys_matrix(good, d))
        entries = [(r["shard"], r["offset"] + j) for r in good for j in range(r["n"])]
        source = np.concatenate([np.full(r["n"], i) for i, r in enumerate(good)])
        for r in good:
            r["keys"] = b""                # the matrix has them now
        t_feat = time.perf_counter() - t0
        chosen = (two_stage_fps(keys, a.size, a.shards, map_shards=map_shards) if a.shards > 1
                  else farthest_point_sampling(keys, a.size))
        values = gather_values(dst, [entries[i] for i in chosen.tolist()])
    finally:
        with contextlib.suppress(Exception):
            if dst.fs.exists(dst.full(scratch)):
                dst.fs.rm(dst.full(scratch), recursive=True)
        if dst.is_local:
            with contextlib.suppress(OSError):
                os.rmdir(dst.full(scratch.split("/")[0]))
    version = a.version or hashlib.sha256(keys[chosen].numpy().tobytes()).hexdigest()[:12]
    meta = rtm_meta(model, int(len(keys)), int(len(chosen)), a.seed)
    meta["skipped"] = skipped
    meta["entry_sources"] = [good[i]["input"] for i in source[chosen.numpy()]]  # provenance of each entry
    uri = save_rtm(a.dst, version, keys[chosen], values, meta, a.index, dst.options)
    return {"uri": uri, "images": len(inputs), "skipped": skipped, "candidates": int(len(keys)),
            "size": int(len(chosen)), "seconds_features": t_feat, "seconds": time.perf_counter() - t0,
            "fps_tasks": fps_trace}


def main(a) -> int:
    s = build(a)
    print(json.dumps({k: v for k, v in s.items()}, indent=1))
    return 0
