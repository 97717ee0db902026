"""Latent codecs. Images are float tensors in [0, 1], shape (B, 3, H, W).

The default codec is pixel-unshuffle: lossless, free and needs no weights; a latent pixel is an
f x f block of RGB pixels mapped to [-1, 1]. The SD-VAE adapter is the paper's codec (the
frozen encoder E of Stable Diffusion), an optional extra for users who have its weights."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import CodecConfig


class PixelUnshuffleCodec(nn.Module):
    def __init__(self, factor: int = 4):
        super().__init__()
        self.factor = factor
        self.channels = 3 * factor * factor

    def encode(self, img: torch.Tensor) -> torch.Tensor:
        return F.pixel_unshuffle(img * 2 - 1, self.factor)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return (F.pixel_shuffle(z, self.factor) + 1) / 2


class SDVAECodec(nn.Module):
    """diffusers AutoencoderKL behind the same interface. Weights come from a local folder
    (or an fsspec URI copied to a local cache); nothing is downloaded from a hub."""

    def __init__(self, vae: nn.Module, scaling_factor: float = 0.18215):
        super().__init__()
        self.vae = vae
        self.scaling_factor = scaling_factor
        self.factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.channels = vae.config.latent_channels

    @classmethod
    def from_path(cls, path: str, scaling_factor: float = 0.18215) -> "SDVAECodec":
        try:
            from diffusers import AutoencoderKL
        except ImportError as e:  # optional extra
            raise ImportError("the SD-VAE codec needs `pip install patchscaler[vae]`") from e
        local = _local_copy(path)
        vae = AutoencoderKL.from_pretrained(local, local_files_only=True)
        return cls(vae.eval(), scaling_factor)

    def encode(self, img: torch.Tensor) -> torch.Tensor:
        # the posterior mean, not a sample: encoding must be deterministic
        return self.vae.encode(img * 2 - 1).latent_dist.mode() * self.scaling_factor

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return ((self.vae.decode(z / self.scaling_factor).sample + 1) / 2).clamp(0, 1)


def _local_copy(uri: str) -> str:
    import os
    if "://" not in uri or uri.startswith("file://"):
        return uri.removeprefix("file://")
    import hashlib
    import tempfile

    import fsspec
    dst = os.path.join(tempfile.gettempdir(), "patchscaler-vae-" + hashlib.sha1(uri.encode()).hexdigest()[:12])
    if not os.path.isdir(dst):
        fs, root = fsspec.core.url_to_fs(uri)
        fs.get(root, dst, recursive=True)
    return dst


def make_codec(cfg: CodecConfig) -> nn.Module:
    if cfg.kind == "pixel_unshuffle":
        return PixelUnshuffleCodec(cfg.factor)
    if cfg.kind == "sd_vae":
        return SDVAECodec.from_path(cfg.vae_path, cfg.scaling_factor)
    raise ValueError(f"unknown codec {cfg.kind!r}")
