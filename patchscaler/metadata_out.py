"""A photo's metadata (metadata.py) in its output: fitted to the output's size (`for_output`),
put into whatever the output format holds (`save_options`, and what Pillow's writers cannot
write: `with_unitless_resolution`), and what a format cannot hold named (`not_kept`)."""
from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import replace

from PIL import ExifTags, Image, TiffImagePlugin

from .metadata import (IPTC_TAG, PHOTOSHOP_IPTC, PHOTOSHOP_IPTC_DIGEST, PIXEL_X, PIXEL_Y, PROCESSING_SOFTWARE,
                       X_RESOLUTION, XMP_TAG, Y_RESOLUTION, Metadata, load_exif, tried)


def for_output(meta: Metadata, size_in: tuple[int, int], size_out: tuple[int, int], software: str) -> Metadata:
    """`meta` fitted to an output of `size_out` (w, h) made from an input of `size_in`: the
    sizes the output's, the resolution scaled by the same factor as the pixels (the print size
    kept), EXIF ProcessingSoftware set to `software`."""
    fx, fy = size_out[0] / size_in[0], size_out[1] / size_in[1]
    dpi = (meta.dpi[0] * fx, meta.dpi[1] * fy) if meta.dpi else None
    exif = tried(lambda: _exif_for_output(meta.exif, size_out, (fx, fy), software), "EXIF")
    xmp = tried(lambda: _xmp_for_output(meta.xmp, size_out), "XMP") if meta.xmp else None
    return replace(meta, exif=exif, xmp=xmp, dpi=dpi, text=dict(meta.text))


def _exif_for_output(raw: bytes | None, size: tuple[int, int], factor: tuple[float, float], software: str) -> bytes:
    exif = load_exif(raw)
    exif.pop(256, None)    # an old ImageWidth/ImageLength: the writer gives the output's, or none
    exif.pop(257, None)
    unitless = exif.get(ExifTags.Base.ResolutionUnit) == 1   # an aspect ratio only: no print size to keep
    for tag, f in ((X_RESOLUTION, factor[0]), (Y_RESOLUTION, factor[1])):
        if tag in exif and not unitless:
            exif[tag] = TiffImagePlugin.IFDRational(float(exif[tag]) * f)
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    for tag, v in ((PIXEL_X, size[0]), (PIXEL_Y, size[1])):
        if tag in sub:
            sub[tag] = v
    exif[PROCESSING_SOFTWARE] = software
    return exif.tobytes()


_XMP_SIZES = {"tiff:ImageWidth": 0, "tiff:ImageLength": 1, "exif:PixelXDimension": 0, "exif:PixelYDimension": 1}


def _xmp_for_output(xmp: bytes, size: tuple[int, int]) -> bytes:
    """The XMP's image sizes made the output's (as attributes or as elements)."""
    for name, axis in _XMP_SIZES.items():
        v = str(size[axis]).encode()
        n = re.escape(name.encode())
        xmp = re.sub(rb'(' + n + rb'=")[0-9]*(")', rb"\g<1>" + v + rb"\g<2>", xmp)
        xmp = re.sub(rb"(<" + n + rb">)[0-9]*(</" + n + rb">)", rb"\g<1>" + v + rb"\g<2>", xmp)
    xmp = re.sub(rb'tiff:Orientation="[0-9]"', b'tiff:Orientation="1"', xmp)
    return re.sub(rb"<tiff:Orientation>[0-9]</tiff:Orientation>", b"<tiff:Orientation>1</tiff:Orientation>", xmp)


def save_options(meta: Metadata, fmt: str, mode: str) -> dict:
    """Pillow's save options that put `meta` into a `fmt` file of an image in `mode`: what the
    format holds of it."""
    kw: dict = {}
    if meta.dpi and fmt in ("JPEG", "PNG", "TIFF", "BMP"):
        kw["dpi"] = meta.dpi
    if fmt not in ("JPEG", "PNG", "WEBP", "TIFF"):
        return kw
    if meta.icc and _icc_fits(meta.icc, mode):
        kw["icc_profile"] = meta.icc
    if fmt == "TIFF":
        kw["exif"] = _tiff_tags(meta)
        return kw
    if meta.exif:
        kw["exif"] = meta.exif
    if fmt in ("JPEG", "WEBP") and meta.xmp:
        kw["xmp"] = meta.xmp
    if fmt == "JPEG":
        if meta.iptc:
            kw["extra"] = _app13(meta.iptc)
        if meta.text.get("Comment"):
            kw["comment"] = meta.text["Comment"]
    if fmt == "PNG" and (meta.text or meta.xmp):
        kw["pnginfo"] = _png_text(meta)
    return kw


