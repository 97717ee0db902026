"""Patch-adaptive Group Sampling, the geometry part (paper Sec. 3.3, Eq. 5).

The coarse HR latent is cut into overlapping V x V patches on a grid that covers the whole
latent (the last row/column of patches is aligned to the far edge; a latent smaller than V
is replicate-padded). Qmap is the mean confidence of each patch over its valid pixels, and
patches are grouped by descending thresholds: q > g[0] -> group 0 (simple), q > g[1] ->
group 1 (medium), ..., else the last group (hard). After refinement, patches are blended
back with these smooth, symmetric weights, normalised so that they sum to one at every pixel
and an identity model returns its input (flow.latents)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def axis_positions(length: int, patch: int, overlap: int) -> list[int]:
    """Top-left positions of the patches along one axis of `length` (the last one at the far edge)."""
    if length <= patch:
        return [0]
    stride = patch - overlap
    pos = list(range(0, length - patch + 1, stride))
    if pos[-1] != length - patch:
        pos.append(length - patch)
    return pos


@dataclass(frozen=True)
class PatchGrid:
    height: int      # latent size of the image (before padding)
    width: int
    patch: int
    overlap: int

    @property
    def padded(self) -> tuple[int, int]:
        return max(self.height, self.patch), max(self.width, self.patch)

    @property
    def axes(self) -> tuple[list[int], list[int]]:
        """The patches' top-left rows and columns (a patch's index is row * len(columns) + column)."""
        ph, pw = self.padded
        return axis_positions(ph, self.patch, self.overlap), axis_positions(pw, self.patch, self.overlap)

    @property
    def positions(self) -> list[tuple[int, int]]:
        ay, ax = self.axes
        return [(y, x) for y in ay for x in ax]

    def pad(self, z: torch.Tensor) -> torch.Tensor:
        """A (C, H, W) latent of the grid's size, replicate-padded to a patch where it is smaller."""
        ph, pw = self.padded
        dh, dw = ph - self.height, pw - self.width
        if dh or dw:
            z = F.pad(z[None], (0, dw, 0, dh), mode="replicate")[0]
        return z

    def __len__(self) -> int:
        return len(self.positions)


def make_grid(height: int, width: int, patch: int, overlap: int) -> PatchGrid:
    return PatchGrid(height, width, patch, overlap)


def cut(z: torch.Tensor, grid: PatchGrid) -> torch.Tensor:
    """(C, H, W) latent -> (N, C, V, V) patches in grid order."""
    z = grid.pad(z)
    V = grid.patch
    return torch.stack([z[:, y:y + V, x:x + V] for y, x in grid.positions])


def qmap(conf: torch.Tensor, grid: PatchGrid) -> torch.Tensor:
    """(1, H, W) or (H, W) confidence -> (N,) mean confidence per patch over valid pixels."""
    c = conf.reshape(grid.height, grid.width).float()
    V = grid.patch
    return torch.stack([c[y:y + V, x:x + V].mean() for y, x in grid.positions])


def assign_groups(q: torch.Tensor, thresholds: tuple[float, ...]) -> torch.Tensor:
    """(N,) Qmap -> (N,) group index, 0 = simplest."""
    g = torch.full(q.shape, len(thresholds), dtype=torch.long)
    for i in reversed(range(len(thresholds))):
        g[q > thresholds[i]] = i
    return g


def blend_weights(patch: int, overlap: int) -> torch.Tensor:
    """(V, V) symmetric weights: 1 in the middle, a linear ramp over the overlap at each side,
    never zero (so every pixel is covered)."""
    ramp = max(overlap, 1)
    k = torch.arange(patch, dtype=torch.float32) + 0.5
    w = torch.minimum(torch.ones(patch), torch.minimum(k / ramp, (patch - k) / ramp))
    return w[:, None] * w[None, :]


def batches(indices: list[int], max_batch: int) -> list[list[int]]:
    """Split a group's patch indices into batches. The in-process oracle and the distributed
    pipeline batch the same way, so they run the same kernels on the same inputs."""
    return [indices[i:i + max_batch] for i in range(0, len(indices), max_batch)]
