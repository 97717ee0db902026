"""Texture feature extractor T (paper Sec. 3.4, Algorithms 1 and 2).

T maps a latent patch (C, V, V) to a semantic texture vector; RTM keys are T(RTM-values) and a
patch's query is T(y0), both L2-normalised so that retrieval is a normalised inner product.
The paper's T is a texture classifier trained on DTD; ours is a small CNN whose pooled
first- and second-order statistics (mean and standard deviation of each feature map: the
classic texture descriptors) feed a linear projection. It works for any patch size."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import TextureConfig


class TextureExtractor(nn.Module):
    def __init__(self, channels: int, cfg: TextureConfig):
        super().__init__()
        h = cfg.hidden
        self.net = nn.Sequential(
            nn.Conv2d(channels, h, 3, 1, 1), nn.SiLU(),
            nn.Conv2d(h, h, 3, 1, 1), nn.SiLU(),
            nn.Conv2d(h, h, 3, 2, 1), nn.SiLU(),
            nn.Conv2d(h, h, 3, 1, 1), nn.SiLU())
        self.proj = nn.Linear(2 * h, cfg.feature_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C, V, V) latent patches -> (B, feature_dim) unit vectors."""
        f = self.net(z)
        stats = torch.cat([f.mean((2, 3)), f.flatten(2).std(2, unbiased=False)], 1)
        return F.normalize(self.proj(stats), dim=-1)


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Symmetric InfoNCE on unit vectors (B, d): row i of `a` and row i of `b` are two views of
    the same texture, every other row is a negative. Used to train T self-supervised."""
    logits = a @ b.T / temperature
    target = torch.arange(a.shape[0], device=a.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
