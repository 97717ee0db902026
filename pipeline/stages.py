"""Thin Ray Data callables around the patchscaler stages. A row is one piece of one image
(patchscaler/pieces.py: a photo that fits is one piece, a large one several, each its own row,
so one photo's work spreads over every actor of a pool). No stage raises for a bad image: the
row carries `status="error"` and an `error` string to the writer, which records it in the
manifest.

Each is one step of the photo plan (patchscaler/photo.py) for one piece: the header split
(reading.cut), the GRM (flow.begin), one Patch-DiT pool (flow.refine with the pool's groups),
the stitch (flow.finish, then the photo's Photo and writing.write_photo; a photo of several
pieces is put together by assembly.py). Each takes the run's options
(pipeline.options.UpscaleOptions, handed in by the graph) and opens its own stores and model.

The rows between the stages are `PieceRow`s (their fields are the columns); StitchWrite emits
the photo's manifest row for the driver instead (`photo_row`, read back by `from_photo_row`).
Each stage tells the run's RunHub (actors/hub.py, if given) what it finished (pieces, or
patches per Patch-DiT batch), the seconds it spent (what `--pools auto` sizes the pools by)
and which piece it is working on (so a piece whose actor dies is reported with its stage).
"""
from __future__ import annotations

import dataclasses
import json
import os
import pickle
import time
from dataclasses import dataclass, replace

import torch

from patchscaler import flow
from patchscaler.photo import Header, Photo, PieceDone
from patchscaler.pieces import Piece
from actors.faults import maybe_die
from actors.hub import mark, peak, report
from storage import StorageError

from . import assembly, reading, writing
from .manifest import ManifestRow
from .run_model import load_model


@dataclass
class PieceRow:
    """A Ray Data row of the graph: one piece of one photo (before the header split, the photo:
    `piece` still ""). Its fields are the columns, in this order."""
    input: str              # the photo, relative to SRC
    naming: str             # JSON of its naming rules (pipeline.naming.naming_rules)
    piece: str = ""         # JSON of its pieces.Piece; "" before the split and when the photo could not be split
    status: str = "ok"      # ok, error, or "interrupted" when the storage stopped it
    error: str = ""
    state: bytes = b""      # the piece's `flow.InFlight`, pickled between our own stages of one job
    trace: str = "{}"       # JSON of which pool and node did what

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "PieceRow":
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls)})


def _rows(batch: dict) -> list[PieceRow]:
    """A Ray Data batch (columns) as rows."""
    return [PieceRow.from_dict({k: v[i] for k, v in batch.items()}) for i in range(len(batch["input"]))]


def _batch(rows: list[PieceRow]) -> dict:
    return _columns([r.to_dict() for r in rows])


def _columns(rows: list[dict]) -> dict:
    return {k: [r[k] for r in rows] for k in rows[0]}


def photo_row(r: ManifestRow, trace: str) -> dict:
    """What StitchWrite emits for a photo (a piece that did not finish its photo: a "part" row of
    the same columns, which the driver skips): its manifest row, group_counts as JSON, and its
    trace."""
    out = {k: v for k, v in r.__dict__.items() if k != "group_counts"}
    out["group_counts"] = json.dumps(r.group_counts)
    out["trace"] = trace
    return out


def from_photo_row(d: dict) -> dict:
    """The driver's reading of a `photo_row`: the manifest row's fields (group_counts a list)
    and its trace."""
    return {**d, "group_counts": json.loads(d["group_counts"])}


def _node() -> str:
    try:
        import ray
        return ray.get_runtime_context().get_node_id()[:12]
    except Exception:
        return "local"


def _threads():
    # fractional-CPU actors share cores: one intra-op thread each keeps them from thrashing
    torch.set_num_threads(max(1, int(os.environ.get("PATCHSCALER_THREADS", "1"))))


def _device(model) -> dict:
    """What this actor computes on: its resolved device, precision and the GPU ids Ray gave it."""
    try:
        import ray
        ids = [str(i) for i in ray.get_gpu_ids()]
    except Exception:
        ids = []
    return {"device": str(model.runtime.device), "precision": model.runtime.precision, "gpu_ids": ids}


def _index(row: PieceRow) -> int:
    return json.loads(row.piece)["index"] if row.piece else 0


def split_pieces(batch: dict, opts, cfg, hub=None) -> dict:
    """Read each photo's header (EXIF orientation, the pixel limit) and emit one row per piece.
    A task that reserves no CPU, not an actor (graph.py)."""
    src = reading.open_source(opts)
    out = []
    for photo in _rows(batch):
        try:
            parts = reading.cut(src, photo.input, opts, cfg)
        except Exception as e:
            out.append(replace(photo, status=writing.failed_status(e), error=writing.error_text(e)))
            report(hub, "pieces", done=1, total=1)     # done: photos whose header is read
            continue
        out += [replace(photo, piece=json.dumps(p.to_dict())) for p in parts]
        report(hub, "pieces", done=1, total=len(parts))
    return _batch(out)


