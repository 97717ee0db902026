"""A photo's metadata, read when it is decoded and written into its output in whatever form
the output format holds: EXIF (with its Exif, GPS and Interop IFDs), the ICC profile, XMP,
IPTC-IIM, text chunks and comments, and the resolution.

`read` takes what an opened image carries and `for_output` fits it to the output: the EXIF
orientation is 1 (the rotation is applied to the pixels), the sizes are the output's, the
EXIF thumbnail is gone (it shows pixels that are no longer there), the resolution is scaled
with the pixels (so the print size stays the same), and EXIF ProcessingSoftware names what
made the output; the camera's Make, Model and Software stay. A tag that cannot be read
(corrupt EXIF, XMP that is not XML, IPTC that is not IIM) is dropped, never the image."""
from __future__ import annotations

import hashlib
import logging
import math
import re
import struct
import contextlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace

from PIL import ExifTags, Image, TiffImagePlugin

log = logging.getLogger("patchscaler")

ORIENTATION = ExifTags.Base.Orientation
PROCESSING_SOFTWARE = ExifTags.Base.ProcessingSoftware
X_RESOLUTION, Y_RESOLUTION = ExifTags.Base.XResolution, ExifTags.Base.YResolution
PIXEL_X, PIXEL_Y = ExifTags.Base.ExifImageWidth, ExifTags.Base.ExifImageHeight
XMP_TAG, IPTC_TAG, PHOTOSHOP_TAG, ICC_TAG = 700, 33723, 34377, 34675
PHOTOSHOP_IPTC, PHOTOSHOP_IPTC_DIGEST = 0x0404, 0x0425

# the tags of a TIFF's first IFD that lay out its pixels (the writer makes its own) or that are
# carried apart from the EXIF (XMP, IPTC, Photoshop resources, ICC)
TIFF_LAYOUT = {254, 255, 256, 257, 258, 259, 262, 263, 266, 273, 277, 278, 279, 280, 281, 284, 317,
               320, 322, 323, 324, 325, 330, 338, 339, 340, 341, 347, 513, 514, 530, 531, 532,
               XMP_TAG, IPTC_TAG, PHOTOSHOP_TAG, ICC_TAG}
# the PNG text chunks that hold EXIF in ImageMagick's way: the EXIF is written as eXIf instead
PNG_EXIF_TEXT = ("Raw profile type exif", "Raw profile type APP1")


@dataclass
class Metadata:
    icc: bytes | None = None
    exif: bytes | None = None        # "Exif\0\0" + a TIFF header and IFDs, as Image.Exif writes it
    xmp: bytes | None = None         # the XMP packet
    iptc: bytes | None = None        # IPTC-IIM records (what JPEG's APP13 and TIFF's tag 33723 hold)
    text: dict[str, str] = field(default_factory=dict)   # PNG text chunks; "Comment": JPEG/GIF comments
    itxt: dict[str, tuple[str, str]] = field(default_factory=dict)   # PNG iTXt key -> (language, translated key)
    dpi: tuple[float, float] | None = None
    aspect: tuple[int, int] | None = None   # a resolution without a unit (JFIF unit 0, pHYs unit 0): a pixel aspect only


def read(im: Image.Image, data: bytes = b"", rotated: bool = False) -> Metadata:
    """The metadata of an image opened from `data` whose pixels are loaded (a PNG's text after
    its pixels is read then); `rotated`: its EXIF orientation turns it by 90 degrees, so x and
    y swap."""
    meta = Metadata(icc=_tried(lambda: im.info.get("icc_profile") or None, "ICC profile"),
                    exif=_tried(lambda: _read_exif(im, rotated), "EXIF"),
                    xmp=_tried(lambda: _valid_xmp(im.info.get("xmp") or _gif_xmp(im, data)), "XMP"),
                    iptc=_tried(lambda: _read_iptc(im), "IPTC"),
                    text=_tried(lambda: _read_text(im), "text") or {},
                    itxt=_tried(lambda: _read_itxt(im), "iTXt languages") or {},
                    dpi=_tried(lambda: _valid_dpi(im.info.get("dpi")), "resolution"),
                    aspect=_tried(lambda: _unitless(im), "resolution"))
    if meta.aspect:
        meta.dpi = None   # Pillow reads a unitless density as dots per inch: it is not one
    if rotated and meta.dpi:
        meta.dpi = meta.dpi[::-1]
    if rotated and meta.aspect:
        meta.aspect = meta.aspect[::-1]
    return meta


