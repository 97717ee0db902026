"""Building an RTM in process (paper Algorithm 1) for small image sets (the untrained default
model's RTM, tests): random HR crops -> codec latents (RTM-values) -> T keys -> farthest point
sampling. The build at dataset scale is rtm_index/ (`patchscaler build-rtm`), which uses the
crops, the encoder and the exact FPS from here."""
from __future__ import annotations

import numpy as np
import torch

from . import imageio
from .rtm import RTM


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


def farthest_point_sampling(x: torch.Tensor, m: int, start: int = 0) -> torch.Tensor:
    """Exact FPS on rows of x (N, d), Euclidean distance: indices of m rows, each the one
    farthest from those chosen before it. O(N m) time, O(N) memory."""
    n = x.shape[0]
    m = min(m, n)
    x = x.float()
    chosen = torch.empty(m, dtype=torch.long)
    dist = torch.full((n,), float("inf"))
    idx = start
    for j in range(m):
        chosen[j] = idx
        dist = torch.minimum(dist, (x - x[idx]).pow(2).sum(-1))
        idx = int(dist.argmax())
    return chosen


def coverage_radius(x: torch.Tensor, chosen: torch.Tensor) -> float:
    """Max over all points of the distance to the nearest chosen point (smaller = better)."""
    d = torch.cdist(x.float(), x[chosen].float())
    return float(d.min(1).values.max())