class DecodeGRM:
    """Decode the piece's crop, run the GRM, pick and group its patches (flow.begin)."""

    def __init__(self, opts, pools: list[tuple[str, set[int]]], hub=None):
        _threads()
        self.opts, self.pools, self.hub = opts, pools, hub
        self.src = reading.open_source(opts)
        self.model = load_model(opts, "grm")
        self.calls = 0
        self.device = _device(self.model)

    def __call__(self, batch: dict) -> dict:
        t0 = time.perf_counter()
        [row] = _rows(batch)
        rel = row.input
        self.calls += 1
        mark(self.hub, "GRM", rel, _index(row))
        maybe_die("grm", self.calls, (rel,))
        trace = {"grm": _node(), "devices": {"grm": self.device}}
        if row.status != "ok":
            report(self.hub, "grm", done=1)
            return _batch([row])
        try:
            piece = Piece.from_dict(json.loads(row.piece))
            prep, t_dec = reading.decode(self.src, rel, self.opts, piece)
            state = flow.begin(self.model, prep, piece, {"decode": t_dec})
        except Exception as e:
            report(self.hub, "grm", done=1)
            return _batch([replace(row, status=writing.failed_status(e), error=writing.error_text(e),
                                   trace=json.dumps(trace))])
        for pool, groups in self.pools:   # each pool's patches to do
            report(self.hub, pool, total=sum(int((state.coarse.groups == g).sum()) for g in groups))
        report(self.hub, "grm", done=1, seconds=time.perf_counter() - t0)
        peak(self.hub, "GRM")
        return _batch([replace(row, state=pickle.dumps(state, protocol=5), trace=json.dumps(trace))])


class PatchDiTPool:
    """One Patch-DiT pool (flow.pools: its name and groups): refines the patches of its groups
    and passes the other groups through untouched. A call takes up to `dit_images` rows
    (pieces) and refines their patches of each group together (flow.refine): on a GPU a call
    should see many patches of one group, not one piece's handful. If that call fails, each
    piece is tried alone, so one bad piece costs one row. Reports patches done per batch."""

    def __init__(self, opts, pool: str, groups: set[int], hub=None):
        _threads()
        self.opts, self.pool, self.groups, self.hub = opts, pool, set(groups), hub
        self.model = load_model(opts, "dit")
        self.calls = 0
        self.device = _device(self.model)

    def _refine(self, states: list) -> None:
        done = 0

        def on_batch(group, n):
            nonlocal done
            done += n
            report(self.hub, self.pool, done=n)

        try:
            flow.refine(self.model, states, self.opts.seed, self.groups, on_batch)
        except Exception:
            report(self.hub, self.pool, done=-done)  # counted again when the pieces are retried
            raise

    def _failed(self, row: PieceRow, e: Exception) -> PieceRow:
        return replace(row, status="error", error=f"{type(e).__name__} in {self.pool} Patch-DiT: {e}", state=b"")

    def __call__(self, batch: dict) -> dict:
        t0 = time.perf_counter()
        rows = _rows(batch)
        self.calls += 1
        for r in rows:
            mark(self.hub, f"{self.pool} Patch-DiT", r.input, _index(r))
        maybe_die(self.pool, self.calls, [r.input for r in rows])
        out = list(rows)
        live = [i for i, r in enumerate(rows) if r.status == "ok"]
        try:
            states = {i: pickle.loads(rows[i].state) for i in live}
            self._refine([states[i] for i in live])
        except Exception:
            states = {}
            for i in live:  # one at a time: find the piece that fails, keep the others
                try:
                    states[i] = pickle.loads(rows[i].state)
                    self._refine([states[i]])
                except Exception as e:
                    planned = 0 if i not in states else sum(
                        len(idx) for _, idx in flow.group_batches(self.model, states[i].coarse.groups, self.groups))
                    report(self.hub, self.pool, done=planned)  # the piece's remaining patches end here
                    states.pop(i, None)
                    out[i] = self._failed(rows[i], e)
        node = _node()
        for i, state in states.items():
            trace = json.loads(rows[i].trace)
            trace.setdefault("images_per_call", {})[self.pool] = len(states)
            for g in self.groups:
                if bool((state.coarse.groups == g).any()):
                    trace.setdefault("groups", {})[str(g)] = [self.pool, node]
            trace.setdefault("actors", {})[self.pool] = f"{node}:{os.getpid()}"
            trace.setdefault("devices", {})[self.pool] = self.device
            out[i] = replace(rows[i], state=pickle.dumps(state, protocol=5), trace=json.dumps(trace))
        report(self.hub, self.pool, seconds=time.perf_counter() - t0)
        peak(self.hub, f"{self.pool} Patch-DiT")
        return _batch(out)


