"""`patchscaler build-rtm SRC DST`: build a Reference Texture Memory (paper Algorithm 1) from a
folder or bucket of HR images with Ray Data:

    listing -> feature actor pool (read, decode, seeded random crops, codec latents, T keys)
            -> driver: candidates -> farthest point sampling (exact, or two-stage over shards)
            -> FAISS index + keys/values + config, written to DST/rtm-VERSION/

A corrupt image is skipped and listed in the job's summary (and in DST/rtm-VERSION/skipped.json)."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time

import numpy as np
import torch

log = logging.getLogger("patchscaler")


def add_args(p):
    p.add_argument("src", help="folder or URI of HR images")
    p.add_argument("dst", help="folder or URI to write rtm-VERSION/ into")
    p.add_argument("--checkpoint", help="model whose codec and T build the keys (default: shipped)")
    p.add_argument("--crops-per-image", type=int, default=32)
    p.add_argument("--candidates", type=int, default=20000, help="at most this many crops (paper: 20k)")
    p.add_argument("--size", type=int, default=2000, help="RTM entries after FPS (paper: 2k)")
    p.add_argument("--shards", type=int, default=1, help=">1: two-stage FPS over this many shards")
    p.add_argument("--index", choices=["flat", "ivf", "hnsw"], default="flat")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--version", help="RTM version (default: content hash)")
    p.add_argument("--feature-actors", type=int, default=1)
    p.add_argument("--actor-cpus", type=float, default=0.5)
    p.add_argument("--gpus", type=float, default=0.0)
    p.add_argument("--address")
    p.add_argument("--engine", choices=["ray", "local"], default="ray")
    from jobs.cli import add_storage_args
    add_storage_args(p)  # --s3-endpoint, --s3-profile, --storage-options (no secrets)


class CropFeatures:
    """Ray Data callable: one image row -> its crops' keys and values (or a skip record)."""

    def __init__(self, src, src_options, checkpoint, crops, seed):
        from patchscaler.model import Runtime
        from patchscaler.upscale import build_default
        from pipeline.storage import Store
        torch.set_num_threads(1)
        self.src = Store(src, src_options)
        self.model = build_default(checkpoint).configure(Runtime())
        self.crops, self.seed = crops, seed

    def __call__(self, batch):
        rel = batch["input"][0]
        return {k: [v] for k, v in features_for(self.model, self.src, rel, self.crops, self.seed).items()}


def features_for(model, src, rel: str, crops: int, seed: int) -> dict:
    from patchscaler import imageio
    from patchscaler.rtm_build import crop_size, encode_crops, random_crops
    # the crops of an image depend only on (seed, its name): any actor, any order, same RTM
    from jobs.train_data import name_key
    rng = np.random.default_rng([seed, name_key(rel)])
    try:
        prep = imageio.decode(src.read(rel))
        c = random_crops(prep, crop_size(model), crops, rng)
        if len(c) == 0:
            raise imageio.BadImage(f"smaller than one {crop_size(model)} px crop")
        keys, values = encode_crops(model, c)
        return {"input": rel, "error": "", "keys": keys.numpy().tobytes(), "values": values.half().numpy().tobytes(),
                "n": len(c)}
    except Exception as e:
        return {"input": rel, "error": f"{type(e).__name__}: {e}", "keys": b"", "values": b"", "n": 0}


def build(a) -> dict:
    from patchscaler.rtm_build import rtm_meta
    from patchscaler.upscale import build_default
    from pipeline.storage import Store
    from rtm_index.fps import farthest_point_sampling, two_stage_fps
    from rtm_index.store import save_rtm
    t0 = time.perf_counter()
    from jobs.cli import storage_options
    so = storage_options(a)
    src = Store(a.src, so if "://" in a.src else {})
    inputs = src.list_images()
    model = build_default(a.checkpoint)
    C, V = model.cfg.latent_channels, model.cfg.pgs.patch_size
    rows = []
    if a.engine == "local":
        from tqdm import tqdm
        rows = [features_for(model, src, r, a.crops_per_image, a.seed) for r in tqdm(inputs, desc="crops")]
    else:
        import ray
        from ray.data import ActorPoolStrategy
        if not ray.is_initialized():  # no address: a Ray of our own, never another one on this host
            ray.init(address=a.address or os.environ.get("RAY_ADDRESS") or "local", log_to_driver=False)
        ds = ray.data.from_items([{"input": r} for r in inputs], override_num_blocks=max(1, min(len(inputs), 1000)))
        ds = ds.map_batches(CropFeatures, fn_constructor_args=(a.src, src.options, a.checkpoint, a.crops_per_image, a.seed),
                            batch_size=1, compute=ActorPoolStrategy(size=a.feature_actors),
                            num_cpus=a.actor_cpus, **({"num_gpus": a.gpus} if a.gpus else {}))
        rows = list(ds.iter_rows())
    rows.sort(key=lambda r: r["input"])  # arrival order must not change the result
    skipped = [(r["input"], r["error"]) for r in rows if r["error"]]
    good = [r for r in rows if not r["error"]]
    if not good:
        raise SystemExit(f"no usable images among {len(rows)}: {skipped[:3]}")
    d = model.cfg.texture.feature_dim
    keys = torch.from_numpy(np.concatenate([np.frombuffer(r["keys"], np.float32).reshape(-1, d) for r in good]))
    values = torch.from_numpy(np.concatenate([np.frombuffer(r["values"], np.float16).reshape(-1, C, V, V) for r in good]))
    source = np.concatenate([np.full(r["n"], i) for i, r in enumerate(good)])
    if len(keys) > a.candidates:
        pick = np.sort(np.random.default_rng(a.seed).choice(len(keys), a.candidates, replace=False))
        keys, values, source = keys[pick], values[pick], source[pick]
    t_feat = time.perf_counter() - t0
    chosen = (two_stage_fps(keys, a.size, a.shards) if a.shards > 1 else farthest_point_sampling(keys, a.size))
    version = a.version or hashlib.sha256(keys[chosen].numpy().tobytes()).hexdigest()[:12]
    meta = rtm_meta(model, int(len(keys)), int(len(chosen)), a.seed)
    meta["skipped"] = skipped
    meta["entry_sources"] = [good[i]["input"] for i in source[chosen.numpy()]]  # provenance of each entry
    uri = save_rtm(a.dst, version, keys[chosen], values[chosen], meta, a.index,
                   so if "://" in a.dst else {})
    return {"uri": uri, "images": len(inputs), "skipped": skipped, "candidates": int(len(keys)),
            "size": int(len(chosen)), "seconds_features": t_feat, "seconds": time.perf_counter() - t0}


def main(a) -> int:
    s = build(a)
    print(json.dumps({k: v for k, v in s.items()}, indent=1))
    return 0
