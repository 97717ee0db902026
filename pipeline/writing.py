"""A photo's output, the same in both engines: its name, encoding and atomic write with its
manifest row (built here and nowhere else), the row of a photo that failed or was not read,
and its difficulty map for the report."""
from __future__ import annotations

import io
import json
import logging
import time

import numpy as np

from patchscaler import imageio, metadata_out

from storage import StorageError, Store

from .listing import UnsafePath
from .manifest import ManifestRow, maps_dir, remove_row, row_key, write_row
from .naming import OutputCollision, check_output_name, output_relpath
from .options import UpscaleOptions

log = logging.getLogger("patchscaler")


def open_dest(opts: UpscaleOptions) -> Store:
    return Store(opts.dst, opts.dst_options, opts.storage_retry)


def error_text(err: Exception) -> str:
    """A failed photo's error, as its row gives it: what kind of failure, then the message."""
    if isinstance(err, StorageError):
        return str(err)
    kind = "unsafe path" if isinstance(err, UnsafePath) else (
        "bad image" if isinstance(err, imageio.BadImage) else (
            "output name collision" if isinstance(err, OutputCollision) else type(err).__name__))
    return f"{kind}: {err}"


def failed_status(err: Exception) -> str:
    """A failed row's status: "interrupted" when the storage stopped the photo (not its fault:
    the run stops on it), else "error"."""
    return "interrupted" if isinstance(err, StorageError) else "error"


def made_by(model) -> str:
    """What an output says made it (EXIF ProcessingSoftware): the package and the model."""
    from patchscaler import __version__
    return f"PatchScaler {__version__} (model {model.cfg.version})"


def write_photo(dst: Store, opts: UpscaleOptions, rel: str, photo, naming: dict | None, model) -> ManifestRow:
    """Name, encode and write a photo's output (`photo`: patchscaler.photo.Photo, its image and
    what its pieces add up to), its manifest row and its difficulty map: the one place an
    output is written, in both engines. The row goes first: a run killed between the two leaves
    an ok row without its output, which a re-run redoes (no output is ever written twice) and
    the next run's recovery marks `interrupted`. If the output write fails, the caller's error
    row replaces the ok row."""
    head, image, s, naming = photo.header, photo.image, photo.seconds, naming or {}
    notes = [*head.notes, *([f"redone: {naming['redo']}"] if naming.get("redo") else [])]
    row = ManifestRow(run_id=opts.run_id, input=rel, notes="; ".join(notes),
                      width=head.size[0], height=head.size[1], out_width=image.width, out_height=image.height,
                      sec_decode=s.get("decode", 0.0), sec_grm=s.get("grm", 0.0), sec_dit=s.get("dit", 0.0),
                      sec_stitch=s.get("stitch", 0.0), model_version=model.cfg.version, seed=opts.seed,
                      outscale=float(opts.outscale or model.cfg.grm.scale), pieces=photo.pieces,
                      input_sig=naming.get("sig", ""), settings=opts.settings)
    row.set_groups(photo.group_counts)
    t = time.perf_counter()
    fmt = imageio.output_format(head.format, head.mode, head.alpha, opts.out_format)
    out_rel = check_output_name(rel, output_relpath(rel, fmt, naming.get("keep_ext", False)), naming)
    meta = metadata_out.for_output(head.meta, head.size, image.size, made_by(model))
    lost = metadata_out.not_kept(meta, fmt)
    if lost:
        row.notes = "; ".join([*notes, f"not kept in {fmt}: {', '.join(lost)}"])
        warn_once(opts.run_id, fmt, lost)
    data = imageio.encode(image, fmt, opts.quality, meta)
    row.output, row.sec_write = out_rel, time.perf_counter() - t
    write_row(dst, row)
    try:
        dst.write_atomic(out_rel, data)
    except StorageError:
        remove_row(dst, opts.run_id, rel)   # its output is nothing: so is its record
        raise
    del data
    _write_map(dst, opts, rel, photo.groups, head.size, model)
    return row


_warned: set[tuple[str, str, str]] = set()


def warn_once(run_id: str, fmt: str, lost: list[str]) -> None:
    """One warning per run, kind of metadata and output format (in each process that writes):
    the rows say it per photo."""
    new = [x for x in lost if (run_id, fmt, x) not in _warned]
    if new:
        _warned.update((run_id, fmt, x) for x in new)
        log.warning("%s outputs cannot hold the inputs' %s: left out (each photo's manifest row says so)",
                    fmt, ", ".join(new))


def write_error(dst: Store, opts: UpscaleOptions, rel: str, err: Exception | str, version: str = "",
                naming: dict | None = None) -> ManifestRow:
    """The image's error row (err: the exception, or the text an earlier stage gave)."""
    text = err if isinstance(err, str) else error_text(err)
    row = ManifestRow(run_id=opts.run_id, input=rel, status="error", error=text, model_version=version,
                      seed=opts.seed, input_sig=(naming or {}).get("sig", ""), settings=opts.settings)
    write_row(dst, row)
    return row


def write_skipped(work) -> list[ManifestRow]:
    """A `skipped` row for every listed entry of the worklist that is not read (its reason in
    `error`), and for every input still bad since an earlier run."""
    opts, rows = work.opts, []
    for rel, reason in [*work.skipped, *sorted(work.still_bad.items())]:
        rows.append(ManifestRow(run_id=opts.run_id, input=rel, status="skipped", error=reason, seed=opts.seed,
                                input_sig=work.sigs.get(rel, ""), settings=opts.settings))
        write_row(work.dst, rows[-1])
    return rows


def stopped_row(opts: UpscaleOptions, rel: str, text: str) -> ManifestRow:
    """The row of a photo the storage stopped (status "interrupted", failed_status): not
    recorded (the storage is down) and not a failure of the photo; the driver ends the run on
    it (exit 4) and the next run redoes the photo."""
    return ManifestRow(run_id=opts.run_id, input=rel, status="interrupted", error=text)


def _write_map(dst: Store, opts: UpscaleOptions, rel: str, owned: list, size: tuple[int, int], model) -> None:
    """The photo's difficulty map for the report: one pixel per patch of its grid, the
    patch's group (255: none), with the grid's geometry in the PNG's text. `owned`: per
    piece, (2, n) whole-grid indices and groups (photo.PieceDone.groups)."""
    from PIL import Image, PngImagePlugin

    from patchscaler import pgs
    from patchscaler.pieces import latent_per_lr
    try:
        cfg, r = model.cfg, latent_per_lr(model.cfg)
        grid = pgs.make_grid(round(size[1] * r), round(size[0] * r), cfg.pgs.patch_size, cfg.pgs.overlap)
        ny, nx = (len(a) for a in grid.axes)
        m = np.full(ny * nx, 255, np.uint8)
        for a in owned:
            a = np.asarray(a)
            m[a[0]] = a[1]
        info = PngImagePlugin.PngInfo()
        info.add_text("grid", json.dumps({"latent": [grid.height, grid.width], "patch": grid.patch,
                                          "overlap": grid.overlap}))
        buf = io.BytesIO()
        Image.fromarray(m.reshape(ny, nx)).save(buf, "PNG", pnginfo=info)
        dst.write_atomic(f"{maps_dir(opts.run_id)}/{row_key(rel)}.png", buf.getvalue())
    except Exception as e:   # the map is for the report only: never fails the photo
        log.debug("difficulty map of %s not written: %s", rel, e)
