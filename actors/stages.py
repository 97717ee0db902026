"""Thin Ray Data callables around the patchscaler stages. Each handles one row per call
(`batch_size=1`; a row is one image) and never raises for a bad image: the row carries
`status="error"` and an `error` string to the writer, which records it in the manifest.

Row columns: input (str), naming (str: JSON of the input's naming plan, storage.name_plans),
status (str), error (str), state (bytes: the image's in-flight state, pickled between our own
stages of one job), trace (str: JSON of which pool and node did what). Each stage tells the
driver's ProgressHub (if given) what it finished: images, or patches per Patch-DiT batch.
"""
from __future__ import annotations

import json
import os
import pickle
import time

import torch


def _one(batch: dict) -> dict:
    return {k: v[0] for k, v in batch.items()}


def _out(row: dict) -> dict:
    return {k: [v] for k, v in row.items()}


def _node() -> str:
    try:
        import ray
        return ray.get_runtime_context().get_node_id()[:12]
    except Exception:
        return "local"


def _maybe_die(opts, stage: str, calls: int) -> None:
    marker = opts.chaos.get(stage)
    if marker and calls == 2 and not os.path.exists(marker):
        open(marker, "w").write(str(os.getpid()))
        os._exit(1)  # a real process death, mid-job, with an image in flight


def _threads(opts):
    # fractional-CPU actors share cores: one intra-op thread each keeps them from thrashing
    torch.set_num_threads(max(1, int(os.environ.get("PATCHSCALER_THREADS", "1"))))


class DecodeGRM:
    """Read bytes, decode/validate, run the GRM, cut and group patches."""

    def __init__(self, opts, hub=None):
        from pipeline import steps
        from pipeline.storage import Store
        _threads(opts)
        self.opts, self.hub = opts, hub
        self.src = Store(opts.src, opts.src_options)
        self.model = steps.load_model(opts)
        self.hard = set(self.model.cfg.pgs.hard_groups)
        self.calls = 0

    def __call__(self, batch: dict) -> dict:
        from patchscaler.upscale import grm_stage
        from pipeline import steps
        from pipeline.progress import report
        row = _one(batch)
        self.calls += 1
        _maybe_die(self.opts, "grm", self.calls)
        rel = row["input"]
        trace = {"grm": _node()}
        try:
            prep, t_dec = steps.decode_input(self.src, rel, self.opts)
            coarse = grm_stage(self.model, prep)
        except Exception as e:
            report(self.hub, "grm", done=1)
            return _out({"input": rel, "naming": row["naming"], "status": "error",
                         "error": steps.error_row(self.opts, rel, e).error, "state": b"", "trace": json.dumps(trace)})
        n_hard = sum(int((coarse.groups == g).sum()) for g in self.hard)
        report(self.hub, "hard", total=n_hard)
        report(self.hub, "easy", total=len(coarse.groups) - n_hard)
        report(self.hub, "grm", done=1)
        state = {"prep": prep, "coarse": coarse, "refined": coarse.patches.clone(),
                 "seconds": {"decode": t_dec, "grm": coarse.seconds, "dit": 0.0}}
        return _out({"input": rel, "naming": row["naming"], "status": "ok", "error": "",
                     "state": pickle.dumps(state, protocol=5), "trace": json.dumps(trace)})


class PatchDiTPool:
    """One Patch-DiT pool: refines the group batches of its groups (hard, or simple+medium)
    and passes the other groups through untouched. Reports patches done per batch."""

    def __init__(self, opts, pool: str, hub=None):
        from pipeline import steps
        _threads(opts)
        self.opts, self.pool, self.hub = opts, pool, hub
        self.model = steps.load_model(opts)
        hard = set(self.model.cfg.pgs.hard_groups)
        all_groups = set(range(self.model.cfg.pgs.num_groups))
        self.groups = hard if pool == "hard" else all_groups - hard
        self.calls = 0

    def __call__(self, batch: dict) -> dict:
        from patchscaler.upscale import group_batches, refine_stage
        from pipeline.progress import report
        row = _one(batch)
        self.calls += 1
        _maybe_die(self.opts, self.pool, self.calls)
        if row["status"] != "ok":
            return _out(row)
        trace = json.loads(row["trace"])
        planned, done = 0, 0   # this pool's patches of the image, and those refined so far
        try:
            state = pickle.loads(row["state"])
            coarse = state["coarse"]
            batches = [(g, idx) for g, idx in group_batches(self.model, coarse.groups) if g in self.groups]
            planned = sum(len(idx) for _, idx in batches)
            t = time.perf_counter()
            for group, idx in batches:
                state["refined"][idx] = refine_stage(self.model, coarse.patches[idx], idx, group, self.opts.seed)
                trace.setdefault("groups", {})[str(group)] = [self.pool, _node()]
                done += len(idx)
                report(self.hub, self.pool, done=len(idx))
            state["seconds"]["dit"] += time.perf_counter() - t
        except Exception as e:
            report(self.hub, self.pool, done=planned - done)  # the image's remaining patches end here
            return _out({**row, "status": "error", "error": f"{type(e).__name__} in {self.pool} Patch-DiT: {e}",
                         "state": b""})
        return _out({**row, "state": pickle.dumps(state, protocol=5), "trace": json.dumps(trace)})


class StitchWrite:
    """Blend, decode, colour-fix, then the manifest row and the output (see steps.finish_output)."""

    def __init__(self, opts, hub=None):
        from pipeline import steps
        from pipeline.storage import Store
        _threads(opts)
        self.opts, self.hub = opts, hub
        self.dst = Store(opts.dst, opts.dst_options)
        self.model = steps.load_model(opts)

    def __call__(self, batch: dict) -> dict:
        from patchscaler.upscale import stitch_stage
        from pipeline import steps
        from pipeline.progress import report
        from pipeline.storage import ManifestRow
        row = _one(batch)
        group_map = {}
        version = steps.model_version(self.model)
        name = row["input"]
        if row["status"] != "ok":
            r = steps.record(self.dst, ManifestRow(run_id=self.opts.run_id, input=name, status="error",
                                                   error=row["error"], model_version=version, seed=self.opts.seed))
        else:
            try:
                state = pickle.loads(row["state"])
                prep, coarse = state["prep"], state["coarse"]
                t = time.perf_counter()
                image = stitch_stage(self.model, coarse, state["refined"], prep)
                t_stitch = time.perf_counter() - t
                s = state["seconds"]
                r = ManifestRow(run_id=self.opts.run_id, input=name, notes="; ".join(prep.notes),
                                width=prep.size[0], height=prep.size[1], out_width=image.width,
                                out_height=image.height, sec_decode=s["decode"], sec_grm=s["grm"],
                                sec_dit=s["dit"], sec_stitch=t_stitch, model_version=version, seed=self.opts.seed)
                r.set_groups(torch.bincount(coarse.groups, minlength=self.model.cfg.pgs.num_groups).tolist())
                r = steps.finish_output(self.dst, name, image, prep, self.opts, json.loads(row["naming"]), r)
                group_map = {"positions": coarse.grid.positions, "patch": coarse.grid.patch,
                             "latent": [coarse.grid.height, coarse.grid.width], "groups": coarse.groups.tolist()}
            except Exception as e:
                r = steps.record(self.dst, steps.error_row(self.opts, name, e, version))
        report(self.hub, "stitch", done=1)
        out = {k: v for k, v in r.__dict__.items() if k != "group_counts"}
        out["group_counts"] = json.dumps(r.group_counts)
        out["trace"] = row.get("trace", "{}")
        out["group_map"] = json.dumps(group_map)
        return _out(out)
