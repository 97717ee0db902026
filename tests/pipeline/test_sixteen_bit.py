"""16-bit RGB and RGBA masters stay 16-bit, end to end: read with all 16 bits (PNG and TIFF),
upscaled, written as 16-bit with their metadata, in both engines and through pieces; the low
byte of the output varies (not 8-bit values scaled up), and the two engines give the same bytes
(the Ray engine's, in pieces spread over its actors: tests/pipeline/test_pieces.py)."""
import json
import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import scan, write_scans

from patchscaler import deep, imageio

EXIFTOOL = shutil.which("exiftool")


def write_inputs(src, alpha=False):
    src.mkdir()
    return write_scans(src, alpha=alpha)


def read16(path) -> np.ndarray:
    return deep.read_array(path.read_bytes(), "PNG" if path.suffix == ".png" else "TIFF")


def test_a_16_bit_rgb_decode_keeps_every_bit_and_turns_like_pillow(tmp_path):
    import imagecodecs
    a = scan()
    prep = imageio.decode(imagecodecs.png_encode(a))
    assert prep.mode == "RGB16" and prep.rgb.dtype == torch.float32
    assert np.array_equal((prep.rgb[0].permute(1, 2, 0).numpy() * 65535).round().astype(np.uint16), a)
    # each EXIF orientation as Pillow applies it to 8-bit pixels
    eight = (a >> 8).astype(np.uint8)
    assert np.array_equal(deep.orient(eight, 1), eight)
    for o in range(2, 9):
        assert np.array_equal(deep.orient(eight, o), np.asarray(_pillow_orient(eight, o))), o


def _pillow_orient(arr, o):
    t = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
         5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
         8: Image.Transpose.ROTATE_90}[o]
    return Image.fromarray(arr).transpose(t)


@pytest.mark.parametrize("alpha", [False, True])
def test_16_bit_masters_come_out_16_bit_whole_and_in_pieces(checkpoint, tmp_path, alpha):
    from helpers import opts_for
    from pipeline.local import run_local
    write_inputs(tmp_path / "in", alpha)
    s = run_local(opts_for(tmp_path / "in", tmp_path / "whole", checkpoint, run_id="w"))
    assert s["failed"] == 0, s["errors"]
    p = run_local(opts_for(tmp_path / "in", tmp_path / "pieces", checkpoint, run_id="p", piece_size=24))
    assert p["failed"] == 0 and all(r["pieces"] > 1 for r in p["rows"])
    for name in ("scan.png", "scan.tif"):
        out = read16(tmp_path / "whole" / name)
        assert out.dtype == np.uint16 and out.shape == (128, 160, 4 if alpha else 3)
        assert len(np.unique(out[..., :3] & 0xFF)) > 200, "the low byte carries information"
        assert not np.all(out[..., :3] % 257 == 0), "not 8-bit values stretched to 16 bits"
        assert np.abs(read16(tmp_path / "pieces" / name).astype(int) - out.astype(int)).max() <= 1
    assert np.array_equal(read16(tmp_path / "whole" / "scan.png"), read16(tmp_path / "whole" / "scan.tif"))


@pytest.mark.skipif(EXIFTOOL is None, reason="exiftool is not installed (Debian: apt-get install -y libimage-exiftool-perl)")
def test_16_bit_outputs_say_16_bits_and_keep_their_tags(checkpoint, tmp_path):
    from helpers import opts_for
    from pipeline.local import run_local
    write_inputs(tmp_path / "in")
    for name in ("scan.png", "scan.tif"):
        subprocess.run([EXIFTOOL, "-q", "-overwrite_original", "-Artist=Zoë Ł", "-XMP-dc:Creator=Ada",
                        "-XResolution=600", "-YResolution=600", "-ResolutionUnit=inches", str(tmp_path / "in" / name)],
                       check=True)
    s = run_local(opts_for(tmp_path / "in", tmp_path / "out", checkpoint, run_id="t"))
    assert s["failed"] == 0, s["errors"]
    for name in ("scan.png", "scan.tif"):
        t = json.loads(subprocess.run([EXIFTOOL, "-j", "-G1", "-a", "-n", str(tmp_path / "out" / name)],
                                      check=True, capture_output=True, text=True).stdout)[0]
        bits = t.get("PNG:BitDepth") or t.get("IFD0:BitsPerSample")
        assert str(bits) in ("16", "16 16 16"), (name, bits)
        assert t["IFD0:Artist"] == "Zoë Ł" and t["XMP-dc:Creator"] == "Ada", name
        assert not [k for k in t if "Warning" in k], (name, {k: v for k, v in t.items() if "Warning" in k})
        assert t["IFD0:XResolution"] == 2400, name
