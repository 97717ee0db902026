"""The RTM build's Ray callables (jobs/rtm_job.py wires them)."""
from __future__ import annotations

import os

import torch


class CropFeatures:
    """A batch of image rows (input, key, keep, ...) -> one feature row per image: its kept
    crops' keys, and where in this call's shard file under DST's scratch their values are
    (rtm_index.build.encode_shard). Loads the codec and T only."""

    def __init__(self, src, src_options, dst, dst_options, scratch, checkpoint):
        from patchscaler.model import Runtime
        from patchscaler.upscale import build_default
        from storage import Store
        torch.set_num_threads(1)
        self.src, self.dst, self.scratch = Store(src, src_options), Store(dst, dst_options), scratch
        self.model = build_default(checkpoint, components=("texture",)).configure(Runtime())

    def __call__(self, batch):
        from rtm_index.build import encode_shard
        items = [dict(zip(batch, vals)) for vals in zip(*batch.values())]
        rows = encode_shard(self.model, self.dst, self.scratch, items, self.src.read)
        return {k: [r[k] for r in rows] for k in rows[0]}


def fps_shard(chunk: torch.Tensor, k: int) -> tuple[torch.Tensor, dict]:
    """One shard's farthest point sampling, in a Ray task; with where it ran (for the trace)."""
    import ray

    from patchscaler.rtm_build import farthest_point_sampling
    torch.set_num_threads(1)
    ctx = ray.get_runtime_context()
    return farthest_point_sampling(chunk, k), {"pid": os.getpid(), "node": ctx.get_node_id()}
