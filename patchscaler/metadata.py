"""A photo's metadata, read when it is decoded (metadata_out.py writes it into the output in
whatever form the output format holds): EXIF (with its Exif, GPS and Interop IFDs), the ICC
profile, XMP, IPTC-IIM, text chunks and comments, and the resolution.

`read` takes what an opened image carries and `metadata_out.for_output` fits it to the output: the EXIF
orientation is 1 (the rotation is applied to the pixels), the sizes are the output's, the
EXIF thumbnail is gone (it shows pixels that are no longer there), the resolution is scaled
with the pixels (so the print size stays the same), and EXIF ProcessingSoftware names what
made the output; the camera's Make, Model and Software stay. A tag that cannot be read
(corrupt EXIF, XMP that is not XML, IPTC that is not IIM) is dropped, never the image."""
from __future__ import annotations

import logging
import math
import contextlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

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
    meta = Metadata(icc=tried(lambda: im.info.get("icc_profile") or None, "ICC profile"),
                    exif=tried(lambda: _read_exif(im, rotated), "EXIF"),
                    xmp=tried(lambda: _valid_xmp(im.info.get("xmp") or _gif_xmp(im, data)), "XMP"),
                    iptc=tried(lambda: _read_iptc(im), "IPTC"),
                    text=tried(lambda: _read_text(im), "text") or {},
                    itxt=tried(lambda: _read_itxt(im), "iTXt languages") or {},
                    dpi=tried(lambda: _valid_dpi(im.info.get("dpi")), "resolution"),
                    aspect=tried(lambda: _unitless(im), "resolution"))
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


def tried(get, what: str):
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
    load_exif(exif=exif)
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


def load_exif(raw: bytes | None = None, exif: Image.Exif | None = None) -> Image.Exif:
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
