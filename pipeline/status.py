"""`patchscaler status DST`: every run into DST at once, from its manifests: each input's latest
state and the totals, so that a nightly job's operator sees where the archive stands (not only
what last night's run did).

An input's latest state is its most recent row's: `written`, `failed` (with the reason),
`interrupted` (a run stopped before its output was written) or `not read` (a listing rule
skipped it: hidden, a link leaving SRC, ...). A "still bad" row (a failed input not tried again
because it has not changed) keeps the failure it repeats. An input that a run planned (its plan
is written before its first photo) and that has no row since is `not done`: the run stopped
before it (killed, a full disk, storage down), or is going on now. Rows are read a row group at a time
and only a few fields per input are kept: memory follows the number of inputs, not of rows."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from storage import Store

from .manifest import loose_row_paths, manifest_files, manifest_rows, read_loose, read_plans

COLUMNS = ["run_id", "input", "output", "status", "error", "finished_at"]
STATES = ("written", "failed", "interrupted", "not done", "not read")
PROBLEMS = ("failed", "interrupted", "not done")   # states that make `status` exit 3


@dataclass
class RunInfo:
    rows: int = 0
    first: float = 0.0
    last: float = 0.0
    folded: bool = True          # False: loose rows only (a run going on now, or killed and not yet folded)
    states: dict = field(default_factory=dict)


def _state(r: dict) -> str:
    return {"ok": "written", "error": "failed", "interrupted": "interrupted"}.get(r["status"], "not read")


def archive_status(dst: Store) -> dict:
    """{"inputs": {input: (state, reason, run_id, finished_at, output)}, "runs": {run: RunInfo}}."""
    latest: dict[str, tuple] = {}
    runs: dict[str, RunInfo] = {}

    def add(r: dict, folded: bool) -> None:
        state, t = _state(r), r.get("finished_at") or 0.0
        still_bad = r["status"] == "skipped" and str(r.get("error", "")).startswith("still bad")
        if still_bad:
            state = "failed"         # it repeats a failure: the run line and the totals say so alike
        run = runs.setdefault(r.get("run_id") or "unknown", RunInfo(folded=folded))
        run.rows += 1
        run.first = min(run.first or t, t)
        run.last = max(run.last, t)
        run.states[state] = run.states.get(state, 0) + 1
        old = latest.get(r["input"])
        if still_bad and old is not None:
            return                   # the failure it repeats stays the input's state
        if old is None or t >= old[3]:
            latest[r["input"]] = (state, r.get("error") or "", r.get("run_id") or "", t, r.get("output") or "")

    for rel in manifest_files(dst):
        for r in manifest_rows(dst, rel, COLUMNS):
            add(r, True)
    for _, r in read_loose(dst, loose_row_paths(dst)):
        add(r, False)
    for run_id, started, planned in read_plans(dst):
        run = runs.setdefault(run_id, RunInfo(folded=False, first=started, last=started))
        for inp in planned:
            old = latest.get(inp)
            if old is None or old[3] < started:   # no row of this run, nor of a later one
                reason = f"planned by run {run_id}, not done: the run stopped before it (or is going on now)"
                latest[inp] = ("not done", reason, run_id, started, "")
                run.states["not done"] = run.states.get("not done", 0) + 1
    return {"inputs": latest, "runs": runs}


def totals(st: dict) -> dict[str, int]:
    out = dict.fromkeys(STATES, 0)
    for state, *_ in st["inputs"].values():
        out[state] += 1
    return out


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "-"


def report_lines(dst: Store, st: dict, show: str = "problems", limit: int = 50) -> list[str]:
    """What `patchscaler status` prints: the runs, the totals, then the inputs in `show`
    ("problems": failed, interrupted and not done; "all"; or one state), at most `limit` of them."""
    t = totals(st)
    lines = [f"{dst.uri()}: {len(st['runs'])} run(s), {len(st['inputs'])} inputs"]
    for run_id, r in sorted(st["runs"].items(), key=lambda kv: kv[1].first):
        states = ", ".join(f"{n} {s}" for s, n in sorted(r.states.items()))
        lines.append(f"  run {run_id}: {_when(r.first)} .. {_when(r.last)}, {states}"
                     + ("" if r.folded else " (not folded: going on now, or stopped; the next run folds it)"))
    lines += [f"{s:<14}{t[s]}" for s in STATES]
    wanted = {"problems": PROBLEMS, "all": STATES}.get(show, (show,))
    shown = 0
    for inp, (state, reason, run_id, _, output) in sorted(st["inputs"].items()):
        if state not in wanted:
            continue
        if shown == limit:
            lines.append(f"  ... more: patchscaler status DST --show {show} --limit N")
            break
        detail = output if state == "written" else reason
        lines.append(f"  {state.upper():<12} {inp}: {detail} (run {run_id})")
        shown += 1
    return lines
