"""A photo's input, the same in both engines: reading its header and cutting it into pieces
(patchscaler/pieces.py: a photo that fits is one piece, a large one several), and reading and
decoding its bytes (a piece's crop only). Each raises BadImage or UnsafePath, with a clear
message, for a photo that cannot be upscaled, and StorageError when the storage stays down."""
from __future__ import annotations

import time

from patchscaler import imageio, metadata
from patchscaler.pieces import Piece, split

from storage import Store

from .listing import safe_relpath
from .options import UpscaleOptions

HEADER_BYTES = 1 << 20        # what is read of a photo to know its size: its header, almost always
FIRST_HEADER_BYTES = 1 << 16  # where most headers end (a large EXIF block does not): the in-process
                              # engine's ETA (local.py) reads this much first


def open_source(opts: UpscaleOptions) -> Store:
    return Store(opts.src, opts.src_options, opts.storage_retry)


def cut(src: Store, rel: str, opts: UpscaleOptions, cfg) -> list[Piece]:
    """The pieces of an input, from its header (the first MiB; all of it if that is not
    enough)."""
    safe_relpath(rel)
    head = src.read_head(rel, HEADER_BYTES)
    try:
        w, h = imageio.probe(head, opts.max_pixels)
    except imageio.BadImage:
        if len(head) < HEADER_BYTES:
            raise
        w, h = imageio.probe(src.read(rel), opts.max_pixels)
    return split(h, w, cfg, opts.piece_size, opts.outscale or cfg.grm.scale)


def decode(src: Store, rel: str, opts: UpscaleOptions, piece: Piece | None = None) -> tuple[imageio.Prepared, float]:
    """-> (Prepared, seconds). With a `piece` of several: only its crop is converted (its
    `size` is the whole image's)."""
    t = time.perf_counter()
    safe_relpath(rel)
    region = None if piece is None or piece.whole else piece.crop
    prep = imageio.decode(src.read(rel), opts.max_pixels, region)
    if piece is not None and piece.index > 0:   # the photo's metadata rides with its first piece only
        prep.meta = metadata.Metadata()
    if piece is not None and prep.size != (piece.width, piece.height):
        raise imageio.BadImage(f"decoded as {prep.size[0]}x{prep.size[1]}, not the "
                               f"{piece.width}x{piece.height} its header gave")
    return prep, time.perf_counter() - t
