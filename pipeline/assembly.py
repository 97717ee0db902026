"""Putting a photo that was cut into several pieces back together (the Ray engine: its pieces
are separate rows, finished by any stitcher). Each finished piece goes to scratch under DST
(lossless PNG and its patches' groups); `PieceLedger`, one Ray actor of the run, tells the
stitcher that brings a photo's last piece that it is the one to assemble; that stitcher puts
the output together one piece at a time, writes it with its row and removes the scratch.
(The in-process engine keeps a photo's pieces in memory: flow.run_image.)"""
from __future__ import annotations

import contextlib
import io

import numpy as np

from patchscaler import imageio
from patchscaler.deep import open_png
from patchscaler.pieces import Piece, output_box, output_size

from storage import StorageError, Store

from .manifest import ManifestRow, parts_dir, row_key
from .options import UpscaleOptions
from .writing import error_text, write_error, write_map, write_ok


class PieceLedger:
    """A Ray actor (num_cpus=0) of the run: the pieces of each photo finished so far."""

    def __init__(self):
        self.pieces: dict[str, dict[int, dict]] = {}

    def piece_done(self, key: str, index: int, count: int, info: dict) -> list[dict] | None:
        """Record a photo's finished (or failed) piece; the caller that brings the last one
        gets every piece's info, in order, and puts the photo together. Exactly one does."""
        got = self.pieces.setdefault(key, {})
        got[index] = info
        if len(got) < count:
            return None
        del self.pieces[key]
        return [got[i] for i in range(count)]


def _scratch(opts: UpscaleOptions, rel: str) -> str:
    return f"{parts_dir(opts.run_id)}/{row_key(rel)}"


def part_row(opts: UpscaleOptions, rel: str) -> ManifestRow:
    """The row a piece that is not its photo's last leaves: a photo row's columns, status
    "part" (Ray Data blocks share one schema; the driver drops these)."""
    return ManifestRow(run_id=opts.run_id, input=rel, status="part")


def failed_piece(err: Exception | str) -> dict:
    """What the ledger keeps of a piece that failed: it fails its photo."""
    return {"ok": False, "error": err if isinstance(err, str) else error_text(err)}


def write_part(dst: Store, opts: UpscaleOptions, rel: str, piece: Piece, image, state, model) -> dict:
    """A finished piece's output to scratch under DST (lossless PNG, any mode), and what the
    photo's assembler needs of it."""
    from patchscaler.flow import owned_groups
    buf = io.BytesIO()
    image.save(buf, "PNG", compress_level=1)
    dst.write_atomic(f"{_scratch(opts, rel)}/{piece.index}.png", buf.getvalue())
    buf = io.BytesIO()
    np.save(buf, owned_groups(state).numpy())
    dst.write_atomic(f"{_scratch(opts, rel)}/{piece.index}.groups.npy", buf.getvalue())
    p = state.prep
    return {"ok": True, "error": "", "box": list(output_box(piece, model.cfg.grm.scale)),
            "counts": state.group_counts(model.cfg.pgs.num_groups), "seconds": dict(state.seconds),
            "mode": image.mode, "size": list(p.size), "format": p.format, "prep_mode": p.mode,
            "alpha": p.alpha is not None, "meta": p.meta, "notes": list(p.notes),
            "outscale": piece.outscale, "trace": None}


def assemble(dst: Store, opts: UpscaleOptions, rel: str, infos: list[dict], naming: dict | None, model) -> ManifestRow:
    """Put a photo together from its pieces in scratch (the output in 8 or 16 bits, one piece
    at a time), write it and its row, and remove the scratch. A failed piece fails the photo."""
    import torch

    from patchscaler.flow import Done
    d = _scratch(opts, rel)
    try:
        bad = [i for i in infos if not i["ok"]]
        if bad:
            return write_error(dst, opts, rel, bad[0]["error"], model.cfg.version, naming)
        first = infos[0]
        oh, ow = output_size(first["size"][1], first["size"][0], first["outscale"])
        image = imageio.new_image(first["mode"], (ow, oh))
        for k, info in enumerate(infos):
            image.paste(open_png(dst.read(f"{d}/{k}.png")), (info["box"][2], info["box"][0]))
        seconds: dict[str, float] = {}
        for info in infos:
            for key, v in info["seconds"].items():
                seconds[key] = seconds.get(key, 0.0) + v
        counts = [sum(c) for c in zip(*(i["counts"] for i in infos))]
        prep = imageio.Prepared(torch.empty(0), torch.empty(0) if first["alpha"] else None, first["prep_mode"],
                                first["format"], first["meta"], first["notes"], tuple(first["size"]))
        row = write_ok(dst, opts, rel, prep, image, Done(counts, seconds, len(infos)), naming, model)
        del image
        write_map(dst, opts, rel, [np.load(io.BytesIO(dst.read(f"{d}/{k}.groups.npy"))) for k in range(len(infos))],
                  first["size"], model)
        return row
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
