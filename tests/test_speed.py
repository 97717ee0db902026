"""Runtime precision: "auto" picks bf16 (for the Patch-DiT; the GRM stays fp32) only where the
hardware computes it (elsewhere it is emulated and measured 14x slower), $PATCHSCALER_PRECISION
overrides it, bad values fail; "bf16-dit" leaves the GRM in fp32."""
import pytest
import torch

from patchscaler import model as model_mod
from patchscaler.model import Runtime


def test_auto_precision_follows_the_hardware(monkeypatch):
    monkeypatch.delenv("PATCHSCALER_PRECISION", raising=False)
    monkeypatch.setattr(model_mod, "native_bf16", lambda device: False)
    assert Runtime().precision == "fp32"
    monkeypatch.setattr(model_mod, "native_bf16", lambda device: device == "cuda")
    assert Runtime(device="cuda").precision == "bf16-dit"
    assert Runtime(device="cpu").precision == "fp32"
    assert Runtime(device="cuda", precision="fp32").precision == "fp32"  # an explicit choice stays


def test_precision_override_and_validation(monkeypatch):
    monkeypatch.setenv("PATCHSCALER_PRECISION", "bf16")
    assert Runtime().precision == "bf16"
    assert Runtime(precision="fp32").precision == "fp32"
    with pytest.raises(ValueError, match="precision"):
        Runtime(precision="fp16")


def test_native_bf16_probe_answers_on_this_machine():
    assert model_mod.native_bf16("cpu") in (True, False)
    assert model_mod.native_bf16("meta") is False


def test_bf16_dit_leaves_the_grm_in_fp32():
    rt = Runtime(precision="bf16-dit")
    with rt.autocast("grm"):
        assert not torch.is_autocast_enabled("cpu")
    with rt.autocast("dit"):
        assert torch.is_autocast_enabled("cpu")
    with Runtime(precision="bf16").autocast("grm"):
        assert torch.is_autocast_enabled("cpu")
    with Runtime(precision="fp32").autocast("dit"):
        assert not torch.is_autocast_enabled("cpu")
