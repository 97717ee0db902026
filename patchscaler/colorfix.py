"""Wavelet colour fix (StableSR, used by the paper in Sec. 4.3.2): keep the high frequencies
of the super-resolved image and take the low frequencies from the upsampled LR input, so
colours and brightness follow the input. Works for any channel count."""
from __future__ import annotations

import torch
import torch.nn.functional as F

_KERNEL = torch.tensor([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=torch.float32) / 16


def _blur(x: torch.Tensor, dilation: int) -> torch.Tensor:
    C = x.shape[1]
    k = _KERNEL.to(x.dtype).to(x.device).expand(C, 1, 3, 3)
    pad = dilation
    # replicate padding needs the pad to be smaller than the size; fall back for tiny images
    mode = "replicate" if min(x.shape[-2:]) > 1 else "constant"
    xp = F.pad(x, (pad, pad, pad, pad), mode=mode)
    return F.conv2d(xp, k, groups=C, dilation=dilation)


def wavelet_decompose(x: torch.Tensor, levels: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """x -> (high frequencies, low frequencies), high + low == x."""
    high = torch.zeros_like(x)
    low = x
    for i in range(levels):
        blurred = _blur(low, 2 ** i)
        high = high + (low - blurred)
        low = blurred
    return high, low


def wavelet_color_fix(content: torch.Tensor, style: torch.Tensor, levels: int = 5) -> torch.Tensor:
    """content, style: (B, C, H, W) of the same size; returns content's detail on style's colour."""
    c_high, _ = wavelet_decompose(content.float(), levels)
    _, s_low = wavelet_decompose(style.float(), levels)
    return c_high + s_low
