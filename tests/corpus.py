"""A corpus of real-world bad and odd inputs, each with what the job must do with it."""
import io
import struct
import zlib

import numpy as np
from PIL import Image, ImageCms

from helpers import encode, photo


def _png_with_size(w: int, h: int) -> bytes:
    """A valid small PNG whose header claims w x h (a decompression-bomb shape)."""
    data = bytearray(encode(Image.new("L", (8, 8))))
    ihdr = 8 + 8  # signature, then length + 'IHDR'
    data[ihdr:ihdr + 8] = struct.pack(">II", w, h)
    crc = zlib.crc32(bytes(data[12:ihdr + 13]))
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


def _animated(fmt: str) -> bytes:
    frames = [photo(20, 16, seed=i) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, format=fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


def corpus() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, expected: 'ok' or an error substring)."""
    good = photo(24, 20)
    exif = Image.Exif()
    exif[0x0112] = 6
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    pal = good.convert("P", palette=Image.ADAPTIVE)
    pal_t = pal.copy()
    pal_t.info["transparency"] = 0
    g16 = Image.fromarray((np.linspace(0, 65535, 20 * 24).reshape(20, 24)).astype(np.uint16))
    jpg = encode(photo(64, 64), "JPEG")
    return {
        "empty.jpg": (b"", "empty"),
        "truncated.jpg": (jpg[: len(jpg) // 3], "truncated"),
        "truncated.png": (encode(photo(64, 64))[:150], "truncated"),
        "text.png": (b"hello, I am a text file\n" * 10, "not an image"),
        "garbage_after_soi.jpg": (b"\xff\xd8\xff\xe0" + bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8)), "error"),
        "bomb.png": (_png_with_size(100_000, 100_000), "bomb"),
        "huge.png": (encode(Image.new("RGB", (1200, 1000), (10, 20, 30))), "too large"),
        "one_pixel.png": (encode(Image.new("RGB", (1, 1), (200, 30, 40))), "ok"),
        "odd_17x3.png": (encode(photo(17, 3)), "ok"),
        "grey16.png": (encode(g16), "ok"),
        "grey.jpg": (encode(good.convert("L"), "JPEG"), "ok"),
        "cmyk.jpg": (encode(good.convert("CMYK"), "JPEG"), "ok"),
        "palette.gif": (encode(pal, "GIF"), "ok"),
        "palette_transparent.png": (encode(pal_t), "ok"),
        "la.png": (encode(good.convert("LA")), "ok"),
        "rgba.png": (encode(good.convert("RGBA")), "ok"),
        "animated.gif": (_animated("GIF"), "ok"),
        "animated.webp": (_animated("WEBP"), "ok"),
        "exif_rotated.jpg": (encode(good, "JPEG", exif=exif.tobytes()), "ok"),
        "icc.jpg": (encode(good, "JPEG", icc_profile=icc), "ok"),
        "png_named.jpg": (encode(good), "ok"),
        "bitmap.bmp": (encode(good, "BMP"), "ok"),
        "scan.tif": (encode(good, "TIFF"), "ok"),
        "ünïcode name ñ.jpg": (encode(good, "JPEG"), "ok"),
        "sub dir/with space.png": (encode(photo(20, 20, seed=3)), "ok"),
    }
