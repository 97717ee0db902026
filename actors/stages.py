"""Thin Ray Data callables around the patchscaler stages. Each handles one row per call
(`batch_size=1`; a row is one image; the Patch-DiT pools take up to `dit_images` rows) and never raises for a bad image: the row carries
`status="error"` and an `error` string to the writer, which records it in the manifest.

Each takes the run's `job` (pipeline.steps.ImageJob: its model, decode, output and manifest
row, handed in by the graph) and moves one image through `patchscaler.flow`.

Row columns: input (str), naming (str: JSON of the input's naming plan, storage.name_plans),
status (str), error (str), state (bytes: the image's `flow.InFlight`, pickled between our own
stages of one job), trace (str: JSON of which pool and node did what). Each stage tells the
driver's ProgressHub (if given) what it finished: images, or patches per Patch-DiT batch.
"""
from __future__ import annotations

import json
import os
import pickle

import torch

from patchscaler import flow

from .faults import maybe_die
from .progress import report


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


def _threads():
    # fractional-CPU actors share cores: one intra-op thread each keeps them from thrashing
    torch.set_num_threads(max(1, int(os.environ.get("PATCHSCALER_THREADS", "1"))))


class DecodeGRM:
    """Read bytes, decode/validate, run the GRM, cut and group patches (flow.begin)."""

    def __init__(self, job, hub=None):
        _threads()
        self.job, self.opts, self.hub = job, job.opts, hub
        self.model = job.load_model("grm")
        self.hard = job.hard_groups(self.model)
        self.calls = 0

    def __call__(self, batch: dict) -> dict:
        row = _one(batch)
        self.calls += 1
        maybe_die("grm", self.calls)
        rel = row["input"]
        trace = {"grm": _node()}
        try:
            prep, t_dec = self.job.decode(rel)
            state = flow.begin(self.model, prep, {"decode": t_dec})
        except Exception as e:
            report(self.hub, "grm", done=1)
            return _out({"input": rel, "naming": row["naming"], "status": "error",
                         "error": self.job.error_text(e), "state": b"", "trace": json.dumps(trace)})
        groups = state.coarse.groups
        n_hard = sum(int((groups == g).sum()) for g in self.hard)
        report(self.hub, "hard", total=n_hard)
        report(self.hub, "easy", total=len(groups) - n_hard)
        report(self.hub, "grm", done=1)
        return _out({"input": rel, "naming": row["naming"], "status": "ok", "error": "",
                     "state": pickle.dumps(state, protocol=5), "trace": json.dumps(trace)})


class PatchDiTPool:
    """One Patch-DiT pool: refines the patches of its groups (hard, or the others) and passes
    the other groups through untouched. A call takes up to `dit_images` rows (images) and
    refines their patches of each group together (flow.refine_many): on a GPU a call should
    see many patches of one group, not one image's handful. If that call fails, each image
    is tried alone, so one bad image costs one row. Reports patches done per batch."""

    def __init__(self, job, pool: str, hub=None):
        _threads()
        self.opts, self.pool, self.hub = job.opts, pool, hub
        self.model = job.load_model("dit")
        hard = job.hard_groups(self.model)
        all_groups = set(range(self.model.cfg.pgs.num_groups))
        self.groups = hard if pool == "hard" else all_groups - hard
        self.calls = 0

    def _refine(self, states: list) -> None:
        done = 0

        def on_batch(group, n):
            nonlocal done
            done += n
            report(self.hub, self.pool, done=n)

        try:
            flow.refine_many(self.model, states, self.opts.seed, self.groups, on_batch)
        except Exception:
            report(self.hub, self.pool, done=-done)  # counted again when the images are retried
            raise

    def _failed(self, row: dict, e: Exception) -> dict:
        return {**row, "status": "error", "error": f"{type(e).__name__} in {self.pool} Patch-DiT: {e}", "state": b""}

    def __call__(self, batch: dict) -> dict:
        rows = [{k: v[i] for k, v in batch.items()} for i in range(len(batch["input"]))]
        self.calls += 1
        maybe_die(self.pool, self.calls)
        out = list(rows)
        live = [i for i, r in enumerate(rows) if r["status"] == "ok"]
        try:
            states = {i: pickle.loads(rows[i]["state"]) for i in live}
            self._refine([states[i] for i in live])
        except Exception:
            states = {}
            for i in live:  # one at a time: find the image that fails, keep the others
                try:
                    states[i] = pickle.loads(rows[i]["state"])
                    self._refine([states[i]])
                except Exception as e:
                    planned = 0 if i not in states else sum(
                        len(idx) for _, idx in flow.group_batches(self.model, states[i].coarse.groups, self.groups))
                    report(self.hub, self.pool, done=planned)  # the image's remaining patches end here
                    states.pop(i, None)
                    out[i] = self._failed(rows[i], e)
        node = _node()
        for i, state in states.items():
            trace = json.loads(rows[i]["trace"])
            trace.setdefault("images_per_call", {})[self.pool] = len(states)
            for g in self.groups:
                if bool((state.coarse.groups == g).any()):
                    trace.setdefault("groups", {})[str(g)] = [self.pool, node]
            out[i] = {**rows[i], "state": pickle.dumps(state, protocol=5), "trace": json.dumps(trace)}
        return {k: [r[k] for r in out] for k in rows[0]}


class StitchWrite:
    """Blend, decode, colour-fix (flow.finish), then the manifest row and the output
    (ImageJob.write_ok)."""

    def __init__(self, job, hub=None):
        _threads()
        self.job, self.hub = job, hub
        self.model = job.load_model("stitch")

    def __call__(self, batch: dict) -> dict:
        row = _one(batch)
        group_map = {}
        version = self.model.cfg.version
        name = row["input"]
        if row["status"] != "ok":
            r = self.job.write_error(name, row["error"], version)
        else:
            try:
                state: flow.InFlight = pickle.loads(row["state"])
                image = flow.finish(self.model, state)
                r = self.job.write_ok(name, state, image, json.loads(row["naming"]), self.model)
                grid = state.coarse.grid
                group_map = {"positions": grid.positions, "patch": grid.patch,
                             "latent": [grid.height, grid.width], "groups": state.coarse.groups.tolist()}
            except Exception as e:
                r = self.job.write_error(name, e, version)
        report(self.hub, "stitch", done=1)
        out = {k: v for k, v in r.__dict__.items() if k != "group_counts"}
        out["group_counts"] = json.dumps(r.group_counts)
        out["trace"] = row.get("trace", "{}")
        out["group_map"] = json.dumps(group_map)
        return _out(out)
