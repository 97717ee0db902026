"""Fusion: how the Patch-DiT's refinement, the GRM's result and the LR input make the output
pixels (the last part of the stitch; pixel space, pixel-unshuffle codec).

The Patch-DiT refines each coarse patch; its change to the GRM's result, the *correction*
D - G, is trusted only as far as it can be (each step measured on training photos, docs/experiments.md):

1. Detail from the GRM. The correction is Gaussian-blurred by `detail_sigma` px. Whatever
   the Patch-DiT gets wrong at the finest scales shows as 4x4-pixel blocks (one latent pixel
   of the pixel-unshuffle codec) and 8x8 tokens: a mosaic. Real-ESRGAN's own fine detail is
   sharper and block-free, so below that scale the output keeps the GRM's pixels.
2. Consistent with the input. Below `band_sigma` px the correction may only move the output
   towards the (bicubic-upsampled) LR, and no further than the LR disagrees with the GRM
   beyond the LR's own noise level (`lr_tolerance`): a box constraint. The Patch-DiT is then
   free to sharpen and reshape within a band, but cannot drift the brightness or colour of a
   region away from what the input shows (the dark blobs and patch-sized shifts of v0.3.0).
   Where the GRM's pixels are clipped (pure black or white; the truth mostly is too there), the
   correction fades out within `clip_radius` / 4 px: it would lift crushed shadows into grey.
   No specks: the detail band of the correction (between `detail_sigma` and `band_sigma`)
   may exceed `lr_tolerance` only as far as the GRM or the input has an edge or texture
   within `flat_radius` px (its steepest gradient there x flat_radius). The Patch-DiT now and
   then draws an isolated 4-6 px dot into a flat sky; nothing in the input supports it, and
   it is scaled down (all channels alike, so what remains keeps its hue). Detail next to
   edges and in textures is untouched.
   No lifted blacks: the detail band is also kept within the distance of the pixel it is
   added to from black or white (`headroom`, per channel). A ripple of +-2 levels on a region
   at level 0.6 is clipped at 0 on one side only, so it lifts the region on average: the black
   suit of the bundled astronaut came out 1-2 levels lighter than the GRM's and the truth.
3. Colour fix (wavelet, StableSR) against the upsampled LR, with the same dead zone (a low
   band already within `lr_tolerance` of the LR is left alone, so noise in the LR does not
   move a region the GRM got right) and left out near clipped highlights and shadows
   (`clip_radius`, see colorfix.py).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .colorfix import clip_weight, wavelet_decompose
from .config import FusionConfig


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W), replicate borders; sigma <= 0: unchanged."""
    if sigma <= 0:
        return x
    k = 2 * math.ceil(3 * sigma) + 1
    r = torch.arange(k, dtype=x.dtype, device=x.device) - k // 2
    w = torch.exp(-0.5 * (r / sigma) ** 2)
    w = w / w.sum()
    C = x.shape[1]
    x = F.pad(x, (k // 2, k // 2, 0, 0), mode="replicate")
    x = F.conv2d(x, w.view(1, 1, 1, k).expand(C, 1, 1, k), groups=C)
    x = F.pad(x, (0, 0, k // 2, k // 2), mode="replicate")
    return F.conv2d(x, w.view(1, 1, k, 1).expand(C, 1, k, 1), groups=C)


def structure(cfg: FusionConfig, *images: torch.Tensor) -> torch.Tensor:
    """Per pixel and channel, the steepest gradient (levels per px, at the detail_sigma scale)
    that any of `images` has within flat_radius px: ~0 in a flat sky, large near edges and in
    textures."""
    g = None
    for x in images:
        b = gaussian_blur(x, cfg.detail_sigma)
        gy = F.pad(b[..., 1:, :] - b[..., :-1, :], (0, 0, 0, 1)).abs()
        gx = F.pad(b[..., :, 1:] - b[..., :, :-1], (0, 1, 0, 0)).abs()
        m = torch.maximum(gx, gy)
        g = m if g is None else torch.maximum(g, m)
    r = max(int(round(cfg.flat_radius)), 1)
    return F.max_pool2d(g, 2 * r + 1, 1, r)


def dead_zone(x: torch.Tensor, tolerance: float) -> torch.Tensor:
    """Shrink towards zero by `tolerance` (soft threshold): differences within it are noise."""
    return torch.sign(x) * (x.abs() - tolerance).clamp_min(0)


def towards(correction: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Clamp `correction` into the interval between 0 and `allowed`, per element."""
    zero = torch.zeros_like(allowed)
    return torch.minimum(torch.maximum(correction, torch.minimum(zero, allowed)), torch.maximum(zero, allowed))


def fuse(grm: torch.Tensor, dit: torch.Tensor, lr: torch.Tensor, cfg: FusionConfig,
         stats: dict | None = None) -> torch.Tensor:
    """grm, dit: (1, 3, H, W) the GRM's and the Patch-DiT's HR images; lr: (1, 3, h, w) the
    input. Returns the output in [0, 1]. `stats`, if given, gets `guarded`: the share of the
    correction's low band (L1) that the input-consistency box removed, and `flat_guarded` /
    `headroom_guarded`: the shares of its detail band the flat-area and headroom guards removed."""
    grm, dit, lr = grm.float(), dit.float(), lr.float()
    up = F.interpolate(lr, size=grm.shape[-2:], mode="bicubic", align_corners=False).clamp(0, 1)
    correction = gaussian_blur(dit - grm, cfg.detail_sigma)
    if cfg.clip_radius > 0:   # where the GRM and the input are both clipped, the output stays so
        near_lr = F.interpolate(clip_weight(lr, radius=1), size=grm.shape[-2:], mode="bilinear", align_corners=False)
        correction = correction * torch.maximum(clip_weight(grm, radius=max(cfg.clip_radius // 4, 1)), near_lr)
    if cfg.band_sigma > 0:
        low = gaussian_blur(correction, cfg.band_sigma)
        allowed = dead_zone(gaussian_blur(up, cfg.band_sigma) - gaussian_blur(grm, cfg.band_sigma), cfg.lr_tolerance)
        kept = towards(low, allowed)
        if stats is not None:
            total = float(low.abs().sum())
            stats["guarded"] = float((low - kept).abs().sum()) / total if total > 0 else 0.0
        mid = correction - low   # the detail band, between detail_sigma and band_sigma
        if cfg.flat_radius > 0:   # no structure where neither image has any
            # scaled, not clipped per channel, so a speck fades without changing its hue
            bound = cfg.lr_tolerance + cfg.flat_radius * structure(cfg, grm, up)
            flat = mid * (bound / mid.abs().clamp_min(1e-8)).amin(1, keepdim=True).clamp(max=1)
            if stats is not None:
                total = float(mid.abs().sum())
                stats["flat_guarded"] = float((mid - flat).abs().sum()) / total if total > 0 else 0.0
            mid = flat
        if cfg.headroom > 0:   # no ripple clipped on one side: within what it sits on's distance from 0 and 1
            base = gaussian_blur(grm, cfg.detail_sigma) + kept
            room = cfg.headroom * torch.minimum(base, 1 - base).clamp_min(0)
            # per channel: a saturated colour's other channels keep their detail
            kept_mid = torch.minimum(torch.maximum(mid, -room), room)
            if stats is not None:
                total = float(mid.abs().sum())
                stats["headroom_guarded"] = float((mid - kept_mid).abs().sum()) / total if total > 0 else 0.0
            mid = kept_mid
        correction = kept + mid
    out = grm + correction
    _, out_low = wavelet_decompose(out, cfg.colorfix_levels)
    _, up_low = wavelet_decompose(up, cfg.colorfix_levels)
    fix = dead_zone(up_low - out_low, cfg.lr_tolerance)
    if cfg.clip_radius > 0:   # clipped pixels: in the output, or in the LR itself (its noise is clipped there)
        far = clip_weight(out, up, radius=cfg.clip_radius)
        far_lr = clip_weight(lr, radius=max(cfg.clip_radius // 4, 1))
        fix = fix * far * F.interpolate(far_lr, size=out.shape[-2:], mode="bilinear", align_corners=False)
    return (out + fix).clamp(0, 1)
