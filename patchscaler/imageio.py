"""Decoding, validation and encoding of real-world images.

`decode` turns bytes into a `Prepared` image (RGB float tensor, optional alpha, and what is
needed to write the result back in kind) or raises `BadImage` with a clear reason. Modes:
  L, LA, RGB, RGBA, P (with or without transparency), CMYK (processed and written as RGB),
  I;16 / I / F (16-bit or float grey: processed in float, written as 16-bit PNG/TIFF),
  16-bit RGB and RGBA PNG/TIFF (archive scans: read and written with all 16 bits, deep.py).
EXIF orientation is applied (and the orientation tag reset); the photo's metadata (EXIF, ICC,
XMP, IPTC, text, resolution: metadata.py) is carried to the output. Animated GIF/WebP/APNG: the first frame only (recorded in `notes`). Images over
`max_pixels` are refused from their header, before any pixel is decoded (bomb guard)."""
from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, ImageOps

from . import deep, metadata, metadata_out
from .deep import DeepImage
from .metadata import Metadata

DEEP_MODES = ("I16", "RGB16")   # 16 bits per channel: PNG or TIFF outputs only
WRITABLE = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "TIFF": ".tif", "BMP": ".bmp"}
DEFAULT_MAX_PIXELS = 16_000_000   # LR pixels; the x4 output is 16 times larger


class BadImage(ValueError):
    """An input that cannot be upscaled; the message says why, for the manifest."""


@dataclass
class Prepared:
    rgb: torch.Tensor                 # (1, 3, h, w) float32 in [0, 1]
    alpha: torch.Tensor | None        # (1, 1, h, w) float32 in [0, 1] or None
    mode: str                         # the source mode family: "L", "RGB", "I16" (16-bit grey), "RGB16"
    format: str                       # source format (JPEG, PNG, ...)
    meta: Metadata = field(default_factory=Metadata)
    notes: list[str] = field(default_factory=list)
    image_size: tuple[int, int] | None = None   # (w, h) of the whole image when this is a piece of it

    @property
    def size(self) -> tuple[int, int]:
        """(w, h) of the whole image."""
        return self.image_size or (self.rgb.shape[-1], self.rgb.shape[-2])

    # 8-bit inputs travel as 8 bits between processes (the values are k/255 exactly, so the
    # float32 made again is the same); 16-bit ones stay float32
    def __getstate__(self):
        d = dict(self.__dict__)
        if self.mode not in DEEP_MODES:
            d["rgb"] = (self.rgb * 255).round().to(torch.uint8)
            if self.alpha is not None:
                d["alpha"] = (self.alpha * 255).round().to(torch.uint8)
        return d

    def __setstate__(self, d):
        if d["rgb"].dtype == torch.uint8:
            d["rgb"] = d["rgb"].float() / 255
            if d["alpha"] is not None:
                d["alpha"] = d["alpha"].float() / 255
        self.__dict__.update(d)


