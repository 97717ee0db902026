"""The RTM build's per-image step (paper Algorithm 1, first half): an image's seeded random
crops -> codec latents (the values) and T features (the keys). The crops depend only on
(seed, the image's key), so any worker, in any order, gives the same RTM."""
from __future__ import annotations

import numpy as np

from patchscaler import imageio
from patchscaler.rtm_build import crop_size, encode_crops, random_crops


def crop_features(model, data: bytes, rel: str, key: int, crops: int, seed: int) -> dict:
    """One image's row: its crops' keys and values as bytes, or its error (never raises)."""
    rng = np.random.default_rng([seed, key])
    try:
        prep = imageio.decode(data)
        c = random_crops(prep, crop_size(model), crops, rng)
        if len(c) == 0:
            raise imageio.BadImage(f"smaller than one {crop_size(model)} px crop")
        keys, values = encode_crops(model, c)
        return {"input": rel, "error": "", "keys": keys.numpy().tobytes(), "values": values.half().numpy().tobytes(),
                "n": len(c)}
    except Exception as e:
        return {"input": rel, "error": f"{type(e).__name__}: {e}", "keys": b"", "values": b"", "n": 0}
