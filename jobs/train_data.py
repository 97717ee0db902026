"""Training data: the fixed train / held-out split and the prepared (LR, GRM output, HR) crops.

`prepare` cuts seeded random HR crops from each training photo, synthesises LR with the
Real-ESRGAN degradations (patchscaler/degrade.py) and runs the frozen Real-ESRGAN GRM once,
so the later stages (confidence head, Patch-DiT) never run the 16.7 M-parameter backbone
again. One shard per photo: an interrupted run resumes where it stopped."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from pipeline.listing import IMAGE_EXTENSIONS

# the upscale job's names, but GIF: a 256-colour palette is no training photo
IMAGE_EXT = tuple(e for e in IMAGE_EXTENSIONS if e != ".gif")


def list_photos(folder: str | os.PathLike) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXT)


def name_key(name: str) -> int:
    """A stable integer from a file name: seeds per-image randomness and the split, so that
    results depend on the name only, never on listing order or which worker ran it."""
    return int(hashlib.sha1(name.encode()).hexdigest()[:8], 16)


def split(files: list[Path], every: int = 5) -> tuple[list[Path], list[Path]]:
    """Fixed split by name: a file is held out when the hash of its name is 0 mod `every`
    (so adding files never moves the others between train and held-out)."""
    held = [f for f in files if name_key(f.name) % every == 0]
    train = [f for f in files if f not in held]
    return train, held


def load_rgb(path: Path) -> torch.Tensor:
    """(3, H, W) float in [0, 1], EXIF-oriented."""
    from patchscaler import imageio
    return imageio.decode(path.read_bytes()).rgb[0]


def shard_path(work: str, name: str) -> str:
    return os.path.join(work, "data", f"{Path(name).stem}.safetensors")


@torch.no_grad()
def prepare_photo(grm, path: Path, crop: int, count: int, seed: int, scale: int = 4) -> dict[str, torch.Tensor]:
    from patchscaler.degrade import degrade
    img = load_rgb(path)
    H, W = img.shape[-2:]
    key = name_key(path.name)
    rng = np.random.default_rng([seed, key])
    g = torch.Generator().manual_seed(seed * 1_000_003 + key)
    c = min(crop, H, W) // (scale * 4) * (scale * 4)  # whole latent pixels, whole LR pixels
    ys = rng.integers(0, H - c + 1, count)
    xs = rng.integers(0, W - c + 1, count)
    hr = torch.stack([img[:, y:y + c, x:x + c] for y, x in zip(ys, xs)])
    lr = torch.cat([degrade(h[None], g) for h in hr])
    sr = grm.restore(lr.contiguous(memory_format=torch.channels_last))
    u8 = lambda x: (x.clamp(0, 1) * 255).round().to(torch.uint8).contiguous()  # noqa: E731
    return {"hr": u8(hr), "lr": u8(lr), "sr": u8(sr)}


def prepare(grm, photos: list[Path], work: str, crop: int, count: int, seed: int, progress: bool = True) -> None:
    from tqdm import tqdm
    os.makedirs(os.path.join(work, "data"), exist_ok=True)
    pending = [p for p in photos if not os.path.exists(shard_path(work, p.name))]
    for p in tqdm(pending, desc="prepare (degrade + GRM)", disable=not progress):
        t = prepare_photo(grm, p, crop, count, seed)
        tmp = shard_path(work, p.name) + ".part"
        save_file(t, tmp)
        os.replace(tmp, shard_path(work, p.name))


class Pairs:
    """All prepared crops in memory (uint8): hr/sr (N, 3, S, S), lr (N, 3, S/4, S/4), and the
    index of the photo each crop came from. Crops of different sizes are centre-cut to the
    smallest so they stack."""

    def __init__(self, work: str, photos: list[Path]):
        shards = [load_file(shard_path(work, p.name)) for p in photos]
        s = min(t["hr"].shape[-1] for t in shards)
        cut = lambda x, n: x[..., (x.shape[-2] - n) // 2:(x.shape[-2] - n) // 2 + n, (x.shape[-1] - n) // 2:(x.shape[-1] - n) // 2 + n]  # noqa: E731
        self.hr = torch.cat([cut(t["hr"], s) for t in shards])
        self.sr = torch.cat([cut(t["sr"], s) for t in shards])
        self.lr = torch.cat([cut(t["lr"], s // 4) for t in shards])
        self.source = torch.cat([torch.full((t["hr"].shape[0],), i) for i, t in enumerate(shards)])
        self.names = [p.name for p in photos]
        self.size = s

    def __len__(self) -> int:
        return self.hr.shape[0]

    def crops(self, rng: np.random.Generator, n: int, lat: int, factor: int = 4):
        """n random aligned crops of `lat` latent pixels, with a random flip/rotation:
        (hr, sr, lr) float in [0, 1] and the source photo of each."""
        px = lat * factor
        idx = rng.integers(0, len(self), n)
        ys = rng.integers(0, (self.size - px) // factor + 1, n) * factor
        xs = rng.integers(0, (self.size - px) // factor + 1, n) * factor
        rot, flip = rng.integers(0, 4, n), rng.integers(0, 2, n)
        out = {"hr": [], "sr": [], "lr": []}
        for i, y, x, r, f in zip(idx, ys, xs, rot, flip):
            for k, arr, s in (("hr", self.hr, 1), ("sr", self.sr, 1), ("lr", self.lr, 4)):
                c = arr[i, :, y // s:(y + px) // s, x // s:(x + px) // s].float() / 255
                c = torch.rot90(c, int(r), (1, 2))
                out[k].append(c.flip(2) if f else c)
        return {k: torch.stack(v) for k, v in out.items()}, self.source[idx]
