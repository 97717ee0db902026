"""Farthest point sampling at scale.

Exact FPS (`farthest_point_sampling`) is O(N m) time and O(N) memory: fine on one
node up to a few million candidates. Beyond that, two stages: split the candidates into
shards, run exact FPS in each shard down to `per_shard` points (in parallel: the build job's
Ray engine passes `map_shards`, which runs each shard in a Ray task on the workers), then
exact FPS on the union down to `m`. A shard's FPS keeps its
extremes, so the union covers the whole set nearly as well as exact FPS; the test measures
the coverage radius (max distance from any candidate to its nearest selected point) of both."""
from __future__ import annotations

import torch


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
