"""Checkpoints and durable writes: safetensors without pickle, the config round trip, permissions, fsync, fp16 weights with uint8 RTM values."""

import pytest
import torch

from patchscaler.config import PatchScalerConfig, tiny_config

pytestmark = pytest.mark.fast


def test_checkpoint_round_trip_no_pickle(tmp_path, tiny_model):
    from patchscaler.checkpoint import checkpoint_info, load, save
    p = tmp_path / "m.safetensors"
    save(tiny_model, str(p), half=False)
    m2 = load(str(p))
    assert m2.cfg == tiny_model.cfg
    for (k, a), (_, b) in zip(tiny_model.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k
    assert torch.allclose(m2.rtm.keys, tiny_model.rtm.keys, atol=1e-6)
    assert checkpoint_info(str(p))["config"]["dit"]["hidden"] == 64
    raw = p.read_bytes()
    assert b"\x80\x04" not in raw[:64]  # plain safetensors header, no pickle
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(raw[:8] + b'{"__metadata__":{"format":"x"}}'.ljust(int.from_bytes(raw[:8], "little")) + raw[8 + int.from_bytes(raw[:8], "little"):])
    with pytest.raises(ValueError):
        load(str(bad))


def test_config_json_round_trip():
    cfg = tiny_config()
    assert PatchScalerConfig.from_json(cfg.to_json()) == cfg


def test_atomic_write_gives_normal_permissions(tmp_path):
    import os
    import stat
    from storage import write_uri
    from storage.durable import _UMASK
    write_uri(str(tmp_path / "a" / "out.png"), b"x")
    # the mode a plain open() would give (0644 under the usual umask), not mkstemp's 0600
    assert stat.S_IMODE(os.stat(tmp_path / "a" / "out.png").st_mode) == 0o666 & ~_UMASK != 0o600
    assert os.listdir(tmp_path / "a") == ["out.png"]


def test_checkpoints_and_training_state_are_written_durably(tmp_path, monkeypatch):
    """The one writer (storage/durable.py) fsyncs the temp file before the rename and the
    folder after it; checkpoints and training state use it as the pipeline's outputs do."""
    import os
    from storage import write_uri
    events, real_fsync, real_replace = [], os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", fd)), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", b)), real_replace(a, b))[1])
    write_uri(str(tmp_path / "ck.safetensors"), b"weights")
    kinds = [e[0] for e in events]
    assert kinds.index("fsync") < kinds.index("replace") < len(kinds) - 1 and kinds[-1] == "fsync"
    assert (tmp_path / "ck.safetensors").read_bytes() == b"weights"


def test_fp16_checkpoint_stores_rtm_values_as_uint8_and_recomputes_keys(tmp_path):
    from patchscaler import PatchScaler, tiny_config
    from patchscaler.checkpoint import load, save
    from patchscaler.rtm import RTM
    from safetensors.torch import load_file
    torch.manual_seed(0)
    m = PatchScaler(tiny_config()).eval()
    values = (torch.randint(0, 256, (12, m.cfg.latent_channels, 8, 8)).float() / 127.5 - 1).half()
    with torch.no_grad():
        m.rtm = RTM(m.texture(values.float()), values)
    save(m, str(tmp_path / "c.safetensors"), half=True)
    stored = load_file(str(tmp_path / "c.safetensors"))
    assert stored["rtm.values_u8"].dtype == torch.uint8 and "rtm.keys" not in stored
    m2 = load(str(tmp_path / "c.safetensors"))
    assert torch.equal(m2.rtm.values, values)  # lossless
    assert torch.allclose(m2.rtm.keys, m.rtm.keys, atol=5e-3)  # T in fp16 weights vs fp32


def test_a_compact_grm_travels_inside_its_checkpoint(tmp_path):
    """The distilled GRM's weights are the checkpoint's (x4plus's come from the ncnn files): saved
    in fp16, loaded back into an SRVGGNetCompact of the configured depth, the same network."""
    from patchscaler import PatchScaler
    from patchscaler.checkpoint import load, save
    torch.manual_seed(0)
    m = PatchScaler(tiny_config(grm={"backbone": "compact", "compact_convs": 4}))
    p = tmp_path / "c.safetensors"
    save(m, str(p))
    m2 = load(str(p))
    assert len(m2.grm.backbone.body) == 2 * 4 + 3
    for k, v in m.grm.backbone.state_dict().items():
        assert torch.equal(v.half().float(), m2.grm.backbone.state_dict()[k]), k
    with pytest.raises(ValueError, match="grm.backbone"):
        tiny_config(grm={"backbone": "esrgan"})


def test_shipped_models_are_named():
    from patchscaler.upscale import DEFAULT_CHECKPOINT, named_models, resolve_checkpoint
    assert "default" in named_models()
    assert resolve_checkpoint("default") == str(DEFAULT_CHECKPOINT)
    assert resolve_checkpoint("runs/x.safetensors") == "runs/x.safetensors"
    assert resolve_checkpoint(None) is None
    with pytest.raises(ValueError, match="no such shipped model"):
        resolve_checkpoint("nosuchmodel")


def test_a_variant_stores_only_what_differs_from_its_base(tmp_path, tiny_model):
    """A variant (another GRM's confidence head over the same Patch-DiT and RTM) holds only its own
    tensors and loads as the whole model: the base's tensors under its own config."""
    import copy

    from patchscaler.checkpoint import checkpoint_info, load, save
    from patchscaler.config import override
    base = tmp_path / "default.safetensors"
    save(tiny_model, str(base))
    variant = copy.deepcopy(tiny_model)
    variant.cfg = override(variant.cfg, pgs={"thresholds": (0.9, 0.1)}, version="v-variant")
    with torch.no_grad():
        for p in variant.grm.parameters():
            p.add_(0.5)
    save(variant, str(tmp_path / "other.safetensors"), base="default.safetensors")
    assert (tmp_path / "other.safetensors").stat().st_size < base.stat().st_size / 4
    m = load(str(tmp_path / "other.safetensors"))
    assert m.cfg.version == "v-variant" and m.cfg.pgs.thresholds == (0.9, 0.1)
    for k, v in variant.state_dict().items():
        assert torch.equal(v.half().float() if v.is_floating_point() else v,
                           m.state_dict()[k].float() if v.is_floating_point() else m.state_dict()[k]), k
    assert torch.equal(m.rtm.values, load(str(base)).rtm.values)
    assert checkpoint_info(str(tmp_path / "other.safetensors"))["rtm"] == checkpoint_info(str(base))["rtm"]
    with pytest.raises(ValueError, match="own folder"):
        save(variant, str(tmp_path / "x.safetensors"), base="sub/default.safetensors")
