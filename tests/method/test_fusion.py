"""The output's last step (patchscaler/fusion.py, colorfix.py) and the measures of what a person
sees (jobs/metrics.py): each property is checked on a case built to break it."""
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jobs.metrics import blockiness, clipped_pixels, mean_gradient, specks, tile_drop, tile_psnr_y
from patchscaler.colorfix import clip_weight, wavelet_color_fix
from patchscaler.config import FusionConfig
from patchscaler.fusion import dead_zone, fuse, gaussian_blur, towards

pytestmark = pytest.mark.fast

OFF = FusionConfig(detail_sigma=0, band_sigma=0, lr_tolerance=0, clip_radius=0)   # v0.3.0's output


def photo(size=256, seed=0) -> torch.Tensor:
    """A stand-in for an HR photo with no pixel grid in it (an enlarged JPEG would bring its
    own 8 px blocks): colour noise with a 1/f^1.5 amplitude spectrum, smooth like a photo."""
    g = torch.Generator().manual_seed(seed)
    f = torch.fft.fftfreq(size)
    radius = torch.sqrt(f[:, None] ** 2 + f[None, :] ** 2).clamp_min(1 / size)
    spec = torch.fft.fft2(torch.randn(1, 3, size, size, generator=g)) / radius ** 1.5
    x = torch.fft.ifft2(spec).real
    x = (x - x.mean()) / x.std()
    return (0.5 + 0.18 * x).clamp(0, 1)


