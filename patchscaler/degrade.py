"""Real-ESRGAN's second-order degradation model (Wang et al. 2021), for synthesising LR
training images from HR photos: (blur -> random resize -> noise -> JPEG) twice, then the final
resize to HR/scale with a sinc filter and JPEG in random order. Seeded by a torch.Generator;
filtering runs on the input's device; JPEG goes through Pillow (real JPEG, on CPU).

Default probabilities and ranges are Real-ESRGAN's x4plus training options."""
from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


@dataclass
class DegradeConfig:
    scale: int = 4
    kernel_sizes: tuple[int, ...] = (7, 9, 11, 13, 15, 17, 19, 21)
    kernel_probs: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)  # iso, aniso, gen iso/aniso, plateau iso/aniso
    sinc_prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.2, 3.0)
    blur_sigma2: tuple[float, float] = (0.2, 1.5)
    betag: tuple[float, float] = (0.5, 4.0)
    betap: tuple[float, float] = (1.0, 2.0)
    second_blur_prob: float = 0.8
    resize_probs: tuple[float, float, float] = (0.2, 0.7, 0.1)  # up, down, keep
    resize_range: tuple[float, float] = (0.15, 1.5)
    resize_range2: tuple[float, float] = (0.3, 1.2)
    gaussian_noise_prob: float = 0.5
    noise_sigma: tuple[float, float] = (1.0, 30.0)
    noise_sigma2: tuple[float, float] = (1.0, 25.0)
    poisson_scale: tuple[float, float] = (0.05, 3.0)
    poisson_scale2: tuple[float, float] = (0.05, 2.5)
    gray_noise_prob: float = 0.4
    jpeg_range: tuple[int, int] = (30, 95)
    jpeg_range2: tuple[int, int] = (30, 95)
    final_sinc_prob: float = 0.8


