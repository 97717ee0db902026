"""The in-process upscaler: one image in, one image out, deterministic by seed. It is the
oracle the distributed pipeline is tested against: both take a photo through the same plan
(photo.py: piece by piece, each through flow.py's GRM, refine pool by pool, finish)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from . import imageio, photo, pieces
from .flow import Coarse, InFlight  # noqa: F401 (re-exported)
from .model import PatchScaler, Runtime

WEIGHTS = Path(__file__).parent / "weights"
DEFAULT_CHECKPOINT = WEIGHTS / "default.safetensors"


def named_models() -> list[str]:
    """The models shipped with the package, by name (`--checkpoint NAME`)."""
    return sorted(p.stem for p in WEIGHTS.glob("*.safetensors"))


def resolve_checkpoint(checkpoint: str | None) -> str | None:
    """A shipped model's name ("default", "x4plus", ...) -> its file; a path or URI as given."""
    if checkpoint and "/" not in checkpoint and "." not in checkpoint:
        path = WEIGHTS / f"{checkpoint}.safetensors"
        if not path.exists():
            raise ValueError(f"--checkpoint {checkpoint}: no such shipped model (shipped: {', '.join(named_models())}); "
                             "give a path or URI for another checkpoint")
        return str(path)
    return checkpoint
SAMPLES = Path(__file__).parent / "samples"


@dataclass
class Result:
    image: Image.Image
    group_counts: list[int]
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    pieces: int = 1


def upscale_prepared(model: PatchScaler, prep: imageio.Prepared, seed: int = 0, outscale: float | None = None,
                     piece_size: int = pieces.DEFAULT_PIECE) -> Result:
    done = photo.run_image(model, prep, seed, piece_size, outscale)
    return Result(done.image, done.group_counts, done.seconds, list(prep.notes), done.pieces)


def upscale(image: Image.Image | bytes | str | os.PathLike, model: PatchScaler | None = None,
            seed: int = 0, outscale: float | None = None) -> Image.Image:
    """Upscale one image (a PIL image, encoded bytes or a path) x4, or by `outscale` (1-4: the
    x4 result resized, Lanczos). Same seed, same pixels; any size up to imageio's pixel limit
    in bounded memory (pieces.py)."""
    model = model if model is not None else load_default()
    if isinstance(image, (str, os.PathLike)):
        image = Path(image).read_bytes()
    if isinstance(image, Image.Image):
        import io
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        image = buf.getvalue()
    return upscale_prepared(model, imageio.decode(image), seed, outscale).image


_DEFAULT: dict = {}


def load_default(runtime: Runtime | None = None, checkpoint: str | None = None) -> PatchScaler:
    """The shipped checkpoint if present; else an untrained model (the Patch-DiT's zero-
    initialised output layer makes it return the GRM's result) with an RTM built from the
    bundled sample photos. Cached per process."""
    key = (checkpoint, None if runtime is None else tuple(vars(runtime).items()))
    if key not in _DEFAULT:
        _DEFAULT[key] = build_default(checkpoint).configure(runtime or Runtime())
    return _DEFAULT[key]


def build_default(checkpoint: str | None = None, components=None, storage_options: dict | None = None) -> PatchScaler:
    """A fresh model from `checkpoint`, $PATCHSCALER_CHECKPOINT, the shipped checkpoint, or
    else the untrained default, in that order; `components`: only these (checkpoint.COMPONENTS);
    `storage_options`: fsspec options for a checkpoint's URI (an S3 endpoint, a profile)."""
    from .checkpoint import keep_components, load
    path = resolve_checkpoint(checkpoint or os.environ.get("PATCHSCALER_CHECKPOINT")) or (
        str(DEFAULT_CHECKPOINT) if DEFAULT_CHECKPOINT.exists() else None)
    return load(path, components=components, storage_options=storage_options) if path else keep_components(untrained_model(), components)


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