class StitchWrite:
    """Blend, decode, colour-fix (flow.finish), then the output and its manifest row
    (writing.write_photo); a piece of a larger photo is written to scratch, and the stitcher that
    finishes the photo's last piece, as the run's hub says, puts the photo together
    (assembly.assemble). Emits the photo's manifest row, or a "part" row for a piece that did
    not finish its photo."""

    def __init__(self, opts, hub=None):
        _threads()
        self.opts, self.hub = opts, hub
        self.dst = writing.open_dest(opts)
        self.model = load_model(opts, "stitch")
        self.device = _device(self.model)

    def __call__(self, batch: dict) -> dict:
        t0 = time.perf_counter()
        [row] = _rows(batch)
        rel = row.input
        mark(self.hub, "stitch", rel, _index(row))
        trace = json.loads(row.trace or "{}")
        trace.setdefault("devices", {})["stitch"] = self.device
        row = replace(row, trace=json.dumps(trace))
        piece = Piece.from_dict(json.loads(row.piece)) if row.piece else None
        try:
            r, trace = self._stitch(row, rel, piece)
        except StorageError as e:     # the run stops on this row (graph.py): nothing more is written
            r, trace = writing.stopped_row(self.opts, rel, writing.error_text(e)), row.trace
        if r is not None and r.status == "interrupted":
            report(self.hub, "stitch", done=1)
            return _columns([photo_row(r, trace)])
        mark(self.hub, None, rel, _index(row))
        report(self.hub, "stitch", done=1, seconds=time.perf_counter() - t0)
        peak(self.hub, "stitch")
        if r is None:   # the same columns as a photo's row (Ray Data blocks share one schema)
            r = assembly.part_row(self.opts, rel)
        else:
            report(self.hub, "photos", done=1)
        return _columns([photo_row(r, trace)])

    def _stitch(self, row: PieceRow, rel: str, piece) -> tuple[ManifestRow | None, str]:
        """(the photo's manifest row, None for a piece that did not finish its photo; the trace
        to emit with it: the piece's, or an assembled photo's of all its pieces)."""
        if row.status == "interrupted":    # the storage stopped it in an earlier stage
            return writing.stopped_row(self.opts, rel, row.error), row.trace
        naming = json.loads(row.naming)
        if piece is None or piece.whole:
            return self._whole(row, rel, naming), row.trace
        return self._piece(row, rel, piece, naming)

    def _whole(self, row: PieceRow, rel: str, naming: dict) -> ManifestRow:
        """A photo that is one piece: its output and row written here."""
        version = self.model.cfg.version
        if row.status != "ok":
            return writing.write_error(self.dst, self.opts, rel, row.error, version, naming)
        try:
            state: flow.InFlight = pickle.loads(row.state)
            cfg = self.model.cfg
            photo = Photo(Header.of(state.prep), cfg.grm.scale, cfg.pgs.num_groups)
            photo.add(state.piece, flow.finish(self.model, state), PieceDone.of(state, cfg.pgs.num_groups))
            return writing.write_photo(self.dst, self.opts, rel, photo, naming, self.model)
        except StorageError:
            raise
        except Exception as e:
            return writing.write_error(self.dst, self.opts, rel, e, version, naming)

    def _piece(self, row: PieceRow, rel: str, piece: Piece, naming: dict) -> tuple[ManifestRow | None, str]:
        """One piece of several: to scratch; the stitcher of the photo's last piece assembles it."""
        info = assembly.failed_piece(row.error)
        if row.status == "ok":
            try:
                state = pickle.loads(row.state)
                image = flow.finish(self.model, state)
                info = assembly.write_part(self.dst, self.opts, rel, piece, image, state, self.model)
            except StorageError:
                raise
            except Exception as e:
                info = assembly.failed_piece(e)
        info["trace"] = json.loads(row.trace or "{}")
        import ray
        # packed here, opened by the assembling stitcher only: the hub's process stays small
        packed = ray.get(self.hub.piece_done.remote(rel, piece.index, piece.count, pickle.dumps(info, protocol=5)))
        if packed is None:
            return None, row.trace
        infos = [pickle.loads(b) for b in packed]
        trace = json.dumps({"pieces": [i["trace"] for i in infos]})
        return assembly.assemble(self.dst, self.opts, rel, infos, naming, self.model), trace
