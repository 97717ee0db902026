"""Global Restoration Module (paper Sec. 3.2, appendix A.1).

A GRM maps an LR image to a coarse HR latent y_HR and a confidence map C in [0, 1] at latent
resolution; C predicts how far y_HR is from the ground truth latent x_HR and is trained with

    L = |y_HR - x_HR|_1 + lambda * (C * |y_HR - x_HR|^2 - eta * log C)        (paper Eq. 6)

Two restoration backbones sit behind one interface, `grm(lr, codec) -> (y_hr, C)`:
  * `UNetGRM`, the paper's: a latent UNet (residual blocks, down/up convs, skips) with a
    norm-SiLU-conv head for y_HR and a conv-SiLU-conv-sigmoid head for C;
  * `RealESRGANGRM`: a frozen Real-ESRGAN network restores pixels (x4plus, or the compact
    SRVGGNet distilled from it, 1/30 of its cost), and a small confidence head on the coarse
    latent and the LR image predicts C (its L1 term is then a constant).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import GRMConfig


def confidence_loss(y_hr, x_hr, conf, lam: float = 0.3, eta: float = 0.2, eps: float = 1e-6):
    """Paper Eq. 6 on latents (B, C, H, W) and a confidence map (B, 1, H, W). The squared
    error is averaged over channels so C is one number per latent pixel; its optimum is
    C = min(1, eta / error)."""
    err = (y_hr - x_hr).pow(2).mean(1, keepdim=True)
    l1 = (y_hr - x_hr).abs().mean()
    return l1 + lam * (conf * err - eta * torch.log(conf.clamp_min(eps))).mean()


def confidence_input(y_hr: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
    """What the confidence head of `RealESRGANGRM` sees: the coarse latent and the LR image
    resized to latent resolution (where the LR was ambiguous, the GRM had to guess)."""
    lr_small = F.interpolate(lr, size=y_hr.shape[-2:], mode="bilinear", align_corners=False, antialias=True)
    return torch.cat([y_hr, lr_small * 2 - 1], 1)


class ConfidenceHead(nn.Module):
    """conv-SiLU-conv-sigmoid, as the paper's C branch, with dilated convs in between: how
    hard a region is depends on its surroundings (an edge, a texture), so the head sees
    15x15 latent pixels (60x60 image pixels) around each one."""

    def __init__(self, cin: int, hidden: int, init_bias: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(cin, hidden, 3, 1, 1), nn.SiLU(),
            nn.Conv2d(hidden, hidden, 3, 1, 2, dilation=2), nn.SiLU(),
            nn.Conv2d(hidden, hidden, 3, 1, 4, dilation=4), nn.SiLU(),
            nn.Conv2d(hidden, 1, 1))
        nn.init.constant_(self.net[-1].bias, init_bias)

    def forward(self, x):
        return torch.sigmoid(self.net(x))


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(8, cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.norm2 = nn.GroupNorm(min(8, cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class UNetGRM(nn.Module):
    """The paper's GRM: it works on the latent of the bicubic-upsampled LR image."""

    def __init__(self, latent_channels: int, cfg: GRMConfig):
        super().__init__()
        ch = list(cfg.unet_channels)
        self.scale = cfg.scale
        self.inp = nn.Conv2d(latent_channels, ch[0], 3, 1, 1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        c = ch[0]
        skips = []
        for i, co in enumerate(ch):
            blocks = nn.ModuleList()
            for _ in range(cfg.unet_blocks):
                blocks.append(ResBlock(c, co))
                c = co
            self.down.append(blocks)
            skips.append(c)
            if i < len(ch) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, 2, 1))
        self.mid = ResBlock(c, c)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, co in reversed(list(enumerate(ch))):
            blocks = nn.ModuleList()
            for j in range(cfg.unet_blocks):
                blocks.append(ResBlock(c + (skips[i] if j == 0 else 0), co))
                c = co
            self.up.append(blocks)
            if i > 0:
                self.upsample.append(nn.Conv2d(c, c, 3, 1, 1))
        self.y_head = nn.Sequential(nn.GroupNorm(min(8, c), c), nn.SiLU(), nn.Conv2d(c, latent_channels, 3, 1, 1))
        self.c_head = nn.Sequential(nn.Conv2d(c, cfg.conf_hidden, 3, 1, 1), nn.SiLU(),
                                    nn.Conv2d(cfg.conf_hidden, 1, 3, 1, 1))
        nn.init.zeros_(self.y_head[-1].weight)  # starts as the identity on the LR latent
        nn.init.zeros_(self.y_head[-1].bias)
        nn.init.constant_(self.c_head[-1].bias, cfg.conf_init_bias)
        self.levels = len(ch)

    # its GroupNorms see the whole input: a piece of a photo is not restored exactly as the
    # whole photo is (pieces.py); the shipped Real-ESRGAN GRM has no such reach
    conf_reach = 16

    def forward(self, lr: torch.Tensor, codec, origin: tuple[int, int] = (0, 0),
                on_tile=None) -> tuple[torch.Tensor, torch.Tensor]:
        up = F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False).clamp(0, 1)
        z = codec.encode(up)
        # pad to a multiple of 2^(levels-1) so that down/up sampling round-trips
        m = 2 ** (self.levels - 1)
        H, W = z.shape[-2:]
        ph, pw = (-H) % m, (-W) % m
        zp = F.pad(z, (0, pw, 0, ph), mode="replicate") if ph or pw else z
        h = self.inp(zp)
        skips = []
        for i, blocks in enumerate(self.down):
            for b in blocks:
                h = b(h)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        h = self.mid(h)
        for k, blocks in enumerate(self.up):
            h = torch.cat([h, skips[-1 - k]], 1)
            for b in blocks:
                h = b(h)
            if k < len(self.upsample):
                h = self.upsample[k](F.interpolate(h, scale_factor=2, mode="nearest"))
        y = zp + self.y_head(h)
        c = torch.sigmoid(self.c_head(h))
        if on_tile is not None:
            on_tile(1, 1)
        return y[..., :H, :W], c[..., :H, :W]


