"""Putting a photo that was cut into several pieces back together (the Ray engine: its pieces
are separate rows, finished by any stitcher). Each finished piece goes to scratch under DST
(lossless PNG and its patches' groups); the run's hub (actors/hub.py) tells the stitcher that
brings a photo's last piece that it is the one to assemble; that stitcher puts
the output together one piece at a time in the photo's `Photo` (patchscaler/photo.py, the
assembler the in-process engine fills in memory), writes it with its row and removes the
scratch."""
from __future__ import annotations

import contextlib
import io

import numpy as np

from patchscaler.deep import open_png
from patchscaler.photo import Header, Photo, PieceDone
from patchscaler.pieces import Piece

from storage import StorageError, Store

from .manifest import ManifestRow, parts_dir, row_key
from .options import UpscaleOptions
from .writing import error_text, write_error, write_photo


def _scratch(opts: UpscaleOptions, rel: str) -> str:
    return f"{parts_dir(opts.run_id)}/{row_key(rel)}"


def part_row(opts: UpscaleOptions, rel: str) -> ManifestRow:
    """The row a piece that is not its photo's last leaves: a photo row's columns, status
    "part" (Ray Data blocks share one schema; the driver drops these)."""
    return ManifestRow(run_id=opts.run_id, input=rel, status="part")


def failed_piece(err: Exception | str) -> dict:
    """What the hub keeps of a piece that failed: it fails its photo."""
    return {"ok": False, "error": err if isinstance(err, str) else error_text(err)}


def write_part(dst: Store, opts: UpscaleOptions, rel: str, piece: Piece, image, state, model) -> dict:
    """A finished piece's output to scratch under DST (lossless PNG, any mode) with its patches'
    groups, and what the photo's assembler needs of it (the piece, what it adds to the photo;
    the photo's header rides with its first piece)."""
    done = PieceDone.of(state, model.cfg.pgs.num_groups)
    buf = io.BytesIO()
    image.save(buf, "PNG", compress_level=1)
    dst.write_atomic(f"{_scratch(opts, rel)}/{piece.index}.png", buf.getvalue())
    buf = io.BytesIO()
    np.save(buf, done.groups.numpy())
    dst.write_atomic(f"{_scratch(opts, rel)}/{piece.index}.groups.npy", buf.getvalue())
    return {"ok": True, "error": "", "piece": piece.to_dict(), "counts": done.counts, "seconds": done.seconds,
            "header": Header.of(state.prep) if piece.index == 0 else None, "trace": None}


def assemble(dst: Store, opts: UpscaleOptions, rel: str, infos: list[dict], naming: dict | None, model) -> ManifestRow:
    """Put a photo together from its pieces in scratch, one piece at a time, write it and its
    row, and remove the scratch. A failed piece fails the photo."""
    import torch
    d = _scratch(opts, rel)
    try:
        bad = [i for i in infos if not i["ok"]]
        if bad:
            return write_error(dst, opts, rel, bad[0]["error"], model.cfg.version, naming)
        photo = Photo(infos[0]["header"], model.cfg.grm.scale, model.cfg.pgs.num_groups)
        for k, info in enumerate(infos):
            groups = torch.from_numpy(np.load(io.BytesIO(dst.read(f"{d}/{k}.groups.npy"))))
            photo.add(Piece.from_dict(info["piece"]), open_png(dst.read(f"{d}/{k}.png")),
                      PieceDone(info["counts"], info["seconds"], groups))
        return write_photo(dst, opts, rel, photo, naming, model)
    except StorageError:
        raise   # not the photo's fault: the run stops, and the next run redoes the photo
    except Exception as e:
        return write_error(dst, opts, rel, e, model.cfg.version, naming)
    finally:
        remove_scratch(dst, opts, rel)


def remove_scratch(dst: Store, opts: UpscaleOptions, rel: str) -> None:
    """A photo's pieces in scratch (its photo written, or lost)."""
    with contextlib.suppress(FileNotFoundError, OSError):
        dst.fs.rm(dst.full(_scratch(opts, rel)), recursive=True)
