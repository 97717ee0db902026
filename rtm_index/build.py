"""The RTM build's steps at dataset scale (paper Algorithm 1; `patchscaler build-rtm`,
jobs/rtm_job.py; the in-process build for small sets is patchscaler/rtm_build.py), so that
no process holds more than the candidates' keys, whatever the dataset's size:

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
from patchscaler.rtm_build import crop_size, encode_crops, random_crops

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
