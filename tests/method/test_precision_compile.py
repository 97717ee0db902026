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


def test_compiled_patch_dit_gives_the_same_pixels_through_the_cli(checkpoint, tmp_path):
    """`--compile` / `--compile-backend NAME` reach the Runtime; the Patch-DiT is traced by
    torch.compile (dynamic shapes: the batches and the 49-token second grid vary) and samples
    what the plain module does. The "eager" backend runs the traced graph without inductor's
    code generation (minutes here), so the trace itself is what this checks, end to end."""
    import numpy as np
    from PIL import Image

    from jobs.cli import build_parser, main
    from patchscaler import PatchScaler, tiny_config
    a = build_parser("upscale").parse_args(["upscale", "in", "out", "--compile"])
    assert a.compile == "inductor"
    assert build_parser("upscale").parse_args(["upscale", "in", "out"]).compile == ""
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i, size in enumerate([(40, 28), (24, 24)]):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(src / f"{i}.png")
    from torch._dynamo.utils import counters
    common = ["--engine", "local", "--checkpoint", checkpoint, "--precision", "fp32"]
    torch._dynamo.reset()
    counters.clear()
    assert main(["upscale", str(src), str(tmp_path / "plain"), *common]) == 0
    assert counters["stats"]["unique_graphs"] == 0          # nothing compiled without the option
    assert main(["upscale", str(src), str(tmp_path / "compiled"), *common, "--compile-backend", "eager"]) == 0
    assert counters["stats"]["unique_graphs"] > 0           # the option reached the sampler
    for i in range(2):
        plain = np.asarray(Image.open(tmp_path / "plain" / f"{i}.png"))
        assert np.array_equal(plain, np.asarray(Image.open(tmp_path / "compiled" / f"{i}.png")))
    # the compiled callable lives outside the module tree: same state_dict, same version
    m = PatchScaler(tiny_config())
    keys = set(m.state_dict())
    m.configure(Runtime(precision="fp32", compile="eager"))
    assert m.dit_call is not m.dit and set(m.state_dict()) == keys
    assert m.configure(Runtime(precision="fp32")).dit_call is m.dit
