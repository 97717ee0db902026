"""A photo through the method: the photo plan, declared once, and the one assembler of a
photo's output. Every photo, in both engines, goes:

    pieces      its size -> its pieces (pieces.split; one when it fits)
    for each piece:
      GRM       the piece's crop -> coarse latent, Qmap, groups            flow.begin
      refine    pool by pool, in `flow.pools` order: the hard groups first  flow.refine
      finish    stitch, decode, fuse, colour fix, alpha                    flow.finish
      add       the piece's output into its photo's                        Photo.add
    write       the photo's output and its manifest row                    (the caller: pipeline/writing.py)

`run_image` is the plan in one process (the in-process engine, `patchscaler.upscale`). The Ray
engine (pipeline/graph.py) makes each step a stage, one Patch-DiT stage per pool in the same
order; its stitcher of a photo's last piece fills the photo's `Photo` from the pieces kept in
scratch (pipeline/assembly.py), so a photo is put together by this code in both engines."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from PIL import Image

from . import flow, imageio, metadata, pieces
from .model import PatchScaler


@dataclass
class Header:
    """What a photo's output needs of its input besides the pixels: its size, format and mode
    (the output's format), whether it had alpha, its tags and the decoder's notes."""
    size: tuple[int, int]
    format: str | None
    mode: str
    alpha: bool
    meta: metadata.Metadata
    notes: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, prep: imageio.Prepared) -> "Header":
        return cls(tuple(prep.size), prep.format, prep.mode, prep.alpha is not None, prep.meta, list(prep.notes))


@dataclass
class PieceDone:
    """What a finished piece adds to its photo besides its image: its patches per group, its
    seconds per step, and the whole-grid index and group of each patch it owns ((2, n) int32,
    the difficulty map's)."""
    counts: list[int]
    seconds: dict[str, float]
    groups: torch.Tensor

    @classmethod
    def of(cls, state: flow.InFlight, num_groups: int) -> "PieceDone":
        c = state.coarse
        return cls(state.group_counts(num_groups), dict(state.seconds),
                   torch.stack([c.index[c.owned], c.groups[c.owned]]).int())


class Photo:
    """A photo's output put together from its pieces' outputs (each pasted at its output box:
    8 or 16 bits, whatever the pieces are), and what its pieces add up to: patches per group,
    seconds per step, pieces, and each piece's patch groups."""

    def __init__(self, header: Header, scale: int, num_groups: int, seconds: dict[str, float] | None = None):
        self.header, self.scale = header, scale
        self.image: Image.Image | None = None
        self.group_counts = [0] * num_groups
        self.seconds = dict(seconds or {})
        self.pieces = 0
        self.groups: list = []

    def add(self, piece: pieces.Piece, image: Image.Image, done: PieceDone) -> None:
        if piece.whole:
            self.image = image
        else:
            if self.image is None:
                w, h = self.header.size
                oh, ow = pieces.output_size(h, w, piece.outscale)
                self.image = imageio.new_image(image.mode, (ow, oh))
            y0, _, x0, _ = pieces.output_box(piece, self.scale)
            self.image.paste(image, (x0, y0))
        self.group_counts = [a + b for a, b in zip(self.group_counts, done.counts)]
        for k, v in done.seconds.items():
            self.seconds[k] = self.seconds.get(k, 0.0) + v
        self.pieces += 1
        self.groups.append(done.groups)


def run_piece(model: PatchScaler, prep: imageio.Prepared, piece: pieces.Piece | None, seed: int, hard=None,
              on_step: Callable[[str, flow.InFlight | None], None] | None = None,
              on_batch: Callable[[int, int], None] | None = None,
              on_tile: Callable[[int, int], None] | None = None) -> tuple[flow.InFlight, Image.Image]:
    """One piece's steps in one process (`prep`: the piece's crop; the whole image if `piece` is
    None): GRM, the pools in order, finish. `on_step(step, state)` as each step starts ("grm",
    each pool's name, "finish"; the state once there is one)."""
    step = on_step or (lambda name, state: None)
    step("grm", None)
    state = flow.begin(model, prep, piece, on_tile=on_tile)
    for pool, groups in flow.pools(model.cfg, hard):
        step(pool, state)
        flow.refine(model, state, seed, groups, on_batch)
    step("finish", state)
    return state, flow.finish(model, state)


def run_image(model: PatchScaler, prep: imageio.Prepared, seed: int = 0, piece_size: int = pieces.DEFAULT_PIECE,
              outscale: float | None = None, hard=None, seconds: dict[str, float] | None = None,
              on_piece: Callable[[pieces.Piece, str, flow.InFlight | None], None] | None = None,
              on_batch: Callable[[int, int], None] | None = None,
              on_tile: Callable[[int, int], None] | None = None) -> Photo:
    """The photo plan for a whole decoded photo, piece by piece: the memory is one piece's plus
    the output's. `on_piece(piece, step, state)` as each piece starts each step (run_piece);
    `seconds`: what came before (the decode)."""
    w, h = prep.size
    s = model.cfg.grm.scale
    photo = Photo(Header.of(prep), s, model.cfg.pgs.num_groups, seconds)
    for part in pieces.split(h, w, model.cfg, piece_size, float(outscale or s)):
        sub = prep if part.whole else flow.crop(prep, part.crop)
        on_step = None if on_piece is None else (lambda step, state, part=part: on_piece(part, step, state))
        state, out = run_piece(model, sub, part, seed, hard, on_step, on_batch, on_tile)
        photo.add(part, out, PieceDone.of(state, model.cfg.pgs.num_groups))
        del state, out
    return photo
