"""One piece of a photo in flight through the method: how a piece goes through it, written
once. Every caller (the photo plan in photo.py that both engines run, the evaluation, the
benchmarks) uses these steps, so their pixels are the same:

    state = begin(model, prep, piece)            # GRM, the piece's patches, Qmap groups
    for pool, groups in pools(model.cfg):        # the hard groups first, then the others
        refine(model, [state], seed, groups)     # one Patch-DiT call per group batch
    image = finish(model, state)                 # stitch, decode, fuse, colour fix, alpha

A photo is one piece when it fits (`pieces.py`; `prep` is then the whole image), else several,
each begun from its crop (`crop`).

`refine` takes several pieces' states at once, so that a Patch-DiT call on a GPU sees many
patches of one group, and may be called several times with disjoint groups (the Ray engine's
hard and easy pools each refine their own groups of the same state). A patch's result depends
only on (seed, its index in the whole image, its group), never on which call or process refined
it, nor with which other patches.

The state is compact, because the Ray engine hands it from actor to actor: the GRM's coarse
latent over the region the piece needs (float16), the LR input there (8 bits where the input
had 8 bits) and, once patches are refined, their blended change to the coarse latent
(`detail`, 16-bit fixed point), not the overlapping patches themselves. Both engines keep the
same values, so their pixels are the same."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from PIL import Image

from . import imageio, pgs, pieces
from .model import PatchScaler, patch_noise


@dataclass
class Coarse:
    """What the GRM stage hands on for one piece: the coarse latent over the piece's region and
    the patches of the whole image's grid that the piece refines."""
    grid: pgs.PatchGrid        # the whole image's patch grid (latent px)
    origin: tuple[int, int]    # latent px: where `latent` starts in the whole image
    latent: torch.Tensor       # (C, h, w) float16; replicate-padded to a patch if the image is smaller
    index: torch.Tensor        # (N,) the piece's patches, as indices into the whole grid (their noise)
    pos: torch.Tensor          # (N, 2) their top-left corners in `latent`
    qmap: torch.Tensor         # (N,)
    groups: torch.Tensor       # (N,)
    owned: torch.Tensor        # (N,) bool: the patch's centre lies in the piece's core (counted once)

    def patches(self, idx: list[int] | None = None) -> torch.Tensor:
        """(n, C, V, V) float32 coarse patches y0 (all if idx is None)."""
        V = self.grid.patch
        z = self.latent.float()
        rows = range(len(self.index)) if idx is None else idx
        if not len(rows):
            return torch.empty(0, z.shape[0], V, V)
        return torch.stack([z[:, y:y + V, x:x + V] for y, x in self.pos[list(rows)].tolist()])


@dataclass
class InFlight:
    """One piece between the stages: its LR region, the GRM's coarse latent and groups, the
    refined patches' blended change so far, and seconds per stage."""
    prep: imageio.Prepared     # the LR input over `region`
    piece: pieces.Piece
    region: tuple[int, int, int, int]   # LR px (y0, y1, x0, x1) of the whole image that prep and latent cover
    coarse: Coarse
    detail: torch.Tensor | None = None  # (C, h, w) int16: sum over refined patches of (refined - coarse) x blend weight, DETAIL_SCALE fixed point
    refined: torch.Tensor | None = None  # (N,) bool
    seconds: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        if self.refined is None:
            self.refined = torch.zeros(len(self.coarse.index), dtype=torch.bool)

    def group_counts(self, num_groups: int) -> list[int]:
        """Patches per group that this piece owns (a photo's pieces' counts add up to its own)."""
        c = self.coarse
        return torch.bincount(c.groups[c.owned], minlength=num_groups).tolist()

    def regrouped(self, groups: torch.Tensor) -> "InFlight":
        """The same GRM output with other groups and nothing refined yet (evaluation and
        benchmarks: PGS against uniform sampling on the same coarse patches)."""
        c = self.coarse
        coarse = Coarse(c.grid, c.origin, c.latent, c.index, c.pos, c.qmap, groups, c.owned)
        return InFlight(self.prep, self.piece, self.region, coarse, None, None,
                        {k: v for k, v in self.seconds.items() if k not in ("dit", "stitch")} | {"dit": 0.0})


def whole(prep: imageio.Prepared, outscale: float = 4.0) -> pieces.Piece:
    """The piece that is the whole image."""
    w, h = prep.size
    return pieces.Piece(h, w, 0, 1, (0, h, 0, w), (0, h, 0, w), 0, float(outscale))


