import math

import numpy as np
import pytest
import torch

from patchscaler.degrade import DegradeConfig, anisotropic_kernel, degrade, sinc_kernel
from helpers import photo

pytestmark = pytest.mark.fast


def _hr(seed=0):
    return torch.from_numpy(np.asarray(photo(96, 64, seed=seed), np.float32) / 255).permute(2, 0, 1)[None]


def test_kernels_normalised_and_shaped():
    k = anisotropic_kernel(21, 3.0, 1.0, math.pi / 6)
    assert abs(float(k.sum()) - 1) < 1e-5 and torch.allclose(k, k.flip(0).flip(1), atol=1e-6)
    assert not torch.allclose(k, k.T, atol=1e-4)  # anisotropic and rotated
    for beta, plateau in ((1.0, False), (4.0, False), (1.5, True)):
        kk = anisotropic_kernel(15, 2.0, 2.0, 0.0, beta, plateau)
        assert abs(float(kk.sum()) - 1) < 1e-5 and int(kk.argmax()) == 15 * 7 + 7
    s = sinc_kernel(21, math.pi / 3)
    assert abs(float(s.sum()) - 1) < 1e-5 and (s < 0).any()  # ringing lobes: what sinc adds


def test_degrade_shape_range_quantised_and_seeded():
    hr = _hr()
    a = degrade(hr, torch.Generator().manual_seed(3))
    b = degrade(hr, torch.Generator().manual_seed(3))
    c = degrade(hr, torch.Generator().manual_seed(4))
    assert a.shape == (1, 3, 16, 24) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal((a * 255).round(), a * 255)


def test_degradations_vary_and_hurt():
    hr = _hr(1)
    bic = torch.nn.functional.interpolate(hr, size=(16, 24), mode="area")
    errs = [float((degrade(hr, torch.Generator().manual_seed(s)) - bic).abs().mean()) for s in range(8)]
    assert min(errs) > 0.003 and max(errs) > 2 * min(errs)


def test_scale_configurable():
    out = degrade(_hr(), torch.Generator().manual_seed(0), DegradeConfig(scale=2))
    assert out.shape == (1, 3, 32, 48)
