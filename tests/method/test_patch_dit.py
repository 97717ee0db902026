"""The Patch-DiT: shapes, zero-initialised output, the texture-prompt path."""

import pytest
import torch

from patchscaler.config import DiTConfig

pytestmark = pytest.mark.fast


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
