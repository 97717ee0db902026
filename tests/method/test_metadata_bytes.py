"""What an archivist checks byte by byte, read back with exiftool: non-ASCII text in any EXIF
tag, a resolution without a unit, a PNG iTXt's language and translated keyword, and a tag
group that the output format cannot hold (said in a warning and in the photo's manifest row)."""
import json
import logging
import shutil
import subprocess

import pytest
from PIL import Image, PngImagePlugin

from helpers import encode, photo

EXIFTOOL = shutil.which("exiftool")
pytestmark = pytest.mark.skipif(
    EXIFTOOL is None, reason="exiftool is not installed (Debian: apt-get install -y libimage-exiftool-perl)")

# UTF-8 as exiftool and cameras' software write it; Latin-1 and raw bytes as older software does
TEXT = {"IFD0:Artist": "Zoë Ł", "IFD0:Copyright": "© 2024 Zoë Łukasz", "IFD0:ImageDescription": "Ünïcödé – ☃",
        "ExifIFD:LensModel": "Zeiß Planar", "ExifIFD:OwnerName": "Jürgen",
        "GPS:GPSAreaInformation": "Łódź"}


def exiftool(*args) -> str:
    return subprocess.run([EXIFTOOL, *args], check=True, capture_output=True, text=True).stdout


def raw_tag(path, tag) -> bytes:
    return subprocess.run([EXIFTOOL, "-b", f"-{tag}", str(path)], check=True, capture_output=True).stdout


def tags(path) -> dict:
    return json.loads(exiftool("-j", "-G1", "-a", "-n", str(path)))[0]


def upscale(src, dst, checkpoint, **kw):
    from pipeline.local import run_local
    from pipeline.options import UpscaleOptions
    s = run_local(UpscaleOptions(str(src), str(dst), checkpoint=checkpoint, precision="fp32", report=False, **kw))
    assert s["failed"] == 0, s["errors"]
    return {r["input"]: r for r in s["rows"]}


def test_non_ascii_exif_text_comes_out_byte_for_byte_in_every_format(checkpoint, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name, fmt in (("a.jpg", "JPEG"), ("b.png", "PNG"), ("c.tif", "TIFF"), ("d.webp", "WEBP")):
        (src / name).write_bytes(encode(photo(24, 20), fmt))
        exiftool("-q", "-overwrite_original", *(f"-{k.split(':')[1]}={v}" for k, v in TEXT.items()),
                 "-Make=Nikon", str(src / name))
    # a Latin-1 byte string (not UTF-8) written raw: it too must come out as it went in
    exiftool("-q", "-overwrite_original", "-charset", "exif=latin", "-Artist=Zoë (latin-1)", str(src / "a.jpg"))
    rows = upscale(src, tmp_path / "out", checkpoint, run_id="b1")
    for name, row in rows.items():
        before, after = src / name, tmp_path / "out" / row["output"]
        for key in TEXT:
            tag = key.split(":")[1]
            assert raw_tag(after, tag) == raw_tag(before, tag) != b"", (name, tag)
        assert tags(after)["IFD0:Make"] == "Nikon"
    assert raw_tag(src / "a.jpg", "Artist") == "Zoë (latin-1)".encode("latin-1")


def test_a_resolution_without_a_unit_stays_without_one(checkpoint, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "aspect.jpg").write_bytes(encode(photo(24, 20), "JPEG"))   # Pillow writes JFIF unit 0
    exiftool("-q", "-overwrite_original", "-XResolution=1", "-YResolution=1", "-ResolutionUnit=none",
             str(src / "aspect.jpg"))
    info = PngImagePlugin.PngInfo()
    (src / "wide.png").write_bytes(encode(photo(24, 20), "PNG", pnginfo=info))
    exiftool("-q", "-overwrite_original", "-PNG-pHYs:PixelsPerUnitX=3", "-PNG-pHYs:PixelsPerUnitY=2",
             "-PNG-pHYs:PixelUnits#=0", str(src / "wide.png"))
    assert tags(src / "wide.png")["PNG-pHYs:PixelUnits"] == 0
    upscale(src, tmp_path / "out", checkpoint, run_id="b2")
    jpg = tags(tmp_path / "out" / "aspect.jpg")
    assert jpg["JFIF:ResolutionUnit"] == 0 and (jpg["JFIF:XResolution"], jpg["JFIF:YResolution"]) == (1, 1)
    assert jpg["IFD0:ResolutionUnit"] == 1 and (jpg["IFD0:XResolution"], jpg["IFD0:YResolution"]) == (1, 1)
    png = tags(tmp_path / "out" / "wide.png")
    assert png["PNG-pHYs:PixelUnits"] == 0
    assert (png["PNG-pHYs:PixelsPerUnitX"], png["PNG-pHYs:PixelsPerUnitY"]) == (3, 2)
    # and into another format: still no unit
    upscale(src, tmp_path / "png", checkpoint, run_id="b3", out_format="png")
    assert tags(tmp_path / "png" / "aspect.png")["PNG-pHYs:PixelUnits"] == 0


def test_png_itxt_keeps_its_language_and_translated_keyword(checkpoint, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    info = PngImagePlugin.PngInfo()
    info.add_itxt("Description", "Der Hafen bei Morgendämmerung", "de", "Beschreibung")
    info.add_itxt("Title", "Hafen", "de-AT", "")
    info.add_text("Author", "Ada")
    (src / "hafen.png").write_bytes(encode(photo(24, 20), "PNG", pnginfo=info))
    upscale(src, tmp_path / "out", checkpoint, run_id="b4")
    out = Image.open(tmp_path / "out" / "hafen.png")
    out.load()
    d = out.text["Description"]
    assert (str(d), d.lang, d.tkey) == ("Der Hafen bei Morgendämmerung", "de", "Beschreibung")
    assert out.text["Title"].lang == "de-AT" and out.text["Author"] == "Ada"
    t = tags(tmp_path / "out" / "hafen.png")
    assert t["PNG:Description-de"] == "Der Hafen bei Morgendämmerung"


def test_a_tag_group_the_output_format_cannot_hold_is_said_once_and_recorded(checkpoint, tmp_path, caplog):
    src = tmp_path / "in"
    src.mkdir()
    for k in range(2):
        (src / f"p{k}.jpg").write_bytes(encode(photo(24, 20, seed=k), "JPEG"))
        exiftool("-q", "-overwrite_original", "-IPTC:By-line=Ada Lovelace", "-XMP-dc:Creator=Ada", str(src / f"p{k}.jpg"))
    with caplog.at_level(logging.WARNING, logger="patchscaler"):
        rows = upscale(src, tmp_path / "out", checkpoint, run_id="b5", out_format="png")
    said = [r.getMessage() for r in caplog.records if "cannot hold" in r.getMessage()]
    assert len(said) == 1 and "PNG" in said[0] and "IPTC (JPEG or TIFF keep it)" in said[0]
    for row in rows.values():
        assert "not kept in PNG: IPTC (JPEG or TIFF keep it)" in row["notes"]
        assert "XMP" not in row["notes"]   # a PNG holds the XMP
    assert tags(tmp_path / "out" / "p0.png")["XMP-dc:Creator"] == "Ada"
    # the same photos as JPEG lose nothing: no note
    rows = upscale(src, tmp_path / "jpg", checkpoint, run_id="b6")
    assert all("not kept" not in r["notes"] for r in rows.values())