def probe(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(w, h) of an image as it will be upscaled (EXIF orientation applied), from its header
    only; BadImage if it is not an image or over `max_pixels`. `data` may be the file's first
    bytes only (Image.open reads no pixels)."""
    with _as_bad_image():
        im = _open_checked(data, max_pixels)
        try:
            orientation = im.getexif().get(0x0112, 1)
        except Exception:   # a broken EXIF block: decode() ignores it as well
            orientation = 1
    w, h = im.size
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


@contextlib.contextmanager
def _as_bad_image():
    """Pillow's errors as BadImage with a reason; decompression-bomb warnings are errors."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImage(f"decompression bomb refused: {e}") from None
    except Image.UnidentifiedImageError:
        raise BadImage("not an image (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise BadImage(f"corrupt or truncated image: {e}") from None


def _open_checked(data: bytes, max_pixels: int) -> Image.Image:
    """Image.open with the size checks made from the header, before any pixel is decoded."""
    if not data:
        raise BadImage("empty file (0 bytes)")
    try:
        im = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        # Pillow's own guard answers first for the largest images: say ours, the one to change
        n = re.search(r"\((\d+) pixels\)", str(e))
        if n is None or int(n.group(1)) <= max_pixels:
            raise
        # and that Pillow took it for a decompression bomb: a header claiming this much is often one
        raise BadImage(f"too large: {n.group(1)} pixels > limit {max_pixels} (--max-pixels), over "
                       "Pillow's decompression bomb guard too") from None
    w, h = im.size
    if w * h > max_pixels:
        raise BadImage(f"too large: {w}x{h} = {w * h} pixels > limit {max_pixels} (--max-pixels)")
    if w < 1 or h < 1:
        raise BadImage(f"degenerate size {w}x{h}")
    return im


def decode(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS,
           region: tuple[int, int, int, int] | None = None) -> Prepared:
    """`region` (y0, y1, x0, x1): only this part of the (EXIF-rotated) image is converted to
    floats (a piece, pieces.py); the result's `size` is still the whole image's."""
    with _as_bad_image():
        im = _open_checked(data, max_pixels)
        notes = []
        if getattr(im, "n_frames", 1) > 1:
            notes.append(f"animated ({im.n_frames} frames): first frame only")
            im.seek(0)
        fmt = im.format or "PNG"
        im.load()
        orientation = im.getexif().get(0x0112, 1)
        meta = metadata.read(im, data, rotated=orientation in (5, 6, 7, 8))
        if deep.is_deep(im, data):
            return _deep_prepared(deep.orient(deep.read_array(data, fmt), orientation), fmt, meta, notes, region)
        im = ImageOps.exif_transpose(im)
    if region is None:
        return _to_prepared(im, fmt, meta, notes)
    size = im.size
    y0, y1, x0, x1 = region
    if not (0 <= y0 < y1 <= size[1] and 0 <= x0 < x1 <= size[0]):
        raise BadImage(f"the image is {size[0]}x{size[1]}, not the size its header gave")
    info = dict(im.info)
    im = im.crop((x0, y0, x1, y1))
    im.info.update(info)   # crop drops info (the transparency of P/RGB images)
    prep = _to_prepared(im, fmt, meta, notes)
    prep.image_size = size
    return prep


def _deep_prepared(arr: np.ndarray, fmt: str, meta: Metadata, notes, region) -> Prepared:
    size = (arr.shape[1], arr.shape[0])
    if region is not None:
        y0, y1, x0, x1 = region
        if not (0 <= y0 < y1 <= size[1] and 0 <= x0 < x1 <= size[0]):
            raise BadImage(f"the image is {size[0]}x{size[1]}, not the size its header gave")
        arr = arr[y0:y1, x0:x1]
    t = torch.from_numpy(arr.transpose(2, 0, 1).astype(np.float32)).div_(65535)[None]
    alpha = t[:, 3:4].contiguous() if t.shape[1] == 4 else None
    return Prepared(t[:, :3].contiguous(), alpha, "RGB16", fmt, meta, notes, size if region is not None else None)


def new_image(mode: str, size: tuple[int, int]):
    """An empty output of `mode` (a DeepImage for 16-bit RGB/RGBA) to paste pieces into."""
    return DeepImage.new(mode, size) if mode in ("RGB;16", "RGBA;16") else Image.new(mode, size)


def _to_prepared(im: Image.Image, fmt: str, meta: Metadata, notes) -> Prepared:
    mode = im.mode
    alpha = None
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float32)
        scale = 65535.0 if mode != "F" else max(1.0, float(arr.max()))
        g = torch.from_numpy(np.clip(arr / scale, 0, 1).copy())[None, None]
        return Prepared(g.expand(1, 3, -1, -1).contiguous(), None, "I16", fmt, meta, notes)
    if mode in ("LA", "RGBA", "PA") or (mode == "RGB" and "transparency" in im.info):
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255
        alpha = torch.from_numpy(rgba[..., 3].copy())[None, None]
        rgb = rgba[..., :3]
        family = "L" if mode == "LA" else "RGB"
    elif mode in ("L", "1"):
        rgb = np.repeat(np.asarray(im.convert("L"), dtype=np.float32)[..., None] / 255, 3, -1)
        family = "L"
    else:  # RGB, CMYK, YCbCr, LAB, HSV ...
        if mode not in ("RGB",):
            notes.append(f"{mode} converted to RGB")
        rgb = np.asarray(im.convert("RGB"), dtype=np.float32) / 255
        family = "RGB"
    t = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None]
    return Prepared(t, alpha, family, fmt, meta, notes)


