"""Cross-image batching in the Patch-DiT pools: several images' patches of one group in one
call. Deterministic per (seed, image, patch); within float rounding of image-by-image."""
import numpy as np
import pytest
import torch
from helpers import encode, photo

from patchscaler import Runtime, flow, imageio
from patchscaler.checkpoint import load


@pytest.fixture(scope="module")
def model(checkpoint):
    """The tiny checkpoint: a Patch-DiT that changes the patches, groups spread over all three."""
    return load(checkpoint).configure(Runtime(precision="fp32", max_batch=8))


def _states(model, sizes):
    return [flow.begin(model, imageio.decode(encode(photo(w, h, seed=i)))) for i, (w, h) in enumerate(sizes)]


def test_refine_many_matches_image_by_image(model):
    sizes = [(48, 40), (40, 32), (56, 24)]
    alone = _states(model, sizes)
    for st in alone:
        flow.refine(model, st, seed=3)
    together = _states(model, sizes)
    calls = []
    flow.refine_many(model, together, seed=3, on_batch=lambda g, n: calls.append((g, n)))
    n_patches = sum(len(st.coarse.groups) for st in together)
    assert sum(n for _, n in calls) == n_patches
    # fewer, fuller calls than image by image (max_batch 8 in the fixture)
    per_image = sum(len(flow.group_batches(model, st.coarse.groups)) for st in alone)
    assert len(calls) < per_image
    for a, b in zip(alone, together):
        assert torch.allclose(a.refined, b.refined, atol=1e-4), (a.refined - b.refined).abs().max()
        assert not torch.equal(b.refined, b.coarse.patches)  # the patches were refined
        ia = np.asarray(flow.finish(model, a), np.int16)
        ib = np.asarray(flow.finish(model, b), np.int16)
        assert np.abs(ia - ib).max() <= 1
    # deterministic: the same batch again gives the same bits
    again = _states(model, sizes)
    flow.refine_many(model, again, seed=3)
    for b, c in zip(together, again):
        assert torch.equal(b.refined, c.refined)


def test_refine_many_only_touches_the_given_groups(model):
    states = _states(model, [(48, 40), (40, 40)])
    flow.refine_many(model, states, seed=0, groups=[2])
    for st in states:
        keep = st.coarse.groups != 2
        assert torch.equal(st.refined[keep], st.coarse.patches[keep])
