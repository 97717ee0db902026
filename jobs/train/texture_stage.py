"""Stage `texture`: the texture extractor T, self-supervised on the texture images (InfoNCE
between two augmented crops of one texture); reports top-1 retrieval accuracy on held-out
textures."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from jobs.train_data import load_rgb
from jobs.trainstate import Dist

from .train_options import TrainOptions
from .work import finish, model_so_far, textures, train_loop, work_path


def texture_views(images: list[torch.Tensor], rng: np.random.Generator, which: np.ndarray, px: int,
                  degrade_prob: float = 0.5) -> torch.Tensor:
    """One random view per chosen texture: a crop at a random place, random rotation/flip,
    brightness/contrast jitter and, with `degrade_prob`, a blur + down/up resize, because T
    sees coarse GRM patches as queries and clean HR patches as keys."""
    out = []
    for i in which:
        img = images[i]
        H, W = img.shape[-2:]
        y, x = rng.integers(0, H - px + 1), rng.integers(0, W - px + 1)
        c = torch.rot90(img[:, y:y + px, x:x + px], int(rng.integers(4)), (1, 2))
        if rng.integers(2):
            c = c.flip(2)
        c = ((c - c.mean()) * rng.uniform(0.8, 1.2) + c.mean() * rng.uniform(0.85, 1.15)).clamp(0, 1)
        if rng.random() < degrade_prob:
            f = rng.uniform(1.5, 3.0)
            small = F.interpolate(c[None], scale_factor=1 / f, mode="area")
            c = F.interpolate(small, size=(px, px), mode="bicubic", align_corners=False)[0].clamp(0, 1)
        out.append(c)
    return torch.stack(out)


def texture_images(files: list[Path], px: int) -> list[torch.Tensor]:
    imgs = [load_rgb(f) for f in files]
    return [i for i in imgs if min(i.shape[-2:]) >= px]


@torch.no_grad()
def texture_top1(T, codec, images: list[torch.Tensor], px: int, seed: int, rounds: int = 8) -> float:
    """Top-1 retrieval accuracy: each texture has one gallery crop; a query is another,
    augmented crop of one of them; a hit when its nearest gallery key is its own texture."""
    T.eval()
    hits = total = 0
    n = len(images)
    for r in range(rounds):
        rng = np.random.default_rng([seed, 999, r])
        gallery = T(codec.encode(texture_views(images, rng, np.arange(n), px, degrade_prob=0.0)))
        query = T(codec.encode(texture_views(images, rng, np.arange(n), px, degrade_prob=0.5)))
        hits += int(((query @ gallery.T).argmax(1) == torch.arange(n)).sum())
        total += n
    return hits / total


def stage_texture(a: TrainOptions, d: Dist) -> dict:
    from patchscaler.texture import info_nce
    model = model_so_far(a)
    T, codec = model.texture, model.codec
    px = model.cfg.pgs.patch_size * codec.factor
    train_files, held_files = textures(a)
    train_imgs, held_imgs = texture_images(train_files, px), texture_images(held_files, px)
    batch = min(a.batch * 2, len(train_imgs))
    net = d.wrap(T)

    def step_fn(step):
        rng = np.random.default_rng([a.seed, 1, step])
        which = rng.choice(len(train_imgs), batch, replace=False)
        va, vb = texture_views(train_imgs, rng, which, px, 0.0), texture_views(train_imgs, rng, which, px, 0.7)
        va, vb = va.to(d.device), vb.to(d.device)
        # InfoNCE needs the whole batch for negatives: every rank computes it on all rows
        # (T is tiny); DDP still averages the identical gradients.
        T.train()
        return info_nce(net(codec.encode(va)), net(codec.encode(vb))), {}

    before = texture_top1(T, codec, held_imgs, px, a.seed)
    train_loop(a, d, "texture", {"texture": T}, list(T.parameters()), a.texture_steps, 1e-3, step_fn)
    result = {"top1_heldout_before": before,
              "top1_heldout": texture_top1(T, codec, held_imgs, px, a.seed),
              "top1_train": texture_top1(T, codec, train_imgs, px, a.seed),
              "heldout_textures": len(held_imgs), "train_textures": len(train_imgs)}
    version = "T-" + hashlib.sha256(b"".join(v.numpy().tobytes() for v in T.state_dict().values())).hexdigest()[:10]
    if d.main:
        print(f"texture extractor T: top-1 retrieval accuracy on {len(held_imgs)} held-out textures "
              f"{result['top1_heldout']:.3f} (untrained {before:.3f}, chance {1 / max(1, len(held_imgs)):.3f}); "
              f"on {len(train_imgs)} training textures {result['top1_train']:.3f}")
        Path(work_path(a, "texture.version.json")).write_text(json.dumps({"version": version, **result}, indent=1))
    finish(a, d, "texture", T, "texture", result)
    return result