def to_pil(rgb: torch.Tensor, alpha: torch.Tensor | None, mode: str) -> Image.Image:
    """(1, 3, H, W) and (1, 1, H, W) floats in [0, 1] -> a PIL image of the source's family."""
    x = rgb[0].clamp(0, 1).permute(1, 2, 0).numpy()
    if mode == "RGB16":
        if alpha is not None:
            x = np.concatenate([x, alpha[0].clamp(0, 1).permute(1, 2, 0).numpy()], -1)
        return DeepImage((x * 65535 + 0.5).astype(np.uint16))
    if mode == "I16":
        g = (x.mean(-1) * 65535 + 0.5).astype(np.uint16)
        return Image.fromarray(g)
    im = Image.fromarray((x * 255 + 0.5).astype(np.uint8), mode="RGB")
    if mode == "L":
        im = im.convert("L")
    if alpha is not None:
        a = Image.fromarray((alpha[0, 0].clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8), mode="L")
        im = im.convert("LA" if mode == "L" else "RGBA")
        im.putalpha(a)
    return im


def output_format(src_format: str, mode: str, has_alpha: bool, override: str | None = None) -> str:
    """Same format as the input when it can hold the result, else PNG."""
    fmt = (override or src_format or "PNG").upper()
    fmt = {"JPG": "JPEG", "TIF": "TIFF"}.get(fmt, fmt)
    if fmt not in WRITABLE:
        fmt = "PNG"
    if mode in DEEP_MODES and fmt not in ("PNG", "TIFF"):
        fmt = "PNG"
    if has_alpha and fmt in ("JPEG", "BMP"):
        fmt = "PNG"
    return fmt


def encode(im: Image.Image, fmt: str, quality: int = 95, meta: Metadata | None = None) -> bytes:
    """`im` as a `fmt` file with what the format holds of `meta` (metadata_out.for_output fits it
    to the output first). Metadata the format's writer refuses (an EXIF over JPEG's 64 KiB) is
    left out rather than failing the image."""
    if isinstance(im, DeepImage):
        return _encode_deep(im, fmt, meta)
    kw = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    extra = metadata_out.save_options(meta, fmt, im.mode) if meta is not None else {}
    try:
        data = _save(im, fmt, {**kw, **extra})
        return metadata_out.with_unitless_resolution(data, fmt, meta.aspect if meta and not meta.dpi else None)
    except Exception:
        if not extra:
            raise
    for left_out in extra:   # the one the writer refused, if it is one
        try:
            data = _save(im, fmt, {**kw, **{k: v for k, v in extra.items() if k != left_out}})
        except Exception:
            continue
        logging.getLogger("patchscaler").debug("%s metadata left out: the %s writer refused it", left_out, fmt)
        return data
    return _save(im, fmt, kw)


def _save(im: Image.Image, fmt: str, kw: dict) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _encode_deep(im: DeepImage, fmt: str, meta: Metadata | None) -> bytes:
    """A 16-bit RGB(A) output: the metadata as Pillow writes it, moved into the 16-bit file."""
    mode = "RGBA" if im.array.shape[-1] == 4 else "RGB"
    extra = metadata_out.save_options(meta, fmt, mode) if meta is not None else {}
    if fmt == "TIFF":
        eight = Image.fromarray((im.array[:1] >> 8).astype(np.uint8), mode)   # one row: it carries the tags
        try:
            data = _save(eight, "TIFF", extra)
        except Exception:
            data = _save(eight, "TIFF", {})
        return deep.encode_tiff(im.array, data)
    try:
        carrier = _save(Image.new(mode, (1, 1)), "PNG", extra)
    except Exception:
        carrier = _save(Image.new(mode, (1, 1)), "PNG", {})
    data = deep.encode_png(im.array, carrier)
    return metadata_out.with_unitless_resolution(data, "PNG", meta.aspect if meta and not meta.dpi else None)
