import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_model():
    from patchscaler import PatchScaler, Runtime, tiny_config
    from patchscaler.rtm import RTM
    torch.manual_seed(0)
    m = PatchScaler(tiny_config())
    m.rtm = RTM(torch.randn(16, m.cfg.texture.feature_dim), torch.randn(16, m.cfg.latent_channels, 8, 8))
    return m.configure(Runtime(precision="fp32", max_batch=8))