def down(x):
    return F.interpolate(x, scale_factor=0.25, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


def u8(x):
    return (x[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def mosaic(shape, amp, seed=0):
    """Errors constant over 4x4 pixel blocks: what a wrong pixel-unshuffle latent pixel looks like."""
    g = torch.Generator().manual_seed(seed)
    B, C, H, W = shape
    return F.interpolate(torch.randn(B, C, H // 4, W // 4, generator=g) * amp, scale_factor=4, mode="nearest")


# --- measures -------------------------------------------------------------------------------

def test_blockiness_is_one_on_a_photo_and_high_on_a_4px_mosaic():
    hr = photo()
    assert 0.9 < blockiness(u8(hr), 4) < 1.1 and 0.9 < blockiness(u8(hr), 8) < 1.1
    blocky = u8(hr + mosaic(hr.shape, 0.03))
    assert blockiness(blocky, 4) > 1.3 and blockiness(blocky, 8) > 1.3
    # 8 px blocks raise the 8 px measure, not the 4 px one as much
    blocks8 = u8(hr + F.interpolate(mosaic(hr.shape, 0.03), scale_factor=2, mode="nearest")[..., :hr.shape[-2], :hr.shape[-1]])
    assert blockiness(blocks8, 8) > blockiness(blocks8, 4) > 1.0


def test_the_grid_peak_is_low_on_a_photo_and_high_on_a_fine_regular_pattern():
    from jobs.metrics import grid_peak
    hr = photo()
    clean = grid_peak(u8(hr), 4)
    dots = hr.clone()
    dots[..., ::4, ::4] += 0.04          # a faint dot every 4 px, as a GAN-distilled student draws
    assert clean < 3
    assert grid_peak(u8(dots), 4) > 5 * clean


def test_the_colour_fix_does_not_carry_an_inputs_jpeg_blocks_into_the_output():
    """An LR with 8 px JPEG-like blocks (a step of a few levels in each block's mean) and a GRM
    output without them (here the truth itself): the fix corrects the colour of whole regions,
    not at the x4 output's 32 px block scale, where it would lay the blocks' steps over the
    GRM's picture as blotches."""
    hr = photo()
    lr = F.interpolate(hr, scale_factor=0.25, mode="bicubic", align_corners=False).clamp(0, 1)
    g = torch.Generator().manual_seed(3)
    dc = torch.randn(1, 3, lr.shape[-2] // 8 + 1, lr.shape[-1] // 8 + 1, generator=g) * 0.02
    blocky = (lr + F.interpolate(dc, scale_factor=8, mode="nearest")[..., :lr.shape[-2], :lr.shape[-1]]).clamp(0, 1)
    out = fuse(hr, hr, blocky, FusionConfig())
    old = fuse(hr, hr, blocky, FusionConfig(colorfix_levels=5))
    moved, moved_old = float((out - hr).abs().mean()), float((old - hr).abs().mean())
    assert moved < 0.4 * moved_old and moved < 0.5 / 255


def test_tile_drop_finds_the_damaged_tile():
    hr = u8(photo())
    grm = hr.copy()
    out = hr.copy()
    out[32:64, 64:96] = np.clip(out[32:64, 64:96].astype(int) + 40, 0, 255)   # tile (1, 2) damaged
    d = tile_drop(out, grm, hr)
    assert d.shape == (hr.shape[0] // 32, hr.shape[1] // 32)
    assert d.argmin() == np.ravel_multi_index((1, 2), d.shape) and d.min() < -20
    assert (np.delete(d.ravel(), d.argmin()) == 0).all()
    assert np.isfinite(tile_psnr_y(hr, hr)).all()   # identical tiles stay finite (+1e-3 on the MSE)


def test_sharpness_and_clipped_measures():
    hr = u8(photo())
    soft = u8(gaussian_blur(photo(), 1.5))
    assert mean_gradient(soft) < 0.8 * mean_gradient(hr)
    lamp = hr.copy()
    lamp[:10, :10] = 255
    already = int(((hr[:10, :10] == 0) | (hr[:10, :10] == 255)).any(-1).sum())
    assert clipped_pixels(lamp) == clipped_pixels(hr) + 100 - already


# --- colour fix -----------------------------------------------------------------------------

def test_clip_weight_is_zero_near_clipped_pixels_and_one_far_away():
    x = torch.full((1, 3, 96, 96), 0.5)
    x[..., 46:50, 46:50] = 1.0
    w = clip_weight(x, radius=16)[0, 0]
    assert w[48, 48] == 0 and w[48, 48 + 8 + 2] == 0       # on it, and within radius / 2
    assert w[48, 48 + 2 + 17] == 1 and w[0, 0] == 1        # beyond the radius
    assert torch.all(w[48, 50:70].diff() >= 0)              # a monotone ramp in between
    assert (clip_weight(torch.full((1, 3, 8, 8), 0.5), radius=16) == 1).all()


def test_colour_fix_does_not_spread_a_clipped_highlight():
    """A lamp: a clipped disc on a dark wall. The bicubic LR's low band is a soft hill; the
    plain fix adds it around the disc and the highlight grows by tens of pixels."""
    yy, xx = torch.meshgrid(torch.arange(128.), torch.arange(128.), indexing="ij")
    disc = ((yy - 64) ** 2 + (xx - 64) ** 2 < 12 ** 2).float()
    hr = (0.15 + 0.85 * disc).expand(1, 3, 128, 128).clone()
    # the input saw the lamp's glow, clipped away in the restored disc: a wider, brighter hill
    up = (1.5 * gaussian_blur(hr, 8.0)).clamp(0, 1)
    ring = ((yy - 64) ** 2 + (xx - 64) ** 2 > 14 ** 2) & ((yy - 64) ** 2 + (xx - 64) ** 2 < 20 ** 2)
    plain = wavelet_color_fix(hr, up)
    kept = wavelet_color_fix(hr, up, clip_radius=16)
    assert (plain - hr)[0, 0][ring].abs().max() > 0.05           # the failure this guards against
    assert (kept - hr)[0, 0][ring].abs().max() < 0.01
    far = wavelet_color_fix(hr * 0 + 0.5, up * 0 + 0.6, clip_radius=16)   # no clipping: the fix applies
    assert torch.allclose(far, torch.full_like(far, 0.6), atol=1e-5)


# --- fusion ---------------------------------------------------------------------------------

def test_helpers():
    x = torch.tensor([-3.0, -1.0, 0.5, 2.0])
    assert dead_zone(x, 1.0).tolist() == [-2.0, 0.0, 0.0, 1.0]
    got = towards(torch.tensor([0.5, 0.5, -0.5, 2.0]), torch.tensor([1.0, -1.0, -0.25, 1.0]))
    assert got.tolist() == [0.5, 0.0, -0.25, 1.0]
    img = torch.rand(1, 3, 9, 7)
    assert torch.equal(gaussian_blur(img, 0), img)
    assert torch.allclose(gaussian_blur(torch.full((1, 3, 5, 6), 0.3), 4.0), torch.full((1, 3, 5, 6), 0.3))


def test_identity_refinement_gives_the_grm_with_the_colour_fix():
    grm = photo()
    lr = down(grm)
    a = fuse(grm, grm, lr, FusionConfig())
    b = fuse(grm, grm, lr, FusionConfig(detail_sigma=0, band_sigma=0))
    assert torch.allclose(a, b, atol=1e-6)   # no correction: only the colour fix acts
    assert (a - grm).abs().mean() < 0.01


def test_a_mosaic_in_the_refinement_does_not_reach_the_output():
    hr = photo()
    lr = down(hr)
    grm = hr
    dit = hr + mosaic(hr.shape, 0.04)
    old = u8(fuse(grm, dit, lr, OFF))
    new = u8(fuse(grm, dit, lr, FusionConfig()))
    assert blockiness(old, 4) > 1.3                   # v0.3.0's output shows it ...
    assert blockiness(new, 4) < 1.05 and blockiness(new, 8) < 1.05


def test_the_refinement_cannot_drift_a_region_away_from_the_input():
    """A dark blob the input does not show is removed; a correction the input asks for stays."""
    hr = photo()
    lr = down(hr)
    yy, xx = torch.meshgrid(torch.arange(hr.shape[-2]), torch.arange(hr.shape[-1]), indexing="ij")
    blob = torch.exp(-((yy - 60.) ** 2 + (xx - 60.) ** 2) / (2 * 12. ** 2))[None, None]
    dit = hr - 0.15 * blob                                  # GRM right, Patch-DiT adds a blob
    stats = {}
    out = fuse(hr, dit, lr, FusionConfig(), stats)
    assert (out - hr).abs()[..., 40:80, 40:80].mean() < 0.25 * 0.15 * blob[..., 40:80, 40:80].mean()
    assert stats["guarded"] > 0.5
    grm = (hr - 0.15 * blob).clamp(0, 1)                    # GRM wrong, Patch-DiT fixes it
    err = lambda x: (x - hr).abs()[..., 40:80, 40:80].mean()   # noqa: E731
    assert err(fuse(grm, hr, lr, FusionConfig())) < 0.5 * err(fuse(grm, grm, lr, FusionConfig()))


@pytest.mark.parametrize("size", [(4, 4), (8, 12), (36, 20)])
def test_fusion_on_tiny_and_odd_images(size):
    H, W = size
    grm = torch.rand(1, 3, H, W)
    out = fuse(grm, torch.rand(1, 3, H, W), torch.rand(1, 3, max(H // 4, 1), max(W // 4, 1)), FusionConfig())
    assert out.shape == grm.shape and torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


def test_crushed_shadows_stay_black_where_the_input_is_black_too():
    """A black suit: the GRM and the input are 0 there; a Patch-DiT that lifts it to grey must
    not reach the output. Where only the GRM clipped (the input is not black) the refinement
    may lift it."""
    hr = photo()
    hr[..., 64:192, 64:192] = 0
    lr = down(hr)
    dit = hr.clone()
    dit[..., 64:192, 64:192] += 0.03
    out = fuse(hr, dit, lr, FusionConfig())
    assert out[..., 96:160, 96:160].max() == 0
    lifted_input = lr.clone()
    lifted_input[..., 16:48, 16:48] = 0.03                   # the input says dark grey, not black
    out = fuse(hr, dit, lifted_input, FusionConfig())
    assert out[..., 96:160, 96:160].mean() > 0.02


def test_a_speck_in_a_flat_area_fades_but_detail_at_an_edge_stays():
    """A 5 px dark speck the Patch-DiT adds to a flat sky (neither the GRM nor the input has any
    structure within flat_radius px) is scaled down to the noise tolerance; the same correction
    on an edge the GRM has is kept. The hue of what remains is the speck's."""
    sky = torch.zeros(1, 3, 128, 128) + torch.tensor([0.15, 0.2, 0.45]).view(1, 3, 1, 1)
    grm = sky.clone()
    grm[..., :, 96:] = 0.9                                   # a bright edge at x = 96
    lr = down(grm)
    yy, xx = torch.meshgrid(torch.arange(128.), torch.arange(128.), indexing="ij")
    speck = lambda y, x: torch.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 2.0 ** 2))[None, None]  # noqa: E731
    change = -0.12 * (speck(40, 40) + speck(40, 95)) * torch.tensor([1.0, 0.8, 0.5]).view(1, 3, 1, 1)
    dit = grm + change
    on, off = FusionConfig(), dataclasses.replace(FusionConfig(), flat_radius=0)
    stats = {}
    a, b = fuse(grm, dit, lr, on, stats), fuse(grm, dit, lr, off)
    flat_a, flat_b = (a - grm)[..., 30:50, 30:50], (b - grm)[..., 30:50, 30:50]
    assert flat_b.abs().max() > 0.02                         # without the guard the speck is there
    assert flat_a.abs().max() < 0.45 * flat_b.abs().max()    # with it, mostly gone
    assert stats["flat_guarded"] > 0
    edge_a, edge_b = (a - grm)[..., 30:50, 88:94], (b - grm)[..., 30:50, 88:94]
    assert torch.allclose(edge_a, edge_b, atol=1e-6)         # at the edge: untouched
    # no speck, nothing to do: the guard changes nothing on a photo with a correction everywhere
    hr = photo()
    assert torch.allclose(fuse(hr, hr + 0.02 * mosaic(hr.shape, 1.0), down(hr), on),
                          fuse(hr, hr + 0.02 * mosaic(hr.shape, 1.0), down(hr), off), atol=0.02)


def test_specks_measure_counts_spurious_detail_in_flat_areas_only():
    hr = u8(torch.zeros(1, 3, 128, 128) + 0.4)
    hr[:, 100:] = 200                                        # an edge: not flat
    out = hr.copy()
    assert specks(out, hr) == 0
    out[40:45, 40:45] = 60                                   # a dark speck in the flat part
    assert specks(out, hr) > 0
    edge = hr.copy()
    edge[:, 98:102] = 120                                    # an error at the edge: not a speck
    assert specks(edge, hr) == 0


def test_a_ripple_on_a_nearly_black_area_does_not_lift_it():
    """The bundled astronaut's suit: the GRM at ~1 grey level, the Patch-DiT's detail band a
    +-4 level ripple there. Clipped at black on one side only, it would lift the suit on average
    (and every 32 px tile of it would measure several dB worse than the GRM). Within the
    headroom to black it passes at most as large as the distance; on mid grey it is untouched."""
    H = 128
    grm = torch.zeros(1, 3, H, H) + 1 / 255
    grm[..., :, 64:] = 0.5                                   # left: nearly black; right: mid grey
    xx = torch.arange(H, dtype=torch.float32).view(1, 1, 1, H)
    ripple = 4 / 255 * torch.cos(2 * torch.pi * xx / 16).expand(1, 3, H, H)
    dit, lr = grm + ripple, down(grm)
    on, off = FusionConfig(), dataclasses.replace(FusionConfig(), headroom=0)
    a, b = fuse(grm, dit, lr, on), fuse(grm, dit, lr, off)
    black = (..., slice(16, 112), slice(8, 48))
    lift_a, lift_b = float((a - grm)[black].mean()) * 255, float((b - grm)[black].mean()) * 255
    assert lift_b > 0.15 and abs(lift_a) < 0.05, (lift_a, lift_b)   # in grey levels
    assert float((a - grm)[black].abs().max()) <= 1 / 255 + 1e-6   # no larger than the headroom
    grey = (..., slice(16, 112), slice(80, 120))
    assert torch.equal(a[grey], b[grey])                     # mid grey: the same as without it
    # near white the same, mirrored; and the guard does not depend on the flat-area guard
    white = 1 - grm
    w = fuse(white, white + ripple, down(white), on)
    assert abs(float((w - white)[black].mean()) * 255) < 0.05
    no_flat = dataclasses.replace(on, flat_radius=0)
    c, d = fuse(grm, dit, lr, no_flat), fuse(grm, dit, lr, dataclasses.replace(no_flat, headroom=0))
    assert abs(float((c - grm)[black].mean()) * 255) < 0.05 < float((d - grm)[black].mean()) * 255


def test_headroom_keeps_the_detail_of_a_saturated_colour():
    """A saturated red (green and blue at 1 level) with a ripple in every channel: green and
    blue are not lifted (their ripple would be clipped at 0), red keeps all of its ripple (the
    guard works per channel, not by the tightest one)."""
    H = 128
    red = torch.tensor([0.7, 1 / 255, 1 / 255]).view(1, 3, 1, 1).expand(1, 3, H, H).clone()
    red[..., :, 64:] = 0.3
    xx = torch.arange(H, dtype=torch.float32).view(1, 1, 1, H)
    ripple = 6 / 255 * torch.cos(2 * torch.pi * xx / 12).expand(1, 3, H, H)
    on, off = FusionConfig(), dataclasses.replace(FusionConfig(), headroom=0)
    stats = {}
    a, b = fuse(red, red + ripple, down(red), on, stats), fuse(red, red + ripple, down(red), off)
    region = (..., slice(16, 112), slice(8, 44))
    detail = lambda x, ch: float((x - red)[region][:, ch].std()) * 255  # noqa: E731
    lift = lambda x, ch: float((x - red)[region][:, ch].mean()) * 255  # noqa: E731
    assert detail(b, 0) > 0.5 and abs(detail(a, 0) - detail(b, 0)) < 0.01 * detail(b, 0)
    assert lift(b, 1) > 0.15 and abs(lift(a, 1)) < 0.05 and abs(lift(a, 2)) < 0.05
    assert 0 < stats["headroom_guarded"] < 1