def with_unitless_resolution(data: bytes, fmt: str, aspect: tuple[int, int] | None) -> bytes:
    """An encoded file given a resolution without a unit, `aspect`, which Pillow's writers cannot
    write (they know dots per inch only): JPEG's JFIF density with unit 0 (Pillow writes 1:1),
    PNG's pHYs with unit 0 (Pillow writes none)."""
    if not aspect:
        return data
    x, y = aspect
    if fmt == "JPEG":
        at = data.find(b"JFIF\0", 0, 32)
        if at < 0 or aspect == (1, 1):
            return data
        return data[:at + 7] + b"\0" + struct.pack(">HH", min(x, 0xFFFF), min(y, 0xFFFF)) + data[at + 12:]
    if fmt == "PNG" and data[12:16] == b"IHDR":
        return png_insert(data, b"pHYs", struct.pack(">IIB", x, y, 0))
    return data


def png_insert(data: bytes, cid: bytes, payload: bytes) -> bytes:
    """A PNG with one more chunk, right after its IHDR (where every ancillary chunk may go)."""
    import zlib
    end = 8 + 8 + struct.unpack(">I", data[8:12])[0] + 4
    chunk = struct.pack(">I", len(payload)) + cid + payload + struct.pack(">I", zlib.crc32(cid + payload))
    return data[:end] + chunk + data[end:]


# what each output format holds of a photo's metadata (save_options writes exactly these)
HELD = {"JPEG": {"EXIF", "ICC profile", "XMP", "IPTC", "comment", "resolution"},
        "PNG": {"EXIF", "ICC profile", "XMP", "text", "comment", "resolution"},
        "WEBP": {"EXIF", "ICC profile", "XMP"},
        "TIFF": {"EXIF", "ICC profile", "XMP", "IPTC", "resolution"},
        "BMP": {"resolution"}}


def groups(meta: Metadata) -> set[str]:
    """The kinds of metadata `meta` holds."""
    have = {name for name, v in (("EXIF", meta.exif), ("ICC profile", meta.icc), ("XMP", meta.xmp),
                                  ("IPTC", meta.iptc), ("resolution", meta.dpi or meta.aspect)) if v}
    if meta.text.get("Comment"):
        have.add("comment")
    if set(meta.text) - {"Comment"}:
        have.add("text")
    return have


def not_kept(meta: Metadata, fmt: str) -> list[str]:
    """What `meta` holds that a `fmt` output cannot, each with the formats that would keep it,
    e.g. "IPTC (JPEG or TIFF keep it)"."""
    out = []
    for name in sorted(groups(meta) - HELD.get(fmt, set())):
        keep = [f for f in ("JPEG", "PNG", "TIFF", "WEBP") if name in HELD[f]]
        out.append(f"{name} ({' or '.join(keep)} keep{'s' if len(keep) == 1 else ''} it)")
    return out


def _icc_fits(icc: bytes, mode: str) -> bool:
    """Whether a profile describes the output's channels: a CMYK photo is written as RGB, and
    its CMYK profile would make every reader show wrong colours."""
    space = icc[16:20]
    return space == (b"GRAY" if mode in ("L", "LA", "I;16", "I") else b"RGB ")


def _tiff_tags(meta: Metadata) -> Image.Exif:
    """A TIFF's first IFD: the EXIF's tags (the writer adds the Exif and GPS IFDs), XMP, IPTC."""
    exif = load_exif(meta.exif)
    if meta.xmp:
        exif[XMP_TAG] = meta.xmp
    if meta.iptc:
        exif[IPTC_TAG] = meta.iptc
    return exif


def _app13(iptc: bytes) -> bytes:
    """A JPEG APP13 segment: Photoshop's IPTC resource and its digest (which readers compare)."""
    body = b"Photoshop 3.0\0" + _resource(PHOTOSHOP_IPTC, iptc) + _resource(PHOTOSHOP_IPTC_DIGEST, hashlib.md5(iptc).digest())
    if len(body) + 2 > 0xFFFF:
        raise ValueError("IPTC too large for one APP13 segment")
    return b"\xff\xed" + struct.pack(">H", len(body) + 2) + body


def _resource(rid: int, data: bytes) -> bytes:
    pad = b"\0" if len(data) % 2 else b""
    return b"8BIM" + struct.pack(">H", rid) + b"\0\0" + struct.pack(">I", len(data)) + data + pad


def _png_text(meta: Metadata):
    from PIL.PngImagePlugin import PngInfo
    info = PngInfo()
    for key, value in meta.text.items():
        if key in meta.itxt:
            info.add_itxt(key, value, *meta.itxt[key])
            continue
        try:
            value.encode("latin-1")
            info.add_text(key, value)
        except UnicodeEncodeError:   # tEXt is Latin-1 only
            info.add_itxt(key, value)
    if meta.xmp:
        info.add_itxt("XML:com.adobe.xmp", meta.xmp.decode("utf-8", "replace"))
    return info
