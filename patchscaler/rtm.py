"""Reference Texture Memory: keys (N, d), unit vectors = T(values); values (N, C, V, V),
latent texture patches. Retrieval is top-K by normalised inner product (paper Algorithm 2).

`RTM` is the exact in-memory version; `rtm_index.FaissRTM` has the same interface
(`search`, `retrieve`, `size`, `meta`) backed by a FAISS index for large memories."""
from __future__ import annotations

import torch
import torch.nn.functional as F


class RTM:
    def __init__(self, keys: torch.Tensor, values: torch.Tensor, meta: dict | None = None):
        if keys.shape[0] != values.shape[0]:
            raise ValueError(f"{keys.shape[0]} keys but {values.shape[0]} values")
        if keys.shape[0] == 0:
            raise ValueError("an RTM needs at least one entry")
        self.keys = F.normalize(keys.float(), dim=-1)
        self.values = values
        self.meta = dict(meta or {})

    @property
    def size(self) -> int:
        return self.keys.shape[0]

    def search(self, queries: torch.Tensor, k: int,
               exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """queries (B, d) -> similarities (B, k) descending, indices (B, k). exclude (B, N) bool:
        entries query b must not get (training: those cut from the photo its patch came from);
        they rank below every other entry (similarity -2)."""
        q = F.normalize(queries.float(), dim=-1)
        sims = q @ self.keys.T
        if exclude is not None:
            sims = sims.masked_fill(exclude, -2.0)
        k = min(k, self.size)
        s, i = sims.topk(k, dim=-1)
        return s, i

    def retrieve(self, queries: torch.Tensor, k: int,
                 exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """queries (B, d) -> texture priors (B, k, C, V, V), similarities (B, k)."""
        s, i = self.search(queries, k, exclude)
        return self.values[i].float(), s


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
