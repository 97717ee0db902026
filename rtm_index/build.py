"""Building an RTM (paper Algorithm 1): random HR crops -> codec latents (RTM-values) -> T
keys -> farthest point sampling.

In process, for small image sets (`rtm_from_images`: the untrained default model's RTM, tests).
At dataset scale (`patchscaler build-rtm`, jobs/build_rtm.py), the steps below, so that no
process holds more than the candidates' keys, whatever the dataset's size:

1. `candidate_slots`: which crops of which image are candidates, chosen before any feature is
   computed. Every image has `crops_per_image` seeded crop positions (its slots, in listing
   order); when there are more slots than `--candidates`, a seeded sample of the slots is
   kept. So the work and the memory follow the candidate count, not the dataset, and an
   image with no kept slot is never read.
2. `encode_shard` (a feature worker): its images' kept crops -> keys (returned, 4 bytes x d
   per crop) and values (written to one shard file under a scratch folder of DST; the
   driver never holds them).
3. FPS over the keys: exact, or two-stage with each shard of keys sampled in its own Ray task
   (rtm_index/fps.py).
4. `gather_values`: the chosen entries' values, read back from the shard files one at a time.

The candidates are the ones the v0.7 build sampled from all crops (the same slots, the same
seeds); their keys equal up to float rounding (crops are encoded in other batch sizes)."""
from __future__ import annotations

import uuid

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from patchscaler import imageio
from patchscaler.rtm import RTM

from .fps import farthest_point_sampling

# --- in process -----------------------------------------------------------------------------

def random_crops(prep: imageio.Prepared, crop: int, count: int, rng: np.random.Generator) -> torch.Tensor:
    """`count` random crop x crop RGB crops (count, 3, crop, crop); none if the image is smaller."""
    img = prep.rgb[0]
    H, W = img.shape[-2:]
    if H < crop or W < crop:
        return torch.empty(0, 3, crop, crop)
    ys = rng.integers(0, H - crop + 1, count)
    xs = rng.integers(0, W - crop + 1, count)
    return torch.stack([img[:, y:y + crop, x:x + crop] for y, x in zip(ys, xs)])


@torch.no_grad()
def encode_crops(model, crops: torch.Tensor, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """RGB crops -> (keys (n, d) unit vectors, values (n, C, V, V) latents)."""
    keys, values = [], []
    for i in range(0, crops.shape[0], batch):
        z = model.codec.encode(crops[i:i + batch].to(model.device))
        keys.append(model.texture(z).float().cpu())
        values.append(z.float().cpu())
    return torch.cat(keys), torch.cat(values)


def crop_size(model) -> int:
    return model.cfg.pgs.patch_size * model.codec.factor


def rtm_from_images(model, images: list[bytes], crops_per_image: int = 64, size: int = 2000,
                    seed: int = 0) -> RTM:
    rng = np.random.default_rng(seed)
    crops = []
    for data in images:
        try:
            crops.append(random_crops(imageio.decode(data), crop_size(model), crops_per_image, rng))
        except imageio.BadImage:
            continue
    keys, values = encode_crops(model, torch.cat(crops))
    chosen = farthest_point_sampling(keys, size)
    return RTM(keys[chosen], values[chosen].half(), rtm_meta(model, keys.shape[0], len(chosen), seed))


def rtm_meta(model, candidates: int, size: int, seed: int) -> dict:
    c = model.cfg
    return {"codec": c.codec.kind, "codec_factor": c.codec.factor, "patch_size": c.pgs.patch_size,
            "texture_version": c.texture.version, "feature_dim": c.texture.feature_dim,
            "candidates": candidates, "size": size, "seed": seed}


# --- at dataset scale -------------------------------------------------------------------------

SCRATCH = "_build"   # under DST: shard files of builds in progress


def candidate_slots(n_images: int, crops_per_image: int, candidates: int, seed: int) -> list[np.ndarray]:
    """For each image (listing order), the indices of its crop slots that are candidates."""
    k, slots = crops_per_image, n_images * crops_per_image
    every = np.arange(k)
    if slots <= candidates:
        return [every] * n_images
    pick = np.sort(np.random.default_rng(seed).choice(slots, candidates, replace=False))
    bounds = np.searchsorted(pick, np.arange(n_images + 1) * k)
    return [pick[a:b] - i * k for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))]


def image_crops(model, data: bytes, key: int, crops_per_image: int, keep: np.ndarray, seed: int):
    """One image's kept crops (n, 3, s, s): the positions are drawn for all its slots, from
    (seed, the image's key), so they do not depend on which are kept or on the worker."""
    rng = np.random.default_rng([seed, key])
    prep = imageio.decode(data)
    c = random_crops(prep, crop_size(model), crops_per_image, rng)
    if len(c) == 0:
        raise imageio.BadImage(f"smaller than one {crop_size(model)} px crop")
    return c[torch.as_tensor(keep, dtype=torch.long)]


def encode_shard(model, store, scratch: str, items: list[dict], read) -> list[dict]:
    """Feature rows of a batch of images (input, key, keep): each image's keys (float32 bytes),
    crop count and place in the shard file this call writes (its values, float16), or its
    error. `read(rel) -> bytes` reads an input."""
    rows, values = [], []
    offset = 0
    for it in items:
        keep = np.frombuffer(it["keep"], dtype=np.int64)
        try:
            c = image_crops(model, read(it["input"]), int(it["key"]), int(it["crops"]), keep, int(it["seed"]))
            k, v = encode_crops(model, c)
        except Exception as e:
            rows.append({"input": it["input"], "error": f"{type(e).__name__}: {e}", "keys": b"", "n": 0,
                         "shard": "", "offset": 0})
            continue
        rows.append({"input": it["input"], "error": "", "keys": k.float().numpy().tobytes(), "n": len(k),
                     "shard": "", "offset": offset})
        values.append(v.half())
        offset += len(k)
    if values:
        name = f"{scratch}/shard-{uuid.uuid4().hex}.safetensors"
        store.write_atomic(name, st_save({"values": torch.cat(values).contiguous()}))
        for r in rows:
            if not r["error"]:
                r["shard"] = name
    return rows


def gather_values(store, entries: list[tuple[str, int]]) -> torch.Tensor:
    """The values at (shard file, row) for each chosen entry, in that order, reading one shard
    file at a time."""
    by_shard: dict[str, list[tuple[int, int]]] = {}
    for pos, (shard, row) in enumerate(entries):
        by_shard.setdefault(shard, []).append((pos, row))
    out = None
    for shard, wanted in sorted(by_shard.items()):
        v = st_load(store.read(shard))["values"]
        if out is None:
            out = torch.empty((len(entries), *v.shape[1:]), dtype=v.dtype)
        pos, rows = zip(*wanted)
        out[list(pos)] = v[list(rows)]
        del v
    return out if out is not None else torch.empty(0)


def keys_matrix(rows: list[dict], dim: int) -> np.ndarray:
    """The good rows' keys as one (N, dim) float32 matrix."""
    return np.concatenate([np.frombuffer(r["keys"], np.float32).reshape(-1, dim) for r in rows]) \
        if rows else np.empty((0, dim), np.float32)


def new_scratch() -> str:
    return f"{SCRATCH}/{uuid.uuid4().hex[:12]}"
