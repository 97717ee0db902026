"""Texture extractor T and the RTM: unit-norm keys, top-K retrieval, farthest point sampling."""

import pytest
import torch

from patchscaler.config import TextureConfig

pytestmark = pytest.mark.fast


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
    from patchscaler.rtm_build import farthest_point_sampling
    x = torch.randn(60, 5)
    got = farthest_point_sampling(x, 10).tolist()
    chosen = [0]
    for _ in range(9):
        d = torch.cdist(x, x[chosen]).min(1).values
        chosen.append(int(d.argmax()))
    assert got == chosen
