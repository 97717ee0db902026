"""`patchscaler build-rtm SRC DST`: build a Reference Texture Memory (paper Algorithm 1) from a
folder or bucket of HR images with Ray Data:

    listing -> feature actor pool (read, decode, seeded random crops, codec latents, T keys)
            -> driver: candidates -> farthest point sampling (exact, or two-stage over shards)
            -> FAISS index + keys/values + config, written to DST/rtm-VERSION/

A corrupt image is skipped and listed in the job's summary (and in DST/rtm-VERSION/skipped.json)."""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from jobs.args import add_fields, add_storage_args, storage_options
from pipeline.fields import opt

log = logging.getLogger("patchscaler")


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