def _unitless(im: Image.Image) -> tuple[int, int] | None:
    """The pixel aspect of a resolution given without a unit (aspect ratio only), or None.
    JPEG: JFIF density unit 0 and no EXIF resolution in inches or cm; PNG: pHYs unit 0."""
    if im.format == "JPEG" and im.info.get("jfif_unit") == 0:
        if im.getexif().get(ExifTags.Base.ResolutionUnit) in (2, 3):
            return None   # the EXIF gives a real resolution
        x, y = im.info.get("jfif_density", (1, 1))
        return (int(x), int(y)) if x > 0 and y > 0 else None
    if im.format == "PNG" and "aspect" in im.info and "dpi" not in im.info:
        x, y = im.info["aspect"]
        return (int(x), int(y)) if x > 0 and y > 0 else None
    return None


def _tried(get, what: str):
    """get(), or None when the photo's `what` cannot be read: that tag is dropped, not the photo."""
    try:
        return get()
    except Exception as e:
        log.debug("%s dropped: %s", what, e)
        return None


def _read_exif(im: Image.Image, rotated: bool) -> bytes | None:
    if isinstance(im, TiffImagePlugin.TiffImageFile):
        exif = im.getexif()    # a TIFF's EXIF is its first IFD, among the tags that lay out its pixels
        for tag in TIFF_LAYOUT & set(exif):
            del exif[tag]
    else:
        raw = im.info.get("exif")
        if not raw:
            return None
        exif = Image.Exif()
        exif.load(raw)
    _keep_readable_ifds(exif)
    _load_exif(exif=exif)
    if ORIENTATION in exif:
        exif[ORIENTATION] = 1
    if rotated:
        _swap(exif, X_RESOLUTION, Y_RESOLUTION)
    return exif.tobytes() if len(exif) else None


class RawText(str):
    """An EXIF ASCII value that writes back the bytes it was read from. Pillow reads ASCII tags
    as Latin-1 and writes them as ASCII with "?" for anything else, so "Zoë" in UTF-8 (as
    exiftool and cameras' software write it) would come out "Zo??"; Latin-1 maps each byte to
    one character and back, so this gives the original bytes, whatever their encoding."""

    def encode(self, encoding="utf-8", errors="strict"):
        return str.encode(self, "latin-1")


def _load_exif(raw: bytes | None = None, exif: Image.Exif | None = None) -> Image.Exif:
    """An Exif block whose text values (IFD0, Exif, GPS and Interop IFDs) write back byte for byte."""
    if exif is None:
        exif = Image.Exif()
        if raw:
            exif.load(raw)
    ifds = [exif]
    for tag in (ExifTags.IFD.Exif, ExifTags.IFD.GPSInfo, ExifTags.IFD.Interop):
        if tag in exif or (tag == ExifTags.IFD.Interop and ExifTags.IFD.Interop in exif.get_ifd(ExifTags.IFD.Exif)):
            with contextlib.suppress(Exception):   # unreadable: _keep_readable_ifds drops it
                ifds.append(exif.get_ifd(tag))
    for ifd in ifds:
        for tag, value in list(ifd.items()):
            if isinstance(value, str) and not isinstance(value, RawText):
                ifd[tag] = RawText(value)
    return exif


def _keep_readable_ifds(exif: Image.Exif) -> None:
    """Drop an Exif, GPS or Interop IFD that cannot be read (with the pointer to it), keep the rest."""
    for tag in (ExifTags.IFD.Exif, ExifTags.IFD.GPSInfo):
        if tag in exif:
            try:
                ifd = exif.get_ifd(tag)
                if tag == ExifTags.IFD.Exif and ExifTags.IFD.Interop in ifd:
                    try:
                        exif.get_ifd(ExifTags.IFD.Interop)
                    except Exception as e:
                        log.debug("EXIF Interop IFD dropped: %s", e)
                        del ifd[ExifTags.IFD.Interop]
            except Exception as e:
                log.debug("EXIF IFD %#x dropped: %s", tag, e)
                del exif[tag]
    exif.tobytes()   # what cannot be written back raises here, and the caller drops the EXIF


