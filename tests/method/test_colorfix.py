"""The wavelet colour fix."""

import pytest
import torch

pytestmark = pytest.mark.fast


def test_wavelet_color_fix_takes_colour_from_style_detail_from_content():
    from patchscaler.colorfix import wavelet_color_fix, wavelet_decompose
    for C in (1, 3, 4):
        content = torch.rand(1, C, 64, 64)
        h, l = wavelet_decompose(content)
        assert torch.allclose(h + l, content, atol=1e-5)
        style = torch.full((1, C, 64, 64), 0.3)
        out = wavelet_color_fix(content, style)
        assert abs(float(out.mean()) - 0.3) < 0.02
        assert torch.allclose(out - out.mean(), h - h.mean(), atol=0.05)
    tiny = wavelet_color_fix(torch.rand(1, 3, 1, 1), torch.rand(1, 3, 1, 1))
    assert tiny.shape == (1, 3, 1, 1)