def crop(prep: imageio.Prepared, box: tuple[int, int, int, int]) -> imageio.Prepared:
    """The part of a decoded image under `box` (LR px y0, y1, x0, x1)."""
    y0, y1, x0, x1 = box
    alpha = None if prep.alpha is None else prep.alpha[..., y0:y1, x0:x1].contiguous()
    return imageio.Prepared(prep.rgb[..., y0:y1, x0:x1].contiguous(), alpha, prep.mode, prep.format,
                            prep.meta, list(prep.notes), prep.size)


def _span(positions: list[int], patch: int, lo: int, hi: int) -> list[int]:
    """Indices of the patches (top-left `positions` along an axis) that reach into [lo, hi)."""
    return [i for i, p in enumerate(positions) if p < hi and p + patch > lo]


def begin(model: PatchScaler, prep: imageio.Prepared, piece: pieces.Piece | None = None,
          seconds: dict[str, float] | None = None, on_tile: Callable[[int, int], None] | None = None) -> InFlight:
    """GRM over the piece's crop (`prep` holds exactly the crop; the whole image if `piece` is
    None) -> coarse latent and confidence; the whole grid's patches that reach the piece's core
    (plus the stitch's reach), grouped by Qmap. `seconds`: times of what came before."""
    t = time.perf_counter()
    piece = piece or whole(prep)
    cfg, p = model.cfg, model.cfg.pgs
    r = pieces.latent_per_lr(cfg)
    L = lambda v: round(v * r)  # noqa: E731  LR px -> latent px
    cy0, cy1, cx0, cx1 = piece.crop
    latent, conf = model.restore(prep.rgb, origin=(cy0, cx0), on_tile=on_tile)
    grid = pgs.make_grid(L(piece.height), L(piece.width), p.patch_size, p.overlap)
    V, (ph, pw) = p.patch_size, grid.padded
    ay, ax = grid.axes
    ky0, ky1, kx0, kx1 = (L(v) for v in piece.core)
    if piece.whole:
        iy, ix = list(range(len(ay))), list(range(len(ax)))
    else:
        iy = _span(ay, V, ky0 - piece.reach, ky1 + piece.reach)
        ix = _span(ax, V, kx0 - piece.reach, kx1 + piece.reach)
    # the region the piece keeps: its patches' extent (LR px), within the crop
    oy, ox = L(cy0), L(cx0)
    ry0, ry1 = ay[iy[0]], min(ay[iy[-1]] + V, grid.height)
    rx0, rx1 = ax[ix[0]], min(ax[ix[-1]] + V, grid.width)
    if ry0 < oy or rx0 < ox or ry1 > oy + latent.shape[-2] or rx1 > ox + latent.shape[-1]:
        raise ValueError(f"piece {piece.index}: its patches leave its crop (halo too small)")
    if piece.whole and (ph, pw) != (grid.height, grid.width):   # smaller than a patch: padded
        latent = grid.pad(latent)
        ry1, rx1 = ph, pw
    else:
        latent = latent[:, ry0 - oy:ry1 - oy, rx0 - ox:rx1 - ox]
    q = []
    positions = []
    for y in (ay[i] for i in iy):
        for x in (ax[j] for j in ix):
            q.append(conf[y - oy:y - oy + V, x - ox:x - ox + V].mean())
            positions.append((y - ry0, x - rx0))
    q = torch.stack(q)
    index = torch.tensor([i * len(ax) + j for i in iy for j in ix], dtype=torch.long)
    # each patch is counted by the one piece whose core holds its centre
    owned = torch.tensor([piece.whole or (_owns(ay[i] + V / 2, ky0, ky1, grid.height)
                                          and _owns(ax[j] + V / 2, kx0, kx1, grid.width))
                          for i in iy for j in ix], dtype=torch.bool)
    groups = pgs.assign_groups(q, p.thresholds)
    region_lr = (round(ry0 / r), round(min(ry1, grid.height) / r), round(rx0 / r), round(min(rx1, grid.width) / r))
    kept = crop(prep, tuple(v - o for v, o in zip(region_lr, (cy0, cy0, cx0, cx0))))
    coarse = Coarse(grid, (ry0, rx0), latent.half(), index, torch.tensor(positions, dtype=torch.long).reshape(-1, 2),
                    q, groups, owned)
    s = dict(seconds or {})
    s.update(grm=time.perf_counter() - t, dit=0.0)
    return InFlight(kept, piece, region_lr, coarse, seconds=s)


def _owns(centre: float, lo: int, hi: int, end: int) -> bool:
    """Whether a patch centre lies in [lo, hi) (one past the image's far edge: the last piece)."""
    return lo <= centre < hi or (hi == end and centre >= hi)


