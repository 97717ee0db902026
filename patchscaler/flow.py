"""One image in flight through the method, the only place that says how an image goes
through it. Every caller (the in-process upscaler, the in-process engine, the Ray actors,
the evaluation, the benchmarks) uses these three steps, so their pixels are the same:

    state = begin(model, prep)                   # GRM, cut into patches, Qmap groups
    refine(model, state, seed, groups)           # the group batches of `groups` (all if None)
    image = finish(model, state)                 # stitch, decode, fuse, colour fix, alpha

(`refine_many` refines several images' states together, so that a Patch-DiT call on a GPU
sees many patches of one group; a patch's noise still depends only on (seed, its index).)

`refine` may be called several times with disjoint groups (the Ray pipeline's hard and easy
pools each refine their own groups of the same state); a patch's result depends only on
(seed, its index, its group), never on which call or process refined it. The state is a
plain picklable dataclass: the Ray pipeline hands it from actor to actor."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from PIL import Image

from . import imageio, pgs
from .model import PatchScaler, patch_noise


@dataclass
class Coarse:
    """What the GRM stage hands on for one image."""
    grid: pgs.PatchGrid
    patches: torch.Tensor      # (N, C, V, V) coarse patches y0
    qmap: torch.Tensor         # (N,)
    groups: torch.Tensor       # (N,)


@dataclass
class InFlight:
    """One image between the stages: its decoded input, the GRM's patches and groups, the
    patches refined so far (the coarse ones until refined) and seconds per stage."""
    prep: imageio.Prepared
    coarse: Coarse
    refined: torch.Tensor
    seconds: dict[str, float] = field(default_factory=dict)

    def group_counts(self, num_groups: int) -> list[int]:
        return torch.bincount(self.coarse.groups, minlength=num_groups).tolist()

    def regrouped(self, groups: torch.Tensor) -> "InFlight":
        """The same GRM output with other groups and nothing refined yet (evaluation and
        benchmarks: PGS against uniform sampling on the same coarse patches)."""
        c = self.coarse
        return InFlight(self.prep, Coarse(c.grid, c.patches, c.qmap, groups), c.patches.clone(),
                        {k: v for k, v in self.seconds.items() if k not in ("dit", "stitch")} | {"dit": 0.0})


def begin(model: PatchScaler, prep: imageio.Prepared, seconds: dict[str, float] | None = None) -> InFlight:
    """GRM -> coarse latent and confidence, cut into patches, grouped by Qmap. `seconds`:
    times of what came before (e.g. {"decode": ...}), kept in the state."""
    t = time.perf_counter()
    latent, conf = model.restore(prep.rgb)
    grid, patches, q, groups = model.plan(latent, conf)
    s = dict(seconds or {})
    s.update(grm=time.perf_counter() - t, dit=0.0)
    return InFlight(prep, Coarse(grid, patches, q, groups), patches.clone(), s)


def group_batches(model: PatchScaler, groups: torch.Tensor, only=None) -> list[tuple[int, list[int]]]:
    """(group, patch indices) for each Patch-DiT call, groups in order, batches of at most
    runtime.max_batch patches; `only`: just these groups."""
    out = []
    for g in range(model.cfg.pgs.num_groups):
        if only is not None and g not in only:
            continue
        idx = torch.nonzero(groups == g).flatten().tolist()
        out += [(g, b) for b in pgs.batches(idx, model.runtime.max_batch)]
    return out


def refine(model: PatchScaler, state: InFlight, seed: int, groups=None,
           on_batch: Callable[[int, list[int]], None] | None = None) -> InFlight:
    """Refine the patches of `groups` (all if None) in place, one Patch-DiT call per group
    batch; `on_batch(group, indices)` after each call (progress)."""
    c = state.coarse
    t = time.perf_counter()
    for g, idx in group_batches(model, c.groups, groups):
        noise = patch_noise(seed, idx, tuple(c.patches.shape[1:]))
        state.refined[idx] = model.refine(c.patches[idx], g, noise)
        if on_batch is not None:
            on_batch(g, idx)
    state.seconds["dit"] = state.seconds.get("dit", 0.0) + time.perf_counter() - t
    return state


def refine_many(model: PatchScaler, states: list[InFlight], seed: int, groups=None,
                on_batch: Callable[[int, int], None] | None = None) -> list[InFlight]:
    """Refine several images' patches together: per group, the patches of all `states` in one
    list, cut into Patch-DiT calls of runtime.max_batch. On a GPU a call should see hundreds of
    patches of one group, not one image's handful. A patch's noise still comes from (seed, its
    index in its image), so only the batch composition differs from `refine` image by image:
    the same numbers up to float rounding in the matmuls (tested: within 1/255 of the output).
    `on_batch(group, patches)` after each call. Each state is charged its share of the time."""
    if len(states) == 1:
        return [refine(model, states[0], seed, groups, on_batch and (lambda g, idx: on_batch(g, len(idx))))]
    t = time.perf_counter()
    for g in range(model.cfg.pgs.num_groups):
        if groups is not None and g not in groups:
            continue
        items = [(s, i) for s, st in enumerate(states)
                 for i in torch.nonzero(st.coarse.groups == g).flatten().tolist()]
        for chunk in pgs.batches(items, model.runtime.max_batch):
            y0 = torch.stack([states[s].coarse.patches[i] for s, i in chunk])
            noise = torch.cat([patch_noise(seed, [i], tuple(y0.shape[1:])) for _, i in chunk])
            out = model.refine(y0, g, noise)
            for k, (s, i) in enumerate(chunk):
                states[s].refined[i] = out[k]
            if on_batch is not None:
                on_batch(g, len(chunk))
    total = sum(len(st.coarse.groups) for st in states) or 1
    dt = time.perf_counter() - t
    for st in states:
        st.seconds["dit"] = st.seconds.get("dit", 0.0) + dt * len(st.coarse.groups) / total
    return states


def finish(model: PatchScaler, state: InFlight, stats: dict | None = None) -> Image.Image:
    """Fuse the refined patches with the GRM's (coarse) ones and the LR into the output image;
    the alpha channel is upscaled on its own, never diffused."""
    t = time.perf_counter()
    prep = state.prep
    hr = model.finish(state.coarse.patches, state.refined, state.coarse.grid, prep.rgb, stats)
    alpha = None
    if prep.alpha is not None:
        alpha = torch.nn.functional.interpolate(prep.alpha, size=hr.shape[-2:], mode="bicubic",
                                                align_corners=False).clamp(0, 1)
    image = imageio.to_pil(hr, alpha, prep.mode)
    state.seconds["stitch"] = time.perf_counter() - t
    return image


def run(model: PatchScaler, prep: imageio.Prepared, seed: int = 0, seconds: dict[str, float] | None = None,
        on_batch: Callable[[int, list[int]], None] | None = None) -> tuple[InFlight, Image.Image]:
    """All three steps in one process."""
    state = begin(model, prep, seconds)
    refine(model, state, seed, on_batch=on_batch)
    return state, finish(model, state)
