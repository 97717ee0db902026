"""Nothing a crash can lose: the next run folds the rows a killed run left (an output that never
landed is `interrupted` and redone), and outputs and manifests are fsync'd before and after
their rename."""
import os

import pyarrow.parquet as pq
import pytest

from helpers import encode, opts_for, photo, write_tree


def test_next_run_folds_the_rows_a_killed_run_left(checkpoint, tmp_path):
    from pipeline.local import run_local
    from pipeline.manifest import ManifestRow, write_row
    from storage import Store
    src, dst = tmp_path / "in", tmp_path / "out"
    write_tree(src, {"a.png": encode(photo(16, 16, seed=1)), "b.png": encode(photo(16, 16, seed=2))})
    # what a run killed mid-image leaves: a's output and its row; b's row (written just
    # before its output) but no output
    store = Store(str(dst))
    store.write_atomic("a.png", encode(photo(64, 64)))
    write_row(store, ManifestRow(run_id="killed", input="a.png", output="a.png"))
    write_row(store, ManifestRow(run_id="killed", input="b.png", output="b.png"))
    s = run_local(opts_for(src, dst, checkpoint, run_id="next"))
    killed = {r["input"]: r for r in pq.read_table(dst / "_manifest" / "manifest-killed.parquet").to_pylist()}
    assert s["recovered"] == {"killed": 2}
    assert killed["a.png"]["status"] == "ok"
    assert killed["b.png"]["status"] == "interrupted" and "stopped before" in killed["b.png"]["error"]
    assert [r["input"] for r in s["rows"]] == ["b.png"] and s["skipped"] == 1  # only b is redone
    assert not list((dst / "_manifest").rglob("*.json"))  # no loose rows left


def test_outputs_and_manifests_are_fsynced_before_and_after_the_rename(checkpoint, tmp_path, monkeypatch):
    from pipeline.local import run_local
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(a, b, **kw):
        events.append(("replace", os.fspath(a), os.fspath(b)))
        return real_replace(a, b, **kw)

    if not os.path.exists("/proc/self/fd"):
        pytest.skip("needs /proc to name the fsync'd file")
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    src, dst = tmp_path / "in", tmp_path / "out"
    write_tree(src, {"sub/a.png": encode(photo(16, 16))})
    s = run_local(opts_for(src, dst, checkpoint, run_id="d1"))
    assert s["ok"] == 1
    renames = [e for e in events if e[0] == "replace"]
    targets = {os.path.relpath(e[2], dst) for e in renames}
    assert {"sub/a.png", "_manifest/manifest-d1.parquet"} <= targets
    assert any(t.startswith("_manifest/rows/d1/") for t in targets)
    for _, tmp, final in renames:
        i = events.index(("replace", tmp, final))
        assert ("fsync", tmp) in events[:i], f"{final}: temp file not fsync'd before the rename"
        assert ("fsync", os.path.dirname(final)) in events[i + 1:], f"{final}: folder not fsync'd after the rename"
    assert ("fsync", str(tmp_path)) in events  # the new output folder's own entry