def pools(cfg, hard=None) -> list[tuple[str, set[int]]]:
    """The Patch-DiT pools in the order a piece goes through them, each with its groups: the
    hard groups (`hard`, default the config's) first, then the others. The one place that
    orders the groups: the in-process plan refines in this order, the Ray engine chains its
    pool stages in it."""
    hard = set(cfg.pgs.hard_groups if hard is None else hard)
    return [("hard", hard), ("easy", set(range(cfg.pgs.num_groups)) - hard)]


def group_batches(model: PatchScaler, groups: torch.Tensor, only=None) -> list[tuple[int, list[int]]]:
    """(group, patch indices) for each Patch-DiT call of one piece alone, groups in order,
    batches of at most runtime.max_batch patches; `only`: just these groups."""
    out = []
    for g in range(model.cfg.pgs.num_groups):
        if only is not None and g not in only:
            continue
        idx = torch.nonzero(groups == g).flatten().tolist()
        out += [(g, b) for b in pgs.batches(idx, model.runtime.max_batch)]
    return out


DETAIL_SCALE = 2 ** 11   # fixed point of `detail`: 1/2048 latent units (0.06/255 of a pixel), range +-16


class _Detail:
    """Adds refined patches' changes into a piece's `detail`. Each patch's weighted change is
    rounded to fixed point on its own and the sums are integers, so the result does not depend
    on the order patches are added in, nor on how the groups are split between the pools (a
    float16 sum would: each pool would round at another point). Kept as int16."""

    def __init__(self, state: InFlight):
        c = state.coarse
        self.state, self.pos, self.V = state, c.pos, c.grid.patch
        self.w = pgs.blend_weights(self.V, c.grid.overlap)
        self.acc = (state.detail.to(torch.int32) if state.detail is not None
                    else torch.zeros(c.latent.shape, dtype=torch.int32))

    def add(self, i: int, change: torch.Tensor) -> None:
        y, x = self.pos[i].tolist()
        self.acc[:, y:y + self.V, x:x + self.V] += torch.round(change * self.w * DETAIL_SCALE).to(torch.int32)
        self.state.refined[i] = True

    def close(self) -> None:
        self.state.detail = self.acc.clamp(-2 ** 15, 2 ** 15 - 1).to(torch.int16)


def refine(model: PatchScaler, states: "InFlight | list[InFlight]", seed: int, groups=None,
           on_batch: Callable[[int, int], None] | None = None) -> "InFlight | list[InFlight]":
    """Refine the patches of `groups` (all if None) of one piece's state or of several: per
    group, the patches of all the states in one list, cut into Patch-DiT calls of
    runtime.max_batch (on a GPU a call should see hundreds of patches of one group, not one
    piece's handful). A patch's noise comes from (seed, its index in its image), and each piece
    adds its patches in the same order whatever the others, so only the batch composition
    differs between one piece alone and several together: the same numbers up to float rounding
    in the matmuls (tested: within 1/255 of the output). `on_batch(group, patches)` after each
    call (progress). Each state is charged its share of the time."""
    one = isinstance(states, InFlight)
    states = [states] if one else states
    t = time.perf_counter()
    details = [_Detail(st) for st in states]
    for g in range(model.cfg.pgs.num_groups):
        if groups is not None and g not in groups:
            continue
        items = [(s, i) for s, st in enumerate(states)
                 for i in torch.nonzero(st.coarse.groups == g).flatten().tolist()]
        for chunk in pgs.batches(items, model.runtime.max_batch):
            y0 = torch.cat([states[s].coarse.patches([i]) for s, i in chunk])
            noise = torch.cat([patch_noise(seed, [int(states[s].coarse.index[i])], tuple(y0.shape[1:]))
                               for s, i in chunk])
            out = model.refine(y0, g, noise)
            for k, (s, i) in enumerate(chunk):
                details[s].add(i, out[k] - y0[k])
            if on_batch is not None:
                on_batch(g, len(chunk))
    for d in details:
        d.close()
    total = sum(len(st.coarse.groups) for st in states) or 1
    dt = time.perf_counter() - t
    for st in states:
        st.seconds["dit"] = st.seconds.get("dit", 0.0) + dt * len(st.coarse.groups) / total
    return states[0] if one else states


