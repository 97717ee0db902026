"""The RTM build's Ray callable (jobs/build_rtm.py wires it)."""
from __future__ import annotations

import torch


class CropFeatures:
    """One image row (input, key) -> its crops' keys and values, or its error
    (rtm_index.features.crop_features). Loads the codec and T only."""

    def __init__(self, src, src_options, checkpoint, crops, seed):
        from patchscaler.model import Runtime
        from patchscaler.upscale import build_default
        from storage import Store
        torch.set_num_threads(1)
        self.src = Store(src, src_options)
        self.model = build_default(checkpoint, parts=("texture",)).configure(Runtime())
        self.crops, self.seed = crops, seed

    def __call__(self, batch):
        from rtm_index.features import crop_features
        rel, key = batch["input"][0], int(batch["key"][0])
        try:
            data = self.src.read(rel)
        except Exception as e:
            return {"input": [rel], "error": [f"{type(e).__name__}: {e}"], "keys": [b""], "values": [b""], "n": [0]}
        row = crop_features(self.model, data, rel, key, self.crops, self.seed)
        return {k: [v] for k, v in row.items()}
