"""Cross-image batching in the Patch-DiT pools: several images' patches of one group in one
call. Deterministic per (seed, image, patch); within float rounding of image-by-image."""
import numpy as np
import pytest
import torch
from helpers import encode, photo

from patchscaler import Runtime, flow, imageio
from patchscaler.checkpoint import load

pytestmark = pytest.mark.fast


@pytest.fixture(scope="module")
def model(checkpoint):
    """The tiny checkpoint: a Patch-DiT that changes the patches, groups spread over all three."""
    return load(checkpoint).configure(Runtime(precision="fp32", max_batch=8))


def _states(model, sizes):
    return [flow.begin(model, imageio.decode(encode(photo(w, h, seed=i)))) for i, (w, h) in enumerate(sizes)]


def test_pieces_refined_together_match_one_by_one(model):
    sizes = [(48, 40), (40, 32), (56, 24)]
    alone = _states(model, sizes)
    for st in alone:
        flow.refine(model, st, seed=3)
    together = _states(model, sizes)
    calls = []
    flow.refine(model, together, seed=3, on_batch=lambda g, n: calls.append((g, n)))
    n_patches = sum(len(st.coarse.groups) for st in together)
    assert sum(n for _, n in calls) == n_patches
    # fewer, fuller calls than image by image (max_batch 8 in the fixture)
    per_image = sum(len(flow.group_batches(model, st.coarse.groups)) for st in alone)
    assert len(calls) < per_image
    for a, b in zip(alone, together):
        # fixed point (flow.DETAIL_SCALE): a float rounding apart moves a value by at most a step or two
        assert (a.detail.int() - b.detail.int()).abs().max() <= 2, (a.detail.int() - b.detail.int()).abs().max()
        assert bool(b.refined.all()) and b.detail.abs().max() > 0  # the patches were refined
        ia = np.asarray(flow.finish(model, a), np.int16)
        ib = np.asarray(flow.finish(model, b), np.int16)
        assert np.abs(ia - ib).max() <= 1
    # deterministic: the same batch again gives the same bits
    again = _states(model, sizes)
    flow.refine(model, again, seed=3)
    for b, c in zip(together, again):
        assert torch.equal(b.detail, c.detail)


def test_refine_only_touches_the_given_groups(model):
    states = _states(model, [(48, 40), (40, 40)])
    flow.refine(model, states, seed=0, groups=[2])
    for st in states:
        assert torch.equal(st.refined, st.coarse.groups == 2)
        # the detail is zero wherever no hard patch reaches
        V, reach = st.coarse.grid.patch, torch.zeros(st.coarse.latent.shape[-2:], dtype=torch.bool)
        for (y, x) in st.coarse.pos[st.coarse.groups == 2].tolist():
            reach[y:y + V, x:x + V] = True
        assert st.detail[:, ~reach].abs().max() == 0
