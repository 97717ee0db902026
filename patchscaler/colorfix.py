"""Wavelet colour fix (StableSR, used by the paper in Sec. 4.3.2): keep the high frequencies
of the super-resolved image and take the low frequencies from the upsampled LR input, so
colours and brightness follow the input. Works for any channel count.

Clipped highlights and shadows are left alone: where the output or the upsampled input sits
at 0 or 1 the two low bands disagree for a reason the fix cannot see (a clipped lamp is a
sharp plateau in the output but a soft hill in the bicubic LR), and swapping them spreads
the highlight into its surroundings by tens of pixels. The fix is faded out within
`clip_radius` pixels of any clipped pixel (a smooth ramp), so there the output keeps its own
low band."""
from __future__ import annotations

import torch
import torch.nn.functional as F

_KERNEL = torch.tensor([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=torch.float32) / 16
CLIP_LOW, CLIP_HIGH = 0.5 / 255, 254.5 / 255   # what rounds to 0 or 255 in 8 bits


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


def clip_weight(*images: torch.Tensor, radius: int) -> torch.Tensor:
    """(B, 1, H, W) weight in [0, 1]: 0 on and near pixels clipped (0 or 1 in any channel)
    in any of `images`, rising smoothly to 1 beyond `radius` pixels from them."""
    x = images[0]
    clipped = torch.zeros_like(x[:, :1])
    for im in images:
        c = ((im <= CLIP_LOW) | (im >= CLIP_HIGH)).any(1, keepdim=True)
        clipped = torch.maximum(clipped, c.to(x.dtype))
    if radius <= 0 or not bool(clipped.any()):
        return 1 - clipped
    # 0 within radius / 2, a smooth ramp (0.5 at 3/4) up to 1 at `radius`
    grow, ramp = max(3 * radius // 4, 1), max(radius // 4, 1)
    near = F.max_pool2d(clipped, 2 * grow + 1, 1, grow)
    d, reach = 1, 0
    while reach + d <= ramp:
        near = _blur(near, d)
        reach, d = reach + d, d * 2
    return ((1 - near) * (1 - clipped)).clamp(0, 1)


def wavelet_color_fix(content: torch.Tensor, style: torch.Tensor, levels: int = 5,
                      clip_radius: int = 0) -> torch.Tensor:
    """content, style: (B, C, H, W) of the same size in [0, 1]; returns content's detail on
    style's colour, except within `clip_radius` px of clipped pixels (0: everywhere)."""
    content, style = content.float(), style.float()
    _, c_low = wavelet_decompose(content, levels)
    _, s_low = wavelet_decompose(style, levels)
    if clip_radius <= 0:
        return content + (s_low - c_low)
    return content + clip_weight(content, style, radius=clip_radius) * (s_low - c_low)
