"""Pieces: how a photo of any size is upscaled in bounded memory, and spread over many workers.

A photo larger than `piece` LR pixels on a side is split into pieces: rectangles of the LR
image (the *core*, which each piece writes) on the whole image's patch grid, each read with a
*halo* around it. A piece runs the whole method on its crop (core + halo) by itself: the GRM,
the Qmap groups of the patches it needs, the Patch-DiT, the stitch and the fusion; it writes
only its core. Cores tile the output exactly, so the pieces' cores put side by side are the
output.

The halo is what makes a piece's core the same pixels as the whole photo's, from the inside out
(latent pixels; the default codec has one latent pixel per LR pixel):

  fusion_reach   the output pixel reads the GRM's and the Patch-DiT's images and the LR this far
                 (fusion.py: blur, band and wavelet colour fix, 67 HR px = 17 latent px), plus
                 the resampling filter's support when --outscale resizes (4 more)
  patch - 1      a patch the fusion reads may reach this much further
  conf_reach     the confidence head (Qmap) reads the GRM's output this far around a patch
  grm_pad        the GRM's own tile pad: its output this far from the crop's edge is computed
                 as in the whole photo (the GRM's tiles follow the whole image's tile grid)

Every patch of the whole image's grid that reaches the core plus fusion_reach is refined by the
piece, with its whole-image index (so its noise, and with it the pixels, do not depend on the
split). Patches a piece needs near its edges are also refined by its neighbour: the Patch-DiT
pays for the overlap (1.06x to 1.11x the patches for 768 px pieces of 1 to 12.6 MP photos),
the GRM for the halo (1.10x to 1.24x the pixels).
What differs from a whole-image run is float rounding (tile and conv sizes) and, rarely, a patch
whose Qmap sits on a group threshold: tested within 1/255 or 50 dB PSNR of the whole photo,
with no seam (docs/usage.md, "Big photos")."""
from __future__ import annotations

import math
from dataclasses import dataclass

from .config import PatchScalerConfig

FUSION_REACH_HR = 68    # HR px that an output pixel of fusion.py reads around it (worked out there)
RESIZE_REACH_LR = 4     # LR px of Lanczos support at --outscale >= 1 (3 x 4 HR px, rounded up)
DEFAULT_PIECE = 768     # LR px per side of a piece's core (docs/usage.md: memory and overhead)


@dataclass(frozen=True)
class Piece:
    """One piece of a photo, in LR pixels of the whole (EXIF-rotated) image: rows y0:y1,
    columns x0:x1 of its core and of its crop (core + halo, within the image)."""
    height: int                       # the whole image
    width: int
    index: int                        # row-major among `count`
    count: int
    core: tuple[int, int, int, int]   # y0, y1, x0, x1
    crop: tuple[int, int, int, int]
    reach: int = 0                    # latent px around the core the stitch reads (fusion_reach)
    outscale: float = 4.0             # the output's scale (pieces.output_size)

    @property
    def whole(self) -> bool:
        return self.count == 1

    def to_dict(self) -> dict:
        return {"height": self.height, "width": self.width, "index": self.index, "count": self.count,
                "core": list(self.core), "crop": list(self.crop), "reach": self.reach, "outscale": self.outscale}

    @classmethod
    def from_dict(cls, d: dict) -> "Piece":
        return cls(d["height"], d["width"], d["index"], d["count"], tuple(d["core"]), tuple(d["crop"]),
                   d["reach"], d["outscale"])


def latent_per_lr(cfg: PatchScalerConfig) -> float:
    """Latent pixels per LR pixel (the pixel-unshuffle codec at x4: one)."""
    return cfg.grm.scale / cfg.codec.factor


def unit(cfg: PatchScalerConfig) -> int:
    """Piece borders fall on multiples of this many LR px, so they are whole latent pixels."""
    return cfg.codec.factor // math.gcd(cfg.grm.scale, cfg.codec.factor)


