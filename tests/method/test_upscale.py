"""Image modes, EXIF/ICC, and the in-process upscaler (the oracle)."""
import copy
import dataclasses
import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

from patchscaler import imageio
from patchscaler.upscale import upscale, upscale_prepared

from helpers import encode, photo


def run(model, data: bytes, seed=0):
    return upscale_prepared(model, imageio.decode(data), seed)


def _noisy_copy(model, seed: int):
    """A copy of the session's tiny model whose Patch-DiT has non-zero output weights (so the
    noise matters), with its own Runtime: the shared fixture is never changed, even when a
    test fails halfway."""
    m = copy.deepcopy(model).configure(dataclasses.replace(model.runtime))
    torch.manual_seed(seed)
    for p in m.dit.out.parameters():
        p.data.normal_(0, 0.02)
    return m


def test_same_seed_same_pixels_other_seed_other_pixels(tiny_model):
    model = _noisy_copy(tiny_model, 1)
    data = encode(photo(40, 24))
    a, b, c = run(model, data, 0), run(model, data, 0), run(model, data, 1)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert not np.array_equal(np.asarray(a.image), np.asarray(c.image))
    assert a.image.size == (160, 96)


def test_result_does_not_depend_on_batching(tiny_model):
    model = _noisy_copy(tiny_model, 2)
    data = encode(photo(40, 40))
    model.runtime.max_batch = 64
    a = np.asarray(run(model, data).image).astype(int)
    model.runtime.max_batch = 3
    b = np.asarray(run(model, data).image).astype(int)
    assert np.abs(a - b).max() <= 1  # same noise per patch; only float rounding may differ


def test_untrained_dit_returns_the_grm_result(tiny_model):
    """x0-residual parametrisation + zero-initialised output: refinement is the identity, so
    the output is the GRM's coarse image after the colour fix."""
    assert all(not p.any() for p in tiny_model.dit.out.parameters())  # the fixture is untouched
    data = encode(photo(32, 32))
    prep = imageio.decode(data)
    out = run(tiny_model, data)
    latent, conf = tiny_model.restore(prep.rgb)
    latent = latent.half().float()   # the state keeps the coarse latent in float16 (flow.py)
    ref = tiny_model.finish(latent, latent, prep.rgb)
    assert np.abs(np.asarray(out.image).astype(int) - np.asarray(imageio.to_pil(ref, None, "RGB")).astype(int)).max() == 0


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "RGB"])
def test_modes_keep_their_family(tiny_model, mode):
    im = photo(20, 16).convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    r = run(tiny_model, encode(im, fmt))
    want = {"L": "L", "LA": "LA", "RGBA": "RGBA", "P": "RGB", "CMYK": "RGB", "RGB": "RGB"}[mode]
    assert r.image.mode == want and r.image.size == (80, 64)


def test_alpha_is_upscaled_on_its_own(tiny_model):
    im = photo(24, 24).convert("RGBA")
    a = np.zeros((24, 24), np.uint8)
    a[:, 12:] = 255
    im.putalpha(Image.fromarray(a))
    out = np.asarray(run(tiny_model, encode(im)).image)
    assert out[:, :40, 3].max() <= 5 and out[:, 56:, 3].min() >= 250


def test_sixteen_bit_grey_stays_sixteen_bit(tiny_model):
    g = (np.linspace(0, 65535, 24 * 16).reshape(16, 24)).astype(np.uint16)
    im = Image.fromarray(g)
    prep = imageio.decode(encode(im))
    assert prep.mode == "I16"
    r = upscale_prepared(tiny_model, prep)
    assert r.image.mode == "I;16"
    data = imageio.encode(r.image, imageio.output_format(prep.format, prep.mode, False))
    back = Image.open(io.BytesIO(data))
    assert back.mode in ("I;16", "I") and np.asarray(back).max() > 255


def test_exif_orientation_applied_and_icc_kept(tiny_model):
    im = photo(30, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = encode(im, "JPEG", exif=exif.tobytes(), icc_profile=icc)
    prep = imageio.decode(data)
    assert prep.size == (20, 30)
    r = upscale_prepared(tiny_model, prep)
    assert r.image.size == (80, 120)
    out = Image.open(io.BytesIO(imageio.encode(r.image, "JPEG", meta=prep.meta)))
    assert out.info.get("icc_profile") == icc
    assert out.getexif().get(0x0112, 1) == 1


@pytest.mark.parametrize("data,msg", [
    (b"", "empty"),
    (b"this is not an image at all", "not an image"),
    (encode(photo(64, 64), "PNG")[:200], "truncated"),
    (encode(photo(64, 64), "JPEG")[:300], "truncated"),
])
def test_bad_bytes_raise_clear_errors(data, msg):
    with pytest.raises(imageio.BadImage, match=msg):
        imageio.decode(data)


def test_bomb_refused_before_decoding():
    im = Image.new("L", (5000, 5000))
    data = encode(im, "PNG")
    with pytest.raises(imageio.BadImage, match="too large"):
        imageio.decode(data, max_pixels=1_000_000)


def test_one_pixel_image(tiny_model):
    r = run(tiny_model, encode(Image.new("RGB", (1, 1), (200, 30, 40))))
    assert r.image.size == (4, 4)
    assert np.abs(np.asarray(r.image).astype(int) - [200, 30, 40]).max() < 30


def test_upscale_api_accepts_pil_bytes_and_paths(tiny_model, tmp_path):
    im = photo(16, 16)
    p = tmp_path / "a.png"
    im.save(p)
    outs = [upscale(x, tiny_model) for x in (im, encode(im), p, str(p))]
    assert all(np.array_equal(np.asarray(outs[0]), np.asarray(o)) for o in outs)
