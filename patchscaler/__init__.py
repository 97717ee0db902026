"""PatchScaler (ICCV 2025): patch-adaptive diffusion super-resolution, in plain PyTorch.

    from patchscaler import upscale
    hr = upscale("photo.jpg", seed=0)          # PIL image, x4

This package never imports Ray; the distributed pipeline lives in `pipeline/` and `actors/`."""
import os

# Idle OpenMP threads sleep instead of spinning, unless the user chose otherwise: what
# actors.runtime.passive_openmp does (it says why) for every entry point of this repository,
# done here again for a program that uses the library alone, which this package cannot reach
# through that helper (it imports nothing above it). libgomp reads it when torch loads, so it
# only takes effect when patchscaler is imported before torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .config import PatchScalerConfig, tiny_config
from .model import PatchScaler, Runtime
from .upscale import load_default, upscale


def _version() -> str:
    """The package's version, from its installed metadata; from pyproject.toml beside the
    package when it runs from a source tree that was never installed."""
    from importlib import metadata
    try:
        return metadata.version("patchscaler")
    except metadata.PackageNotFoundError:
        import re
        here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pyproject.toml")
        try:
            with open(here, encoding="utf-8") as f:
                found = re.search(r'^version\s*=\s*"([^"]+)"', f.read(), re.MULTILINE)
        except OSError:
            found = None
        return found.group(1) if found else "unknown"


__version__ = _version()
__all__ = ["PatchScaler", "PatchScalerConfig", "Runtime", "load_default", "tiny_config", "upscale"]