def fusion_reach(cfg: PatchScalerConfig, resized: bool = False) -> int:
    """Latent px around an output pixel that the stitch reads (the fusion; the resize)."""
    f = cfg.codec.factor
    lr = RESIZE_REACH_LR * latent_per_lr(cfg) if resized else 0
    return math.ceil(FUSION_REACH_HR / f + lr)


def grm_reach(cfg: PatchScalerConfig) -> tuple[int, int]:
    """(conf_reach, grm_pad) in LR px of the config's GRM (grm.py)."""
    from .grm import RealESRGANGRM, UNetGRM
    if cfg.grm.backbone == "unet":
        return UNetGRM.conf_reach, 0
    return RealESRGANGRM.conf_reach, RealESRGANGRM.tile_pad


def halo(cfg: PatchScalerConfig, resized: bool = False) -> int:
    """LR px of halo around a piece's core (see the module's text)."""
    conf_reach, grm_pad = grm_reach(cfg)
    r = latent_per_lr(cfg)
    latent = fusion_reach(cfg, resized) + cfg.pgs.patch_size - 1 + math.ceil(conf_reach * r) + math.ceil(grm_pad * r)
    u = unit(cfg)
    return u * math.ceil(latent / r / u)


def _cuts(length: int, parts: int, u: int) -> list[int]:
    """`parts` near-equal spans of `length`, borders on multiples of `u`."""
    inner = [u * round(length * i / parts / u) for i in range(1, parts)]
    return [0, *inner, length]


def split(height: int, width: int, cfg: PatchScalerConfig, piece: int = DEFAULT_PIECE,
          outscale: float = 4.0) -> list[Piece]:
    """The pieces of a height x width LR image: one if it fits in `piece` px per side (then the
    crop is the image and nothing differs from a whole-image run), else a grid of near-equal
    cores of at most `piece` px per side, each with its halo. `outscale`: the output's scale
    (the x4 result is resized when it is not 4, which reads a little further)."""
    resized = outscale != cfg.grm.scale
    reach = fusion_reach(cfg, resized)
    u = unit(cfg)
    piece = max(u, piece - piece % u)
    ny, nx = math.ceil(height / piece), math.ceil(width / piece)
    h = halo(cfg, resized) if ny * nx > 1 else 0
    ys, xs = _cuts(height, ny, u), _cuts(width, nx, u)
    out = []
    for i in range(ny):
        for j in range(nx):
            core = (ys[i], ys[i + 1], xs[j], xs[j + 1])
            crop = (max(0, core[0] - h), min(height, core[1] + h), max(0, core[2] - h), min(width, core[3] + h))
            out.append(Piece(height, width, i * nx + j, ny * nx, core, crop, reach, float(outscale)))
    return out


def output_size(height: int, width: int, outscale: float) -> tuple[int, int]:
    """(height, width) of the output of a height x width LR image."""
    return max(1, round(height * outscale)), max(1, round(width * outscale))


def output_box(piece: Piece, scale: int) -> tuple[int, int, int, int]:
    """The output rows and columns (y0, y1, x0, x1) that `piece` writes: those whose centre, in
    the x`scale` image, lies in its core. The pieces' boxes tile the output exactly."""
    oh, ow = output_size(piece.height, piece.width, piece.outscale)
    sy, sx = scale * piece.height / oh, scale * piece.width / ow

    def owned(a: int, b: int, step: float) -> tuple[int, int]:
        return math.ceil(scale * a / step - 0.5), math.ceil(scale * b / step - 0.5)

    y0, y1 = owned(piece.core[0], piece.core[1], sy)
    x0, x1 = owned(piece.core[2], piece.core[3], sx)
    if piece.core[0] == 0:
        y0 = 0
    if piece.core[2] == 0:
        x0 = 0
    if piece.core[1] == piece.height:
        y1 = oh
    if piece.core[3] == piece.width:
        x1 = ow
    return y0, y1, x0, x1