def _swap(d, a, b) -> None:
    if a in d and b in d:
        d[a], d[b] = d[b], d[a]


def _valid_xmp(xmp) -> bytes | None:
    if not xmp:
        return None
    xmp = xmp.encode() if isinstance(xmp, str) else bytes(xmp)
    ET.fromstring(xmp.strip(b"\0 \r\n\t"))   # XMP that is not XML is dropped (raises)
    return xmp


def _gif_xmp(im: Image.Image, data: bytes) -> bytes | None:
    """A GIF's XMP, which Pillow finds but does not read: the packet lies raw after the
    application extension's name, up to the end of its xpacket."""
    ext = im.info.get("extension")
    if im.format != "GIF" or not ext or ext[0] != b"XMP DataXMP":
        return None
    start = ext[1]
    end = data.find(b"?>", data.find(b"<?xpacket end=", start))
    if end < 0:
        raise ValueError("GIF XMP without its end")
    return data[start:end + 2]


def _read_iptc(im: Image.Image) -> bytes | None:
    """The IIM records of a JPEG's APP13 (Photoshop resource 0x0404) or a TIFF's tag 33723."""
    if isinstance(im, TiffImagePlugin.TiffImageFile):
        # the tag's bytes as stored, as Pillow's own IptcImagePlugin reads them: writers often
        # type it as LONGs, which the typed reader refuses for their count
        data = im.tag_v2._tagdata.get(IPTC_TAG)
    else:
        data = (im.info.get("photoshop") or {}).get(PHOTOSHOP_IPTC)
    if not data:
        return None
    data = bytes(data).rstrip(b"\0")   # padding to a whole LONG or an even length
    if not data.startswith(b"\x1c"):
        raise ValueError("not IPTC-IIM records")
    return data


def _read_text(im: Image.Image) -> dict[str, str]:
    text = {}
    if im.format == "PNG":
        for key, value in im.text.items():
            if key != "XML:com.adobe.xmp" and key not in PNG_EXIF_TEXT:
                text[key] = str(value)
    comment = im.info.get("comment")
    if comment and im.format in ("JPEG", "GIF"):
        text["Comment"] = comment.decode("utf-8", "replace") if isinstance(comment, bytes) else str(comment)
    return text


def _read_itxt(im: Image.Image) -> dict[str, tuple[str, str]]:
    """A PNG's iTXt chunks' language tag and translated keyword, which str values lose."""
    if im.format != "PNG":
        return {}
    return {k: (v.lang or "", v.tkey or "") for k, v in im.text.items()
            if (getattr(v, "lang", None) or getattr(v, "tkey", None))}


def _valid_dpi(dpi) -> tuple[float, float] | None:
    if not dpi:
        return None
    x, y = (float(v) for v in dpi)
    return (x, y) if all(math.isfinite(v) and v > 0 for v in (x, y)) else None


# --- the output ------------------------------------------------------------------------------

def for_output(meta: Metadata, size_in: tuple[int, int], size_out: tuple[int, int], software: str) -> Metadata:
    """`meta` fitted to an output of `size_out` (w, h) made from an input of `size_in`: the
    sizes the output's, the resolution scaled by the same factor as the pixels (the print size
    kept), EXIF ProcessingSoftware set to `software`."""
    fx, fy = size_out[0] / size_in[0], size_out[1] / size_in[1]
    dpi = (meta.dpi[0] * fx, meta.dpi[1] * fy) if meta.dpi else None
    exif = _tried(lambda: _exif_for_output(meta.exif, size_out, (fx, fy), software), "EXIF")
    xmp = _tried(lambda: _xmp_for_output(meta.xmp, size_out), "XMP") if meta.xmp else None
    return replace(meta, exif=exif, xmp=xmp, dpi=dpi, text=dict(meta.text))


def _exif_for_output(raw: bytes | None, size: tuple[int, int], factor: tuple[float, float], software: str) -> bytes:
    exif = _load_exif(raw)
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
    exif = _load_exif(meta.exif)
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