def _u(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _choice(g: torch.Generator, probs) -> int:
    return int(torch.multinomial(torch.tensor(probs, dtype=torch.float64), 1, generator=g))


def _grid(k: int) -> tuple[torch.Tensor, torch.Tensor]:
    r = torch.arange(k, dtype=torch.float64) - (k - 1) / 2
    return torch.meshgrid(r, r, indexing="ij")


def anisotropic_kernel(k: int, sx: float, sy: float, theta: float, beta: float = 2.0,
                       plateau: bool = False) -> torch.Tensor:
    """Generalised Gaussian (beta = 2: Gaussian) or plateau kernel, rotated by theta, sum 1."""
    yy, xx = _grid(k)
    c, s = math.cos(theta), math.sin(theta)
    u, v = c * xx + s * yy, -s * xx + c * yy
    d = (u / sx) ** 2 + (v / sy) ** 2   # squared Mahalanobis distance
    w = 1 / (1 + d ** (beta / 2)) if plateau else torch.exp(-0.5 * d ** (beta / 2))
    return (w / w.sum()).float()


def sinc_kernel(k: int, omega_c: float) -> torch.Tensor:
    """Circular low-pass (2-D sinc, jinc-shaped) kernel with cutoff omega_c in (0, pi], sum 1."""
    yy, xx = _grid(k)
    r = torch.sqrt(xx ** 2 + yy ** 2)
    x = omega_c * r
    j1 = torch.special.bessel_j1(x)
    w = torch.where(r == 0, torch.full_like(r, omega_c ** 2 / (4 * math.pi)), omega_c * j1 / (2 * math.pi * r.clamp_min(1e-12)))
    return (w / w.sum()).float()


def random_kernel(g: torch.Generator, cfg: DegradeConfig, second: bool = False) -> torch.Tensor:
    k = cfg.kernel_sizes[int(torch.randint(len(cfg.kernel_sizes), (), generator=g))]
    if float(torch.rand((), generator=g)) < cfg.sinc_prob:
        omega = _u(g, math.pi / 3, math.pi) if k < 13 else _u(g, math.pi / 5, math.pi)
        return sinc_kernel(k, omega)
    lo, hi = cfg.blur_sigma2 if second else cfg.blur_sigma
    kind = _choice(g, cfg.kernel_probs)
    sx = _u(g, lo, hi)
    iso = kind in (0, 2, 4)
    sy = sx if iso else _u(g, lo, hi)
    theta = 0.0 if iso else _u(g, -math.pi, math.pi)
    if kind in (0, 1):
        return anisotropic_kernel(k, sx, sy, theta)
    if kind in (2, 3):
        return anisotropic_kernel(k, sx, sy, theta, beta=_u(g, *cfg.betag))
    return anisotropic_kernel(k, sx, sy, theta, beta=_u(g, *cfg.betap), plateau=True)


def filter2d(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    k = kernel.to(x.device, x.dtype)
    p = k.shape[-1] // 2
    C = x.shape[1]
    xp = F.pad(x, (p, p, p, p), mode="reflect" if min(x.shape[-2:]) > p else "replicate")
    return F.conv2d(xp, k.expand(C, 1, *k.shape), groups=C)


def add_noise(x: torch.Tensor, g: torch.Generator, cfg: DegradeConfig, second: bool) -> torch.Tensor:
    gray = float(torch.rand((), generator=g)) < cfg.gray_noise_prob
    shape = (x.shape[0], 1, *x.shape[2:]) if gray else x.shape
    if float(torch.rand((), generator=g)) < cfg.gaussian_noise_prob:
        sigma = _u(g, *(cfg.noise_sigma2 if second else cfg.noise_sigma)) / 255
        n = torch.randn(shape, generator=g).to(x.device) * sigma
    else:
        scale = _u(g, *(cfg.poisson_scale2 if second else cfg.poisson_scale))
        src = x.mean(1, keepdim=True) if gray else x
        q = (src.clamp(0, 1) * 255).round().cpu()
        n = (torch.poisson(q, generator=g) - q).to(x.device) / 255 * scale
    return x + n.expand_as(x)


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    out = []
    for img in x.clamp(0, 1):
        arr = (img.permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "JPEG", quality=int(quality))
        dec = np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32) / 255
        out.append(torch.from_numpy(dec).permute(2, 0, 1))
    return torch.stack(out).to(x.device)


def _random_resize(x: torch.Tensor, g: torch.Generator, cfg: DegradeConfig, second: bool,
                   base: tuple[int, int]) -> torch.Tensor:
    """Resize to base * s, s drawn up / down / keep; Real-ESRGAN's first resize is relative to
    the HR size, the second to the final LR size."""
    kind = _choice(g, cfg.resize_probs)
    lo, hi = cfg.resize_range2 if second else cfg.resize_range
    s = _u(g, 1, hi) if kind == 0 else (_u(g, lo, 1) if kind == 1 else 1.0)
    mode = ("area", "bilinear", "bicubic")[int(torch.randint(3, (), generator=g))]
    size = (max(1, int(base[0] * s)), max(1, int(base[1] * s)))
    return F.interpolate(x, size=size, mode=mode, **({} if mode == "area" else {"align_corners": False}))


@torch.no_grad()
def degrade(hr: torch.Tensor, g: torch.Generator, cfg: DegradeConfig | None = None) -> torch.Tensor:
    """HR (B, 3, H, W) in [0, 1] -> LR (B, 3, H/scale, W/scale) in [0, 1], 8-bit quantised."""
    cfg = cfg or DegradeConfig()
    H, W = hr.shape[-2:]
    out_size = (H // cfg.scale, W // cfg.scale)
    x = filter2d(hr, random_kernel(g, cfg))
    x = _random_resize(x, g, cfg, second=False, base=(H, W))
    x = add_noise(x, g, cfg, second=False)
    x = jpeg(x, int(torch.randint(cfg.jpeg_range[0], cfg.jpeg_range[1] + 1, (), generator=g)))
    if float(torch.rand((), generator=g)) < cfg.second_blur_prob:
        x = filter2d(x, random_kernel(g, cfg, second=True))
    x = _random_resize(x, g, cfg, second=True, base=out_size)
    x = add_noise(x, g, cfg, second=True)
    mode = ("area", "bilinear", "bicubic")[int(torch.randint(3, (), generator=g))]
    sinc = sinc_kernel(int(torch.randint(3, 11, (), generator=g)) * 2 + 1, _u(g, math.pi / 3, math.pi)) \
        if float(torch.rand((), generator=g)) < cfg.final_sinc_prob else None
    q = int(torch.randint(cfg.jpeg_range2[0], cfg.jpeg_range2[1] + 1, (), generator=g))

    def resize_sinc(y):
        y = F.interpolate(y, size=out_size, mode=mode, **({} if mode == "area" else {"align_corners": False}))
        return filter2d(y, sinc) if sinc is not None else y

    if float(torch.rand((), generator=g)) < 0.5:
        x = jpeg(resize_sinc(x), q)
    else:
        x = resize_sinc(jpeg(x, q))
    return (x.clamp(0, 1) * 255).round() / 255


@torch.no_grad()
def classical_degrade(hr: torch.Tensor, g: torch.Generator, scale: int = 4) -> torch.Tensor:
    """The classical family, the one the evaluation holds beside the training family: isotropic
    Gaussian blur (sigma uniform in [0.8, 3.0]), bicubic downscale by `scale` (antialiased, as
    MATLAB's imresize), JPEG (quality uniform in [50, 95]). (1, 3, H, W) -> (1, 3, H/s, W/s)."""
    sigma = 0.8 + 2.2 * float(torch.rand((), generator=g))
    quality = int(round(50 + 45 * float(torch.rand((), generator=g))))
    k = 2 * math.ceil(3 * sigma) + 1
    r = torch.arange(k, dtype=torch.float32) - k // 2
    w = torch.exp(-0.5 * (r / sigma) ** 2)
    w = w / w.sum()
    x = F.pad(hr.float(), (k // 2,) * 4, mode="reflect")
    x = F.conv2d(x, w.view(1, 1, 1, k).expand(3, 1, 1, k), groups=3)
    x = F.conv2d(x, w.view(1, 1, k, 1).expand(3, 1, k, 1), groups=3)
    x = F.interpolate(x, scale_factor=1 / scale, mode="bicubic", antialias=True, align_corners=False)
    arr = (x[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    dec = np.array(Image.open(buf).convert("RGB"))
    return torch.from_numpy(dec).permute(2, 0, 1)[None].float() / 255
