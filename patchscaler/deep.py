"""16-bit RGB and RGBA photos (archive scans), which Pillow cannot hold: it reads them as 8 bits.

Their pixels are read by libraries that keep all 16 bits (imagecodecs' libpng for PNG, tifffile
for TIFF) and travel as a `DeepImage`, a uint16 array. The output's pixels are written the same
way; its metadata is written by Pillow as for any photo (metadata_out.save_options) and moved into
the 16-bit file: a PNG takes the chunks of a 1x1 PNG Pillow writes with the same metadata, a TIFF
is Pillow's 8-bit TIFF of one row of the photo with its sizes, BitsPerSample and one strip made
the 16-bit photo's."""
from __future__ import annotations

import io
import struct

import numpy as np

# what EXIF orientation N does to the pixels, as ImageOps.exif_transpose does it
_ORIENT = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1),
           7: lambda a: np.rot90(a, 2).transpose(1, 0, 2), 8: lambda a: np.rot90(a, 1)}


def is_deep(im, data: bytes) -> bool:
    """Whether an opened image is 16-bit RGB or RGBA (which Pillow would read as 8 bits)."""
    if im.format == "PNG":
        return data[12:16] == b"IHDR" and data[24] == 16 and data[25] in (2, 6)
    if im.format == "TIFF":
        bits = im.tag_v2.get(258)
        photometric = im.tag_v2.get(262)
        return (isinstance(bits, tuple) and len(bits) in (3, 4) and all(b == 16 for b in bits)
                and photometric == 2 and im.tag_v2.get(339, 1) in (1, (1,) * len(bits)))
    return False


def read_array(data: bytes, fmt: str) -> np.ndarray:
    """The 16-bit pixels, (H, W, 3 or 4) uint16, as stored (orientation not applied)."""
    if fmt == "PNG":
        import imagecodecs
        arr = imagecodecs.png_decode(data)
    else:
        import tifffile
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages[0]
            arr = page.asarray()
            if page.planarconfig == 2 and arr.ndim == 3 and arr.shape[0] in (3, 4):
                arr = np.moveaxis(arr, 0, -1)
    if arr.dtype != np.uint16 or arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise ValueError(f"16-bit RGB expected, read {arr.dtype} {arr.shape}")
    return arr


def orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    return np.ascontiguousarray(_ORIENT[orientation](arr)) if orientation in _ORIENT else arr


class DeepImage:
    """A 16-bit RGB or RGBA image: `array` (H, W, C) uint16; the few things the writers ask of
    a PIL image (size, mode, paste, save as PNG)."""

    def __init__(self, array: np.ndarray):
        self.array = array

    @classmethod
    def new(cls, mode: str, size: tuple[int, int]) -> DeepImage:
        return cls(np.zeros((size[1], size[0], 4 if mode.startswith("RGBA") else 3), np.uint16))

    @property
    def mode(self) -> str:
        return "RGBA;16" if self.array.shape[-1] == 4 else "RGB;16"

    @property
    def size(self) -> tuple[int, int]:
        return self.array.shape[1], self.array.shape[0]

    @property
    def width(self) -> int:
        return self.array.shape[1]

    @property
    def height(self) -> int:
        return self.array.shape[0]

    def paste(self, part: DeepImage, xy: tuple[int, int]) -> None:
        x, y = xy
        self.array[y:y + part.height, x:x + part.width] = part.array

    def resize(self, size: tuple[int, int], resample, box) -> DeepImage:
        """Pillow's resize (same filter, same box), per channel in float: all 16 bits kept."""
        from PIL import Image
        planes = [np.asarray(Image.fromarray(self.array[..., c].astype(np.float32), "F").resize(size, resample, box=box))
                  for c in range(self.array.shape[-1])]
        return DeepImage((np.clip(np.stack(planes, -1), 0, 65535) + 0.5).astype(np.uint16))

    def save(self, fp, format: str = "PNG", compress_level: int = 6) -> None:   # noqa: A002 (PIL's name)
        import imagecodecs
        fp.write(imagecodecs.png_encode(self.array, level=compress_level))


def open_png(data: bytes):
    """A PNG written by DeepImage.save or Pillow (scratch pieces): a DeepImage if it is 16-bit RGB(A)."""
    from PIL import Image
    im = Image.open(io.BytesIO(data))
    if is_deep(im, data):
        return DeepImage(read_array(data, "PNG"))
    im.load()
    return im


# --- writing --------------------------------------------------------------------------------

def _chunks(png: bytes):
    pos = 8
    while pos < len(png):
        n = struct.unpack(">I", png[pos:pos + 4])[0]
        yield png[pos + 4:pos + 8], png[pos:pos + 12 + n]
        pos += 12 + n


def encode_png(array: np.ndarray, meta_png: bytes, level: int = 6) -> bytes:
    """A 16-bit PNG of `array` with every ancillary chunk of `meta_png` (a PNG Pillow wrote with
    the photo's metadata), placed after IHDR, where each of them may stand."""
    import imagecodecs
    pixels = imagecodecs.png_encode(array, level=level)
    ancillary = b"".join(c for cid, c in _chunks(meta_png) if cid not in (b"IHDR", b"IDAT", b"IEND", b"PLTE"))
    end = 8 + 12 + struct.unpack(">I", pixels[8:12])[0]
    return pixels[:end] + ancillary + pixels[end:]


def encode_tiff(array: np.ndarray, tiff8: bytes) -> bytes:
    """`tiff8`: Pillow's uncompressed 8-bit TIFF of one row of the photo's width and channels,
    with the photo's metadata (one strip, the pixel data last). Returns it made the photo's:
    BitsPerSample 16, ImageLength and RowsPerStrip its height, the strip `array` (so no full-size
    8-bit copy is ever made)."""
    order = {b"II": "<", b"MM": ">"}[tiff8[:2]]
    u16, u32 = order + "H", order + "I"
    ifd = struct.unpack(u32, tiff8[4:8])[0]
    entries = {}
    for k in range(struct.unpack(u16, tiff8[ifd:ifd + 2])[0]):
        at = ifd + 2 + 12 * k
        tag, typ, n = struct.unpack(order + "HHI", tiff8[at:at + 8])
        entries[tag] = (at, typ, n)
    if entries[273][2] != 1 or entries[279][2] != 1:
        raise ValueError("expected one strip")
    out = bytearray(tiff8)

    def inline(tag):
        at, typ, _ = entries[tag]
        return struct.unpack(u32 if typ == 4 else u16, tiff8[at + 8:at + (12 if typ == 4 else 10)])[0]

    def set_long(tag, value):   # as one LONG: a SHORT may not hold the 16-bit photo's value
        struct.pack_into(order + "HII", out, entries[tag][0] + 2, 4, 1, value)

    at, _, n = entries[258]
    where = struct.unpack(u32, tiff8[at + 8:at + 12])[0] if n * 2 > 4 else at + 8
    for k in range(n):
        struct.pack_into(u16, out, where + 2 * k, 16)
    strip = inline(273)
    if strip + inline(279) != len(tiff8):
        raise ValueError("expected the 8-bit strip at the end of the file")
    pixels = array.astype(order + "u2", copy=False).tobytes()
    set_long(257, array.shape[0])
    set_long(278, array.shape[0])
    set_long(279, len(pixels))
    del out[strip:]
    return b"".join((out, pixels))