def latents(state: InFlight) -> tuple[torch.Tensor, torch.Tensor]:
    """(coarse, refined) float32 latents over the piece's region: the refined patches blended
    with the whole grid's weights (a pixel's weights sum to one over the patches that cover it)."""
    c = state.coarse
    coarse = c.latent.float()
    if state.detail is None:
        refined = coarse
    else:
        V = c.grid.patch
        w = pgs.blend_weights(V, c.grid.overlap)
        wsum = torch.zeros(1, *coarse.shape[-2:])
        for y, x in c.pos.tolist():
            wsum[:, y:y + V, x:x + V] += w
        refined = coarse + state.detail.float() / DETAIL_SCALE / wsum.clamp_min(1e-12)
    h, w_ = (min(c.grid.height - c.origin[0], coarse.shape[-2]), min(c.grid.width - c.origin[1], coarse.shape[-1]))
    return coarse[:, :h, :w_], refined[:, :h, :w_]


BAND_PIXELS = 1_500_000   # HR px the fusion works on at a time (with its halo): its memory, ~0.6 GiB


def finish(model: PatchScaler, state: InFlight, stats: dict | None = None) -> Image.Image:
    """The piece's output: the refined and the coarse latent fused with the LR (fusion.py) over
    its core, in row bands with the fusion's reach around each (so its float copies stay small
    whatever the piece's size), the alpha channel upscaled on its own, never diffused; resized
    to the piece's output box when the output scale is not the model's."""
    t = time.perf_counter()
    piece, cfg = state.piece, model.cfg
    s = cfg.grm.scale
    r = pieces.latent_per_lr(cfg)
    u = pieces.unit(cfg)
    coarse, refined = latents(state)
    ry0, ry1, rx0, rx1 = state.region
    resized = piece.outscale != s
    # the x`s` box to make, in region LR px: the core, plus the resize filter's reach
    m = pieces.RESIZE_REACH_LR if resized else 0
    by0, by1 = max(piece.core[0] - m, 0, ry0) - ry0, min(piece.core[1] + m, piece.height, ry1) - ry0
    bx0, bx1 = max(piece.core[2] - m, 0, rx0) - rx0, min(piece.core[3] + m, piece.width, rx1) - rx0
    halo = u * math.ceil(pieces.fusion_reach(cfg, resized) / r / u)   # LR px each band reads around it
    W = (rx1 - rx0) * s
    band = max(u, (BAND_PIXELS // max(W, 1)) // s - 2 * halo)
    band -= band % u
    out = None
    for a in range(by0, by1, max(band, u)):
        b = min(a + max(band, u), by1)
        ha, hb = max(a - halo, 0), min(b + halo, ry1 - ry0)
        la, lb = round(ha * r), round(hb * r)
        lr = state.prep.rgb[..., ha:hb, :]
        hr = model.finish(coarse[:, la:lb], refined[:, la:lb], lr, stats)
        hr = hr[..., (a - ha) * s:(b - ha) * s, bx0 * s:bx1 * s]
        alpha = None
        if state.prep.alpha is not None:
            al = torch.nn.functional.interpolate(state.prep.alpha[..., ha:hb, :], size=((hb - ha) * s, (rx1 - rx0) * s),
                                                 mode="bicubic", align_corners=False).clamp(0, 1)
            alpha = al[..., (a - ha) * s:(b - ha) * s, bx0 * s:bx1 * s]
        part = imageio.to_pil(hr, alpha, state.prep.mode)
        if out is None:
            out = imageio.new_image(part.mode, ((bx1 - bx0) * s, (by1 - by0) * s))
        out.paste(part, (0, (a - by0) * s))
    if resized:
        out = _resize(out, piece, (by0 + ry0, bx0 + rx0), s)
    state.seconds["stitch"] = time.perf_counter() - t
    return out


def _resize(image: Image.Image, piece: pieces.Piece, at: tuple[int, int], s: int) -> Image.Image:
    """The piece's output box from its x`s` image (whose top-left is LR px `at`): Lanczos,
    antialiased, with the same sample positions as a resize of the whole image."""
    oh, ow = pieces.output_size(piece.height, piece.width, piece.outscale)
    y0, y1, x0, x1 = pieces.output_box(piece, s)
    sy, sx = s * piece.height / oh, s * piece.width / ow
    box = (x0 * sx - at[1] * s, y0 * sy - at[0] * s, x1 * sx - at[1] * s, y1 * sy - at[0] * s)
    mode = image.mode
    if mode in ("I;16", "I"):   # Pillow resamples 16-bit grey as 32-bit
        return image.convert("I").resize((x1 - x0, y1 - y0), Image.Resampling.LANCZOS, box=box).convert("I;16")
    return image.resize((x1 - x0, y1 - y0), Image.Resampling.LANCZOS, box=box)
