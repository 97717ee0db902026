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


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole test session (ray.init costs ~8 s here)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """A tiny model saved as a checkpoint, with a non-trivial Patch-DiT (so pixels depend on
    the noise) and a confidence head whose output spreads over all groups."""
    from patchscaler import PatchScaler, tiny_config
    from patchscaler.checkpoint import save
    from patchscaler.rtm import RTM
    torch.manual_seed(0)
    m = PatchScaler(tiny_config())
    m.rtm = RTM(torch.randn(16, m.cfg.texture.feature_dim), torch.randn(16, m.cfg.latent_channels, 8, 8))
    for p in m.dit.out.parameters():
        p.data.normal_(0, 0.02)
    for p in m.grm.c_head.parameters():
        p.data.normal_(0, 0.3)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save(m, str(path), half=False)
    return str(path)
