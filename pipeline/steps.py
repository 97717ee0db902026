"""The per-image steps around the method, the same in the in-process engine and in the Ray
actors: the job's model (with the run's overrides), decode/validate, the output and its
manifest row (built here and nowhere else). `ImageJob` bundles them for one run; it is
picklable, and the Ray graph hands one to each actor (which therefore never imports this
package)."""
from __future__ import annotations

import contextlib
import io
import json
import time
from dataclasses import dataclass

import numpy as np

from patchscaler import imageio, metadata
from patchscaler.config import override
from patchscaler.model import Runtime
from patchscaler.pieces import Piece, output_box, output_size, split

from storage import StorageDown, Store, options_for

from .options import UpscaleOptions
from .listing import UnsafePath, safe_relpath
from .manifest import ManifestRow, maps_dir, parts_dir, remove_row, row_key, write_row
from .naming import OutputCollision, check_output_name, output_relpath


# what each stage needs of the model (checkpoint.PARTS; the codec always comes)
STAGE_PARTS = {"grm": ("grm",), "dit": ("texture", "dit", "rtm"), "stitch": ()}


# GPUs each stage reserves from Ray (None: the in-process engine, no Ray)
def stage_gpus(opts: UpscaleOptions, stage: str | None) -> float | None:
    return {None: None, "grm": opts.grm_gpus, "dit": opts.dit_gpus, "stitch": 0.0}[stage]


def stage_device(opts: UpscaleOptions, stage: str | None) -> str:
    """The device of a stage (patchscaler.model.resolve_device: GPUs reserved -> cuda)."""
    from patchscaler.model import resolve_device
    return resolve_device(opts.device, stage_gpus(opts, stage))


def load_model(opts: UpscaleOptions, parts=None, stage: str | None = None):
    """The run's model with its overrides; `parts`: only these (None: all, in-process), on the
    device `stage` resolves to (None: the in-process engine's)."""
    from patchscaler.upscale import build_default
    rt = Runtime(device=stage_device(opts, stage), precision=opts.precision, max_batch=opts.max_batch,
                 compile=opts.compile)
    model = build_default(opts.checkpoint, parts)
    if opts.rtm and (parts is None or "rtm" in parts):
        from rtm_index.store import expectations, load_rtm
        model.rtm = load_rtm(opts.rtm, options_for(opts.rtm, opts.rtm_options), expect=expectations(model))
    p = model.cfg.pgs
    if opts.thresholds or opts.taus or opts.steps:
        # through config.override: validated, and every other PGS field (seam_shift) kept
        model.cfg = override(model.cfg, pgs={
            "thresholds": tuple(opts.thresholds or p.thresholds), "taus": tuple(opts.taus or p.taus),
            "steps": tuple(opts.steps or p.steps),
            "hard_groups": p.hard_groups if not opts.thresholds else (len(opts.thresholds),)})
    return model.configure(rt)


def model_version(model) -> str:
    return model.cfg.version


