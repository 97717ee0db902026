import io
import os

import numpy as np
from PIL import Image


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


def write_tree(root, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        p = os.path.join(root, name)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
