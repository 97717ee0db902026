import io
import os

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(2)
os.environ.setdefault("PATCHSCALER_CACHE", os.path.join(os.path.dirname(__file__), "..", ".cache"))


def photo(w=48, h=40, seed=0, mode="RGB") -> Image.Image:
    """A small real-looking test image: smooth gradients plus texture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    r = 128 + 100 * np.sin(x / 7.0 + seed)
    g = 128 + 100 * np.cos(y / 5.0)
    b = rng.integers(0, 255, (h, w))
    arr = np.stack([r, g, b], -1).clip(0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB").convert(mode)


def encode(im: Image.Image, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="session")
def tiny_model():
    from patchscaler import PatchScaler, Runtime, tiny_config
    torch.manual_seed(0)
    m = PatchScaler(tiny_config())
    from patchscaler.rtm import RTM
    m.rtm = RTM(torch.randn(16, m.cfg.texture.feature_dim), torch.randn(16, m.cfg.latent_channels, 8, 8))
    return m.configure(Runtime(precision="fp32", max_batch=8))
