"""One source for the config: the defaults are the shipped model, one tiny config serves tests
and the tiny training, changes go through `override` (new, validated configs), and a config
with keys this version does not know is refused, by name."""
import json
from pathlib import Path

import pytest

from patchscaler.config import FusionConfig, PatchScalerConfig, override, tiny_config

pytestmark = pytest.mark.fast

SHIPPED = Path(__file__).resolve().parents[2] / "patchscaler" / "weights" / "default.safetensors"


def _shipped_dict() -> dict:
    from patchscaler.checkpoint import checkpoint_info
    return checkpoint_info(str(SHIPPED))["config"]


def test_defaults_are_the_shipped_architecture():
    """The shipped checkpoint differs from the defaults only in what training calibrates and
    in the versions."""
    shipped = PatchScalerConfig.from_dict(_shipped_dict())
    trained = override(PatchScalerConfig(), grm={"loss_eta": shipped.grm.loss_eta},
                       pgs={"thresholds": shipped.pgs.thresholds},
                       texture={"version": shipped.texture.version}, version=shipped.version)
    assert shipped == trained


def test_shipped_checkpoint_config_reads_back_exactly():
    """What checkpoint.load builds from the stored JSON: nothing dropped (but legacy keys),
    nothing defaulted."""
    from patchscaler.config import LEGACY_KEYS
    stored = _shipped_dict()
    current = {k: ({kk: vv for kk, vv in v.items() if f"{k}.{kk}" not in LEGACY_KEYS} if isinstance(v, dict) else v)
               for k, v in stored.items() if k not in LEGACY_KEYS}
    assert json.loads(PatchScalerConfig.from_dict(stored).to_json()) == current


def test_training_builds_the_default_or_the_one_tiny_config(tmp_path):
    from jobs.train import TrainOptions
    from jobs.train.work import model_config
    assert model_config(TrainOptions(work=str(tmp_path))) == PatchScalerConfig()
    a = TrainOptions(work=str(tmp_path), tiny=True, grm="compact")
    assert model_config(a) == tiny_config(grm={"backbone": "compact"})
    (tmp_path / "calibration.json").write_text(json.dumps({"eta": 0.01, "thresholds": [0.6, 0.3]}))
    cfg = model_config(a)
    assert cfg.pgs.thresholds == (0.6, 0.3) and cfg.grm.loss_eta == 0.01


def test_override_builds_a_new_validated_config():
    cfg = tiny_config()
    new = override(cfg, pgs={"thresholds": (0.9, 0.4)}, version="v")
    assert new.pgs.thresholds == (0.9, 0.4) and new.version == "v"
    assert cfg == tiny_config() and new.dit is not cfg.dit  # the original is untouched, nothing shared
    with pytest.raises(ValueError, match="descending"):
        override(cfg, pgs={"thresholds": (0.4, 0.9)})
    with pytest.raises(ValueError, match="overlap"):
        tiny_config(pgs={"overlap": 8})
    with pytest.raises(ValueError, match="heads"):
        override(cfg, dit={"heads": 3})
    with pytest.raises(ValueError, match="num_timesteps"):
        override(cfg, diffusion={"num_timesteps": 250})   # below the hard group's tau (300)
    with pytest.raises(ValueError, match="prediction"):
        override(cfg, diffusion={"prediction": "epsilon"})
    with pytest.raises(ValueError, match="colour"):
        override(cfg, colour={})
    with pytest.raises(TypeError):
        override(cfg, pgs={"tresholds": (0.9, 0.4)})


def test_from_dict_names_unknown_keys_and_tolerates_only_legacy_ones(monkeypatch):
    from patchscaler import config
    d = PatchScalerConfig().to_dict()
    d["pgs"]["group_limit"] = 3
    d["sampler"] = "ddpm"
    with pytest.raises(ValueError, match=r"unknown config keys: sampler, pgs\.group_limit"):
        PatchScalerConfig.from_dict(d)
    monkeypatch.setattr(config, "LEGACY_KEYS", frozenset({"pgs.group_limit", "sampler"}))
    assert PatchScalerConfig.from_dict(d) == PatchScalerConfig()
    d["pgs"]["another"] = 1
    with pytest.raises(ValueError, match=r"pgs\.another") as e:
        PatchScalerConfig.from_dict(d)
    assert "group_limit" not in str(e.value)


def test_a_checkpoint_written_before_a_guard_existed_keeps_its_pixels():
    """v0.6.0's stored fusion section has no `headroom` (v0.4.0's no `flat_radius` either):
    loaded today it gets the guard off, as it ran then, not today's default; a section a
    checkpoint lacks entirely still takes the defaults, and stored values win."""
    d = PatchScalerConfig().to_dict()
    del d["fusion"]["headroom"]
    assert PatchScalerConfig.from_dict(d).fusion.headroom == 0.0
    del d["fusion"]["flat_radius"]
    f = PatchScalerConfig.from_dict(d).fusion
    assert f.flat_radius == 0.0 and f.detail_sigma == FusionConfig().detail_sigma
    d["fusion"]["headroom"] = 0.5
    assert PatchScalerConfig.from_dict(d).fusion.headroom == 0.5
    del d["fusion"]
    assert PatchScalerConfig.from_dict(d).fusion == FusionConfig()