class RealESRGANGRM(nn.Module):
    """Real-ESRGAN restores pixels; the confidence head sees the coarse latent and the LR
    image resized to latent resolution. The backbone is frozen and runs tiled so that memory
    stays bounded on large photos. Tiles overlap by `tile_pad` LR pixels and are cropped, not
    blended; where the pad covers the network's receptive field the result equals an untiled
    run, otherwise seams differ slightly (Real-ESRGAN's own tiling has the same trade-off)."""

    def __init__(self, latent_channels: int, cfg: GRMConfig, backbone: nn.Module | None = None):
        super().__init__()
        from .realesrgan import load_backbone
        self.backbone = backbone if backbone is not None else load_backbone(cfg.backbone, cfg.weights, cfg.compact_convs)
        self.backbone.requires_grad_(False)
        self.scale = cfg.scale
        self.conf_head = ConfidenceHead(latent_channels + 3, cfg.conf_hidden, cfg.conf_init_bias)
        self.tile = 192

    tile_pad = 12   # LR px of input around each tile (pieces.py counts on it)

    def restore(self, lr: torch.Tensor, origin: tuple[int, int] = (0, 0), on_tile=None) -> torch.Tensor:
        """(B, 3, h, w) LR -> (B, 3, h*s, w*s). `origin`: where `lr` lies in its whole image (LR
        px). Tiles are aligned to the whole image's tile grid, not to `lr`'s corner, so a region
        of a photo cut out with a margin (a piece, patchscaler/pieces.py) is restored by the
        same tiles, on the same input, as the whole photo wherever the margin holds a tile and
        its pad: the same pixels. `on_tile(done, total)` after each tile (progress)."""
        B, _, H, W = lr.shape
        t, p, s = self.tile, self.tile_pad, self.scale
        oy, ox = origin
        ys = sorted({0, *range(t - oy % t, H, t)} - {H})
        xs = sorted({0, *range(t - ox % t, W, t)} - {W})
        if len(ys) == 1 and len(xs) == 1:
            out = self.backbone(lr).clamp(0, 1)
            if on_tile is not None:
                on_tile(1, 1)
            return out
        out = lr.new_zeros(B, 3, H * s, W * s)
        total, done = len(ys) * len(xs), 0
        for y0, y1 in zip(ys, ys[1:] + [H]):
            for x0, x1 in zip(xs, xs[1:] + [W]):
                ya, xa, yb, xb = max(y0 - p, 0), max(x0 - p, 0), min(y1 + p, H), min(x1 + p, W)
                o = self.backbone(lr[..., ya:yb, xa:xb])
                out[..., y0 * s:y1 * s, x0 * s:x1 * s] = o[..., (y0 - ya) * s:(y0 - ya + y1 - y0) * s,
                                                           (x0 - xa) * s:(x0 - xa + x1 - x0) * s]
                done += 1
                if on_tile is not None:
                    on_tile(done, total)
        return out.clamp(0, 1)

    # LR px around a pixel whose input the confidence head reads (its dilated convs: 1 + 2 + 4)
    conf_reach = 7

    def confidence(self, y_hr: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
        return self.conf_head(confidence_input(y_hr, lr))

    def forward(self, lr: torch.Tensor, codec, origin: tuple[int, int] = (0, 0),
                on_tile=None) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            y_hr = codec.encode(self.restore(lr, origin, on_tile))
        return y_hr, self.confidence(y_hr, lr)


def make_grm(latent_channels: int, cfg: GRMConfig) -> nn.Module:
    if cfg.backbone == "unet":
        return UNetGRM(latent_channels, cfg)
    if cfg.backbone in ("rrdb", "compact", "srvgg", "bicubic"):
        return RealESRGANGRM(latent_channels, cfg)
    raise ValueError(f"unknown GRM backbone {cfg.backbone!r}")
