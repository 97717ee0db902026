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


def features_for(model, src, rel: str, crops: int, seed: int) -> dict:
    """In process: one image's crops' keys and values (rtm_index.features.crop_features)."""
    from jobs.train_data import name_key
    from rtm_index.features import crop_features
    try:
        data = src.read(rel)
    except Exception as e:
        return {"input": rel, "error": f"{type(e).__name__}: {e}", "keys": b"", "values": b"", "n": 0}
    return crop_features(model, data, rel, name_key(rel), crops, seed)


def build(a) -> dict:
    from patchscaler.rtm_build import rtm_meta
    from patchscaler.upscale import build_default
    from pipeline.storage import list_images
    from rtm_index.fps import farthest_point_sampling, two_stage_fps
    from rtm_index.store import save_rtm
    t0 = time.perf_counter()
    from jobs.cli import storage_options
    from storage import Store, options_for
    so = storage_options(a)
    src = Store(a.src, options_for(a.src, so))
    inputs = list_images(src)
    model = build_default(a.checkpoint, parts=("texture",))  # the codec and T make the keys
    C, V = model.cfg.latent_channels, model.cfg.pgs.patch_size
    rows = []
    if a.engine == "local":
        from tqdm import tqdm
        rows = [features_for(model, src, r, a.crops_per_image, a.seed) for r in tqdm(inputs, desc="crops")]
    else:
        from actors.rtm import CropFeatures
        from actors.runtime import init_ray, pool
        from jobs.train_data import name_key
        ray = init_ray(a.address)
        items = [{"input": r, "key": name_key(r)} for r in inputs]
        ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(inputs), 1000)))
        ds = ds.map_batches(CropFeatures, fn_constructor_args=(a.src, src.options, a.checkpoint, a.crops_per_image, a.seed),
                            **pool(a.feature_actors, a.actor_cpus, a.gpus))
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
                   options_for(a.dst, so))
    return {"uri": uri, "images": len(inputs), "skipped": skipped, "candidates": int(len(keys)),
            "size": int(len(chosen)), "seconds_features": t_feat, "seconds": time.perf_counter() - t0}


def main(a) -> int:
    s = build(a)
    print(json.dumps({k: v for k, v in s.items()}, indent=1))
    return 0
