"""A photo's metadata in its output, read back with exiftool (a reader independent of Pillow):
EXIF with its Exif and GPS IFDs, ICC, XMP, IPTC, PNG text and the resolution, per output
format and across a format change; what describes the old pixels updated or dropped; a
corrupt EXIF block or broken XMP costs that tag only."""
import io
import json
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image, ImageCms, PngImagePlugin

from helpers import encode, photo

EXIFTOOL = shutil.which("exiftool")
needs_exiftool = pytest.mark.skipif(
    EXIFTOOL is None, reason="exiftool is not installed (Debian: apt-get install -y libimage-exiftool-perl)")

W, H = 24, 20
ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
XMP_ARGS = ["-XMP-dc:Rights=© 2024 Ada Lovelace, all rights reserved", "-XMP-dc:Creator=Ada Lovelace",
            "-XMP-photoshop:City=Paris", f"-XMP-exif:PixelXDimension={W}", f"-XMP-exif:PixelYDimension={H}"]
IPTC_ARGS = ["-IPTC:By-line=Ada Lovelace", "-IPTC:CopyrightNotice=(c) 2024 Ada", "-IPTC:Keywords=harbour"]

# groups that describe the file, not the photo, or that exiftool works out from other tags;
# and the tags that lay out a file's pixels (its writer makes its own)
NOT_CARRIED = ("File", "System", "ExifTool", "Composite", "SourceFile", "GIF", "RIFF")
LAYOUT = {"ImageWidth", "ImageHeight", "BitDepth", "ColorType", "Compression", "Filter", "Interlace",
          "StripOffsets", "RowsPerStrip", "StripByteCounts", "BitsPerSample", "PhotometricInterpretation",
          "SamplesPerPixel", "PlanarConfiguration"}
# tags whose value changes on purpose (checked one by one in `check_changes`)
CHANGED = {"ExifIFD:ExifImageWidth", "ExifIFD:ExifImageHeight", "XMP-exif:PixelXDimension",
           "XMP-exif:PixelYDimension", "IFD0:XResolution", "IFD0:YResolution", "JFIF:XResolution",
           "JFIF:YResolution", "PNG-pHYs:PixelsPerUnitX", "PNG-pHYs:PixelsPerUnitY",
           "IFD0:ProcessingSoftware", "Photoshop:IPTCDigest", "IFD0:Orientation"}


def camera_exif(orientation: int = 1) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0131] = "Canon", "Canon EOS 5D", "Firmware 1.1.1"
    exif[0x013B], exif[0x8298], exif[0x0132] = "Ada Lovelace", "(c) 2024 Ada", "2024:05:01 10:00:00"
    exif[0x011A] = exif[0x011B] = 300.0
    exif[0x0128] = 2
    if orientation != 1:
        exif[0x0112] = orientation
    sub = exif.get_ifd(0x8769)
    sub[0x9003] = sub[0x9004] = "2024:05:01 09:59:58"
    sub[0xA002], sub[0xA003] = W, H
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2], gps[3], gps[4] = "N", (48.0, 51.0, 29.64), "E", (2.0, 17.0, 40.2)
    loaded = Image.Exif()   # as read from a file: Pillow's TIFF writer writes the IFDs of this form only
    loaded.load(exif.tobytes())
    return loaded


def exiftool(*args) -> str:
    return subprocess.run([EXIFTOOL, *args], check=True, capture_output=True, text=True).stdout


def tags(path) -> dict:
    """exiftool's tags of a file, by group:name, the values as numbers where they are numbers."""
    return {k: v for k, v in json.loads(exiftool("-j", "-G1", "-a", "-n", str(path)))[0].items()
            if k.split(":")[0] not in NOT_CARRIED and not (k.split(":")[-1] in LAYOUT and k[:4] in ("PNG:", "IFD0"))}


def add_with_exiftool(path, *args) -> None:
    exiftool("-q", "-overwrite_original", *args, str(path))


