"""Farthest point sampling at scale.

Exact FPS (`patchscaler.rtm.farthest_point_sampling`) is O(N m) time and O(N) memory: fine on one
node up to a few million candidates. Beyond that, two stages: split the candidates into
shards, run exact FPS in each shard down to `per_shard` points (in parallel, one Ray task per
shard in the build job), then exact FPS on the union down to `m`. A shard's FPS keeps its
extremes, so the union covers the whole set nearly as well as exact FPS; the test measures
the coverage radius (max distance from any candidate to its nearest selected point) of both."""
from __future__ import annotations

import torch

from patchscaler.rtm import coverage_radius, farthest_point_sampling

__all__ = ["farthest_point_sampling", "two_stage_fps", "coverage_radius"]


def two_stage_fps(x: torch.Tensor, m: int, shards: int, per_shard: int | None = None,
                  shard_fn=None) -> torch.Tensor:
    """Indices into x of m points. `shard_fn(chunk, k) -> indices` runs one shard's FPS (a Ray
    task in the build job); by default exact FPS in process."""
    n = x.shape[0]
    per_shard = per_shard or min(n, 2 * m)
    shard_fn = shard_fn or farthest_point_sampling
    bounds = torch.linspace(0, n, shards + 1).long().tolist()
    union = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b > a:
            union.append(torch.as_tensor(shard_fn(x[a:b], min(per_shard, b - a))) + a)
    union = torch.cat(union)
    return union[farthest_point_sampling(x[union], m)]
