"""Farthest point sampling at scale.

Exact FPS (`patchscaler.rtm_build.farthest_point_sampling`) is O(N m) time and O(N) memory: fine on one
node up to a few million candidates. Beyond that, two stages: split the candidates into
shards, run exact FPS in each shard down to `per_shard` points (in parallel: the build job's
Ray engine passes `map_shards`, which runs each shard in a Ray task on the workers), then
exact FPS on the union down to `m`. A shard's FPS keeps its
extremes, so the union covers the whole set nearly as well as exact FPS; the test measures
the coverage radius (max distance from any candidate to its nearest selected point) of both."""
from __future__ import annotations

import torch

from patchscaler.rtm_build import farthest_point_sampling


def two_stage_fps(x: torch.Tensor, m: int, shards: int, per_shard: int | None = None,
                  map_shards=None) -> torch.Tensor:
    """Indices into x of m points. `map_shards([(chunk, k), ...]) -> [indices, ...]` runs the
    shards' FPS (all at once: Ray tasks in the build job); by default one after another here."""
    n = x.shape[0]
    per_shard = per_shard or min(n, 2 * m)
    edges = torch.linspace(0, n, shards + 1).long().tolist()
    bounds = [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]
    work = [(x[a:b], min(per_shard, b - a)) for a, b in bounds]
    picks = map_shards(work) if map_shards else [farthest_point_sampling(c, k) for c, k in work]
    union = torch.cat([torch.as_tensor(p) + a for p, (a, _) in zip(picks, bounds)])
    return union[farthest_point_sampling(x[union], m)]