def make_inputs(src) -> dict[str, str]:
    """name -> the output's name, each input with every kind of metadata its format holds."""
    src.mkdir()
    im = photo(W, H)
    (src / "camera.jpg").write_bytes(encode(im, "JPEG", exif=camera_exif(), icc_profile=ICC, dpi=(300, 300),
                                            comment="scanned from the 1961 album"))
    (src / "thumb.jpg").write_bytes(encode(photo(8, 6), "JPEG"))
    add_with_exiftool(src / "camera.jpg", *XMP_ARGS, *IPTC_ARGS, f"-ThumbnailImage<={src / 'thumb.jpg'}")
    (src / "thumb.jpg").unlink()
    info = PngImagePlugin.PngInfo()
    info.add_text("Description", "the harbour at dawn")
    info.add_text("Copyright", "(c) 2024 Ada")
    info.add_itxt("Title", "Hafen – Morgendämmerung")
    (src / "scan.png").write_bytes(encode(im, "PNG", exif=camera_exif(), icc_profile=ICC, dpi=(300, 300), pnginfo=info))
    add_with_exiftool(src / "scan.png", *XMP_ARGS)
    (src / "scan.tif").write_bytes(encode(im, "TIFF", exif=camera_exif(), icc_profile=ICC, dpi=(300, 300)))
    add_with_exiftool(src / "scan.tif", *XMP_ARGS, *IPTC_ARGS)
    (src / "phone.webp").write_bytes(encode(im, "WEBP", exif=camera_exif(), icc_profile=ICC, quality=95))
    add_with_exiftool(src / "phone.webp", *XMP_ARGS)
    grey16 = Image.fromarray((np.linspace(0, 65535, W * H).reshape(H, W)).astype(np.uint16))
    (src / "grey16.tif").write_bytes(encode(grey16, "TIFF", exif=camera_exif(), dpi=(600, 600)))
    add_with_exiftool(src / "grey16.tif", *XMP_ARGS, *IPTC_ARGS)
    gif = im.convert("P", palette=Image.Palette.ADAPTIVE)
    (src / "old.gif").write_bytes(encode(gif, "GIF", comment=b"from the family archive"))
    add_with_exiftool(src / "old.gif", *XMP_ARGS)
    return {"camera.jpg": "camera.jpg", "scan.png": "scan.png", "scan.tif": "scan.tif",
            "phone.webp": "phone.webp", "old.gif": "old.png", "grey16.tif": "grey16.tif"}


def upscale_folder(src, dst, checkpoint, **kw):
    from pipeline.local import run_local
    from pipeline.options import UpscaleOptions
    s = run_local(UpscaleOptions(str(src), str(dst), checkpoint=checkpoint, precision="fp32", report=False, **kw))
    assert s["failed"] == 0, s["errors"]
    return {r["input"]: r["output"] for r in s["rows"]}


def check_changes(before: dict, after: dict, scale: float) -> None:
    """What describes the old pixels or says what made the file, in the output."""
    ow, oh = round(W * scale), round(H * scale)
    assert after.get("IFD0:Orientation", 1) == 1
    assert after["IFD0:ProcessingSoftware"].startswith("PatchScaler ") and "(model " in after["IFD0:ProcessingSoftware"]
    for a, b in (("IFD0:Make", "Canon"), ("IFD0:Model", "Canon EOS 5D"), ("IFD0:Software", "Firmware 1.1.1")):
        assert after[a] == b, a
    assert (after["ExifIFD:ExifImageWidth"], after["ExifIFD:ExifImageHeight"]) == (ow, oh)
    if "XMP-exif:PixelXDimension" in before:
        assert (after["XMP-exif:PixelXDimension"], after["XMP-exif:PixelYDimension"]) == (ow, oh)
    assert not [k for k in after if k.startswith("IFD1:")], "the old thumbnail is gone"
    for key in ("IFD0:XResolution", "IFD0:YResolution", "JFIF:XResolution", "JFIF:YResolution",
                "PNG-pHYs:PixelsPerUnitX", "PNG-pHYs:PixelsPerUnitY"):
        if key in before and key in after:   # the print size kept: the resolution grows with the pixels
            assert after[key] == pytest.approx(before[key] * scale, rel=1e-3), key


def check_kept(before: dict, after: dict, renamed: dict | None = None) -> None:
    renamed = renamed or {}
    missing = {k: v for k, v in before.items() if not k.startswith("IFD1:") and k not in CHANGED
               and after.get(renamed.get(k, k)) != v}
    assert not missing, {k: (v, after.get(renamed.get(k, k))) for k, v in missing.items()}