def made_by(model) -> str:
    """What an output says made it (EXIF ProcessingSoftware): the package and the model."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        package = version("patchscaler")
    except PackageNotFoundError:   # run from a source tree that was never installed
        from patchscaler import __version__ as package
    return f"PatchScaler {package} (model {model_version(model)})"


def hard_groups(opts: UpscaleOptions, model) -> set[int]:
    """The groups the hard pool serves (UpscaleOptions.hard_groups)."""
    n = model.cfg.pgs.num_groups
    groups = opts.hard_groups or model.cfg.pgs.hard_groups
    bad = [g for g in groups if not 0 <= g < n]
    if bad:
        raise ValueError(f"hard groups {bad} do not exist: the model has groups 0..{n - 1}")
    return set(groups)


STORAGE_DOWN = "storage down:"   # an error row's text for a photo the storage stopped: not its fault


def error_text(err: Exception) -> str:
    if isinstance(err, StorageDown):
        return f"{STORAGE_DOWN} {err}"
    kind = "unsafe path" if isinstance(err, UnsafePath) else (
        "bad image" if isinstance(err, imageio.BadImage) else (
            "output name collision" if isinstance(err, OutputCollision) else type(err).__name__))
    return f"{kind}: {err}"


def record(dst: Store, row: ManifestRow) -> ManifestRow:
    write_row(dst, row)
    return row


def record_skipped(plan) -> list[ManifestRow]:
    """A `skipped` row for every listed entry that is not read (its reason in `error`), and for
    every input still bad since an earlier run."""
    return [record(plan.dst, ManifestRow(run_id=plan.opts.run_id, input=rel, status="skipped", error=reason,
                                         seed=plan.opts.seed, input_sig=plan.sigs.get(rel, ""),
                                         settings=plan.opts.settings))
            for rel, reason in [*plan.skipped, *sorted(plan.still_bad.items())]]


@dataclass
class ImageJob:
    """One run's steps for one image. `src`/`dst` default to the options' stores, opened
    lazily where the job is used (an actor opens its own)."""
    opts: UpscaleOptions
    src: Store | None = None
    dst: Store | None = None

    def __getstate__(self):
        return {"opts": self.opts, "src": None, "dst": None}

    def source(self) -> Store:
        if self.src is None:
            self.src = Store(self.opts.src, self.opts.src_options, self.opts.storage_retry)
        return self.src

    def dest(self) -> Store:
        if self.dst is None:
            self.dst = Store(self.opts.dst, self.opts.dst_options, self.opts.storage_retry)
        return self.dst

    error_text = staticmethod(error_text)

    def hard_groups(self, model) -> set[int]:
        return hard_groups(self.opts, model)

    def load_model(self, stage: str | None = None):
        """The model for one stage of STAGE_PARTS (None: the whole model, in-process), on the
        stage's device."""
        return load_model(self.opts, None if stage is None else STAGE_PARTS[stage], stage)

    def decode(self, rel: str, piece: Piece | None = None) -> tuple[imageio.Prepared, float]:
        """-> (Prepared, seconds) or raises BadImage / UnsafePath with a clear message. With a
        `piece` of several: only its crop is converted (its `size` is the whole image's)."""
        t = time.perf_counter()
        safe_relpath(rel)
        region = None if piece is None or piece.whole else piece.crop
        prep = imageio.decode(self.source().read(rel), self.opts.max_pixels, region)
        if piece is not None and piece.index > 0:   # the photo's metadata rides with its first piece only
            prep.meta = metadata.Metadata()
        if piece is not None and prep.size != (piece.width, piece.height):
            raise imageio.BadImage(f"decoded as {prep.size[0]}x{prep.size[1]}, not the "
                                   f"{piece.width}x{piece.height} its header gave")
        return prep, time.perf_counter() - t

    def write_ok(self, rel: str, prep: imageio.Prepared, image, done, naming: dict | None, model) -> ManifestRow:
        """Name, encode and write one output and its manifest row (`done`: flow.Done, what the
        image's pieces add up to). The row goes first: a run killed between the two leaves an ok
        row without its output, which a re-run redoes (no output is ever written twice) and the
        next run's recovery marks `interrupted`. If the output write fails, the caller's error
        row replaces the ok row."""
        opts, s = self.opts, done.seconds
        notes = [*prep.notes, *([f"redone: {naming['redo']}"] if (naming or {}).get("redo") else [])]
        row = ManifestRow(run_id=opts.run_id, input=rel, notes="; ".join(notes),
                          width=prep.size[0], height=prep.size[1], out_width=image.width, out_height=image.height,
                          sec_decode=s.get("decode", 0.0), sec_grm=s.get("grm", 0.0), sec_dit=s.get("dit", 0.0),
                          sec_stitch=s.get("stitch", 0.0), model_version=model_version(model), seed=opts.seed,
                          outscale=float(opts.outscale or model.cfg.grm.scale), pieces=done.pieces,
                          input_sig=(naming or {}).get("sig", ""), settings=opts.settings)
        row.set_groups(done.group_counts)
        t = time.perf_counter()
        fmt = imageio.output_format(prep.format, prep.mode, prep.alpha is not None, opts.out_format)
        out_rel = check_output_name(rel, output_relpath(rel, fmt, (naming or {}).get("keep_ext", False)), naming)
        meta = metadata.for_output(prep.meta, prep.size, image.size, made_by(model))
        data = imageio.encode(image, fmt, opts.quality, meta)
        row.output, row.sec_write = out_rel, time.perf_counter() - t
        write_row(self.dest(), row)
        try:
            self.dest().write_atomic(out_rel, data)
        except StorageDown:
            remove_row(self.dest(), opts.run_id, rel)   # its output is nothing: so is its record
            raise
        return row

    # --- pieces (patchscaler/pieces.py) ---------------------------------------------------
    def pieces(self, rel: str, cfg) -> list[Piece]:
        """The pieces of an input, from its header (the first MiB; all of it if that is not
        enough); BadImage / UnsafePath if it cannot be upscaled."""
        safe_relpath(rel)
        head = self.source().read_head(rel, 1 << 20)
        try:
            w, h = imageio.probe(head, self.opts.max_pixels)
        except imageio.BadImage:
            if len(head) < 1 << 20:
                raise
            w, h = imageio.probe(self.source().read(rel), self.opts.max_pixels)
        return split(h, w, cfg, self.opts.piece_size, self.opts.outscale or cfg.grm.scale)

    def _parts_dir(self, rel: str) -> str:
        return f"{parts_dir(self.opts.run_id)}/{row_key(rel)}"

    def write_part(self, rel: str, piece: Piece, image, state, model) -> dict:
        """A finished piece's output to scratch under DST (lossless PNG, any mode), and what the
        photo's assembler needs of it."""
        buf = io.BytesIO()
        image.save(buf, "PNG", compress_level=1)
        self.dest().write_atomic(f"{self._parts_dir(rel)}/{piece.index}.png", buf.getvalue())
        from patchscaler.flow import owned_groups
        buf = io.BytesIO()
        np.save(buf, owned_groups(state).numpy())
        self.dest().write_atomic(f"{self._parts_dir(rel)}/{piece.index}.groups.npy", buf.getvalue())
        p = state.prep
        return {"ok": True, "error": "", "box": list(output_box(piece, model.cfg.grm.scale)),
                "counts": state.group_counts(model.cfg.pgs.num_groups), "seconds": dict(state.seconds),
                "mode": image.mode, "size": list(p.size), "format": p.format, "prep_mode": p.mode,
                "alpha": p.alpha is not None, "meta": p.meta, "notes": list(p.notes),
                "outscale": piece.outscale, "trace": None}

    def assemble(self, rel: str, infos: list[dict], naming: dict | None, model) -> ManifestRow:
        """Put a photo together from its pieces in scratch (the output in 8 or 16 bits, one piece
        at a time), write it and its row, and remove the scratch. A failed piece fails the photo."""
        from PIL import Image

        from patchscaler.flow import Done
        d = self._parts_dir(rel)
        try:
            bad = [i for i in infos if not i["ok"]]
            if bad:
                return self.write_error(rel, bad[0]["error"], model_version(model), naming)
            first = infos[0]
            oh, ow = output_size(first["size"][1], first["size"][0], first["outscale"])
            image = Image.new(first["mode"], (ow, oh))
            for k, info in enumerate(infos):
                with Image.open(io.BytesIO(self.dest().read(f"{d}/{k}.png"))) as part:
                    image.paste(part, (info["box"][2], info["box"][0]))
            seconds: dict[str, float] = {}
            for info in infos:
                for key, v in info["seconds"].items():
                    seconds[key] = seconds.get(key, 0.0) + v
            counts = [sum(c) for c in zip(*(i["counts"] for i in infos))]
            import torch
            prep = imageio.Prepared(torch.empty(0), torch.empty(0) if first["alpha"] else None, first["prep_mode"],
                                    first["format"], first["meta"], first["notes"], tuple(first["size"]))
            row = self.write_ok(rel, prep, image, Done(counts, seconds, len(infos)), naming, model)
            del image
            self.write_map(rel, [np.load(io.BytesIO(self.dest().read(f"{d}/{k}.groups.npy")))
                                 for k in range(len(infos))], first["size"], model)
            return row
        except StorageDown:
            raise   # not the photo's fault: the run stops, and the next run redoes the photo
        except Exception as e:
            return self.write_error(rel, e, model_version(model), naming)
        finally:
            self.remove_parts(rel)

    @staticmethod
    def storage_down(error: str) -> bool:
        """An error text that says the storage stopped the photo (error_text of StorageDown)."""
        return error.startswith(STORAGE_DOWN)

    def stopped_row(self, rel: str, text: str) -> ManifestRow:
        """The row of a photo the storage stopped (its error begins with STORAGE_DOWN): not
        recorded (the storage is down) and not a failure of the photo; the driver ends the run
        on it (exit 4) and the next run redoes the photo."""
        return ManifestRow(run_id=self.opts.run_id, input=rel, status="interrupted", error=text)

    def part_row(self, rel: str) -> ManifestRow:
        """The row a piece that is not its photo's last leaves: a photo row's columns, status
        "part" (Ray Data blocks share one schema; the driver drops these)."""
        return ManifestRow(run_id=self.opts.run_id, input=rel, status="part")

    def remove_parts(self, rel: str) -> None:
        d = self.dest().full(self._parts_dir(rel))
        with contextlib.suppress(FileNotFoundError, OSError):
            self.dest().fs.rm(d, recursive=True)

    def write_map(self, rel: str, owned: list, size: tuple[int, int], model) -> None:
        """The photo's difficulty map for the report: one pixel per patch of its grid, the
        patch's group (255: none), with the grid's geometry in the PNG's text. `owned`: per
        piece, (2, n) whole-grid indices and groups (flow.owned_groups)."""
        from PIL import Image, PngImagePlugin

        from patchscaler import pgs
        try:
            cfg, r = model.cfg, model.cfg.grm.scale / model.cfg.codec.factor
            grid = pgs.make_grid(round(size[1] * r), round(size[0] * r), cfg.pgs.patch_size, cfg.pgs.overlap)
            ph, pw = grid.padded
            ny = len(pgs._axis_positions(ph, grid.patch, grid.overlap))
            nx = len(pgs._axis_positions(pw, grid.patch, grid.overlap))
            m = np.full(ny * nx, 255, np.uint8)
            for a in owned:
                a = np.asarray(a)
                m[a[0]] = a[1]
            info = PngImagePlugin.PngInfo()
            info.add_text("grid", json.dumps({"latent": [grid.height, grid.width], "patch": grid.patch,
                                              "overlap": grid.overlap}))
            buf = io.BytesIO()
            Image.fromarray(m.reshape(ny, nx)).save(buf, "PNG", pnginfo=info)
            self.dest().write_atomic(f"{maps_dir(self.opts.run_id)}/{row_key(rel)}.png", buf.getvalue())
        except Exception as e:   # the map is for the report only: never fails the photo
            import logging
            logging.getLogger("patchscaler").debug("difficulty map of %s not written: %s", rel, e)

    def write_error(self, rel: str, err: Exception | str, version: str = "", naming: dict | None = None) -> ManifestRow:
        """The image's error row (err: the exception, or the text an earlier stage gave)."""
        text = err if isinstance(err, str) else error_text(err)
        return record(self.dest(), ManifestRow(run_id=self.opts.run_id, input=rel, status="error", error=text,
                                               model_version=version, seed=self.opts.seed,
                                               input_sig=(naming or {}).get("sig", ""), settings=self.opts.settings))
