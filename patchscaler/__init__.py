"""PatchScaler (ICCV 2025): patch-adaptive diffusion super-resolution, in plain PyTorch.

    from patchscaler import upscale
    hr = upscale("photo.jpg", seed=0)          # PIL image, x4

This package never imports Ray; the distributed pipeline lives in `pipeline/` and `actors/`."""
from .config import PatchScalerConfig, tiny_config
from .model import PatchScaler, Runtime
from .upscale import load_default, upscale

__version__ = "0.4.0"
__all__ = ["PatchScaler", "PatchScalerConfig", "Runtime", "load_default", "tiny_config", "upscale"]