@needs_exiftool
def test_every_tag_is_carried_into_each_output_format(checkpoint, tmp_path):
    names = make_inputs(tmp_path / "in")
    outputs = upscale_folder(tmp_path / "in", tmp_path / "out", checkpoint, run_id="m1")
    assert outputs == names
    for name, out in names.items():
        before, after = tags(tmp_path / "in" / name), tags(tmp_path / "out" / out)
        assert any(k.startswith("XMP-dc:Rights") for k in before), name   # the inputs hold what they should
        renamed = {"GIF:Comment": "PNG:Comment"} if name.endswith(".gif") else {}
        check_kept(before, after, renamed)
        if name.endswith(".gif"):
            continue   # a GIF holds no EXIF nor resolution
        check_changes(before, after, 4)
    jpg = tags(tmp_path / "out" / "camera.jpg")
    assert jpg["IPTC:By-line"] == "Ada Lovelace" and jpg["XMP-dc:Rights"].startswith("©")
    assert jpg["GPS:GPSLatitude"] == pytest.approx(48.8582, abs=1e-4)
    assert jpg["ExifIFD:DateTimeOriginal"] == "2024:05:01 09:59:58"
    tif = tags(tmp_path / "out" / "scan.tif")
    assert tif["IPTC:CopyrightNotice"] == "(c) 2024 Ada" and tif["XMP-dc:Creator"] == "Ada Lovelace"
    assert tags(tmp_path / "out" / "scan.png")["PNG:Description"] == "the harbour at dawn"


@needs_exiftool
def test_a_format_change_and_outscale_keep_the_tags_and_the_print_size(checkpoint, tmp_path):
    make_inputs(tmp_path / "in")
    outputs = upscale_folder(tmp_path / "in", tmp_path / "out", checkpoint, run_id="m2", out_format="png",
                             outscale=2.5)
    assert outputs["camera.jpg"] == "camera.png"
    before, after = tags(tmp_path / "in" / "camera.jpg"), tags(tmp_path / "out" / "camera.png")
    # a PNG holds no IPTC and no JFIF; its comment is a text chunk and its resolution is pHYs
    kept = {k: v for k, v in before.items() if not k.startswith(("IPTC:", "Photoshop:", "JFIF:", "File:"))}
    check_kept(kept, after, {"File:Comment": "PNG:Comment"})
    assert after["PNG:Comment"] == "scanned from the 1961 album"
    check_changes(before, after, 2.5)
    assert after["PNG-pHYs:PixelsPerUnitX"] == pytest.approx(300 * 2.5 / 0.0254, rel=1e-3)
    png = tags(tmp_path / "out" / outputs["scan.tif"])   # a TIFF's XMP and EXIF in a PNG
    assert png["XMP-dc:Rights"].startswith("©") and png["GPS:GPSLongitudeRef"] == "E"


@needs_exiftool
def test_a_corrupt_exif_or_broken_xmp_costs_that_tag_only(checkpoint, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    im = photo(W, H)
    (src / "bad_exif.jpg").write_bytes(encode(im, "JPEG", exif=b"Exif\0\0MM\0*\0\0\0\x08\x7f\xff" + b"\xee" * 40,
                                              icc_profile=ICC, dpi=(300, 300), xmp=b'<x:xmpmeta xmlns:x="adobe:ns:meta/"/>'))
    (src / "bad_xmp.jpg").write_bytes(encode(im, "JPEG", exif=camera_exif(), xmp=b"<x:xmpmeta this is <not XML"))
    outputs = upscale_folder(src, tmp_path / "out", checkpoint, run_id="m3")
    assert set(outputs) == {"bad_exif.jpg", "bad_xmp.jpg"}
    a = tags(tmp_path / "out" / "bad_exif.jpg")
    assert a["ICC_Profile:ProfileDescription"] and a["JFIF:XResolution"] == 1200
    assert a["IFD0:ProcessingSoftware"].startswith("PatchScaler ")
    b = tags(tmp_path / "out" / "bad_xmp.jpg")
    assert b["IFD0:Make"] == "Canon" and not [k for k in b if k.startswith("XMP")]


def test_rotated_photo_has_orientation_one_and_its_size_in_exif():
    """Without exiftool: the EXIF orientation applied to the pixels, the tag reset, the sizes
    and resolution fitted to the output (metadata_out.for_output)."""
    from patchscaler import imageio, metadata_out
    data = encode(photo(W, H), "JPEG", exif=camera_exif(orientation=6), dpi=(300, 150))
    prep = imageio.decode(data)
    assert prep.size == (H, W) and prep.meta.dpi == (150, 300)
    meta = metadata_out.for_output(prep.meta, prep.size, (H * 4, W * 4), "PatchScaler test")
    out = Image.open(io.BytesIO(imageio.encode(Image.new("RGB", (H * 4, W * 4)), "JPEG", 90, meta)))
    exif = out.getexif()
    assert exif[0x0112] == 1 and exif[0x010F] == "Canon" and exif[0x000B] == "PatchScaler test"
    assert exif.get_ifd(0x8769)[0xA002] == H * 4
    assert out.info["dpi"] == pytest.approx((600, 1200))
