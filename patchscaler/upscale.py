"""The in-process upscaler: one image in, one image out, deterministic by seed. It is the
oracle the distributed pipeline is tested against, so both call the same three stage
functions below with the same batching:

    coarse = grm_stage(model, prepared)                              # GRM actors
    for group, idx in group_batches(model, coarse.groups):           # one Patch-DiT call each
        refined[idx] = refine_stage(model, coarse.patches[idx], idx, group, seed)   # DiT pools
    image = stitch_stage(model, coarse, refined, prepared)                          # stitchers

(the pipeline's row is one image carrying all its patches; each pool runs its groups' batches)
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from . import imageio, pgs
from .model import PatchScaler, Runtime, patch_noise

DEFAULT_CHECKPOINT = Path(__file__).parent / "weights" / "default.safetensors"
SAMPLES = Path(__file__).parent / "samples"


@dataclass
class Coarse:
    """What the GRM stage hands on for one image."""
    grid: pgs.PatchGrid
    patches: torch.Tensor      # (N, C, V, V) coarse patches y0
    qmap: torch.Tensor         # (N,)
    groups: torch.Tensor       # (N,)
    seconds: float = 0.0


@dataclass
class Result:
    image: Image.Image
    group_counts: list[int]
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    qmap: torch.Tensor | None = None
    groups: torch.Tensor | None = None
    grid: pgs.PatchGrid | None = None


def grm_stage(model: PatchScaler, prep: imageio.Prepared) -> Coarse:
    t = time.perf_counter()
    latent, conf = model.restore(prep.rgb)
    grid, patches, q, groups = model.plan(latent, conf)
    return Coarse(grid, patches, q, groups, time.perf_counter() - t)


def group_batches(model: PatchScaler, groups: torch.Tensor) -> list[tuple[int, list[int]]]:
    """(group, patch indices) for each Patch-DiT call, groups in order, batches of at most
    runtime.max_batch patches."""
    out = []
    for g in range(model.cfg.pgs.num_groups):
        idx = torch.nonzero(groups == g).flatten().tolist()
        out += [(g, b) for b in pgs.batches(idx, model.runtime.max_batch)]
    return out


def refine_stage(model: PatchScaler, y0: torch.Tensor, indices: list[int], group: int, seed: int) -> torch.Tensor:
    noise = patch_noise(seed, indices, tuple(y0.shape[1:]))
    return model.refine(y0, group, noise)


def stitch_stage(model: PatchScaler, coarse: Coarse, refined: torch.Tensor,
                 prep: imageio.Prepared, stats: dict | None = None) -> Image.Image:
    """Fuse the refined patches with the GRM's (coarse) ones and the LR into the output image."""
    hr = model.finish(coarse.patches, refined, coarse.grid, prep.rgb, stats)
    alpha = None
    if prep.alpha is not None:  # alpha is upscaled on its own, never diffused
        alpha = torch.nn.functional.interpolate(prep.alpha, size=hr.shape[-2:], mode="bicubic",
                                                align_corners=False).clamp(0, 1)
    return imageio.to_pil(hr, alpha, prep.mode)


def upscale_prepared(model: PatchScaler, prep: imageio.Prepared, seed: int = 0) -> Result:
    coarse = grm_stage(model, prep)
    t = time.perf_counter()
    refined = coarse.patches.clone()
    for group, idx in group_batches(model, coarse.groups):
        refined[idx] = refine_stage(model, coarse.patches[idx], idx, group, seed)
    t_dit = time.perf_counter() - t
    t = time.perf_counter()
    image = stitch_stage(model, coarse, refined, prep)
    counts = torch.bincount(coarse.groups, minlength=model.cfg.pgs.num_groups).tolist()
    return Result(image, counts, {"grm": coarse.seconds, "dit": t_dit, "stitch": time.perf_counter() - t},
                  list(prep.notes), coarse.qmap, coarse.groups, coarse.grid)


def upscale(image: Image.Image | bytes | str | os.PathLike, model: PatchScaler | None = None,
            seed: int = 0) -> Image.Image:
    """Upscale one image (a PIL image, encoded bytes or a path). Same seed, same pixels."""
    model = model if model is not None else load_default()
    if isinstance(image, (str, os.PathLike)):
        image = Path(image).read_bytes()
    if isinstance(image, Image.Image):
        import io
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        image = buf.getvalue()
    return upscale_prepared(model, imageio.decode(image), seed).image


_DEFAULT: dict = {}


def load_default(runtime: Runtime | None = None, checkpoint: str | None = None) -> PatchScaler:
    """The shipped checkpoint if present; else an untrained model (the Patch-DiT's zero-
    initialised output layer makes it return the GRM's result) with an RTM built from the
    bundled sample photos. Cached per process."""
    key = (checkpoint, None if runtime is None else tuple(vars(runtime).items()))
    if key not in _DEFAULT:
        _DEFAULT[key] = build_default(checkpoint).configure(runtime or Runtime())
    return _DEFAULT[key]


def build_default(checkpoint: str | None = None) -> PatchScaler:
    """A fresh model from `checkpoint`, $PATCHSCALER_CHECKPOINT, the shipped checkpoint, or
    else the untrained default, in that order."""
    from .checkpoint import load
    path = checkpoint or os.environ.get("PATCHSCALER_CHECKPOINT") or (
        str(DEFAULT_CHECKPOINT) if DEFAULT_CHECKPOINT.exists() else None)
    return load(path) if path else untrained_model()


def untrained_model(cfg=None, seed: int = 0) -> PatchScaler:
    from .config import PatchScalerConfig
    from .rtm_build import rtm_from_images
    torch.manual_seed(seed)
    cfg = cfg or PatchScalerConfig()
    model = PatchScaler(cfg)
    images = sorted(SAMPLES.glob("*.jpg")) if SAMPLES.is_dir() else []
    if images:
        model.rtm = rtm_from_images(model, [p.read_bytes() for p in images], crops_per_image=32,
                                    size=128, seed=seed)
    return model.eval()
