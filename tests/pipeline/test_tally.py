"""The driver's memory does not grow with the archive: a run's summary keeps counts, patch
totals, seconds, the first errors and the first rows, and the manifest is folded a row group at
a time."""
import json

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.fast


def _row(i, ok=True):
    return {"input": f"p{i:06d}.png", "status": "ok" if ok else "error", "error": "" if ok else f"bad image: {i}",
            "group_counts": [3, 2, 1], "sec_grm": 1.0, "sec_dit": 2.0, "sec_stitch": 0.5, "trace": "x" * 500}


def test_tally_counts_everything_and_keeps_a_bounded_sample():
    from pipeline.tally import Tally
    t = Tally(keep_rows=100, max_errors=10)
    for i in range(5000):
        t.add(_row(i, ok=i % 10 != 0))
    assert (t.ok, t.failed, len(t)) == (4500, 500, 5000)
    assert t.groups == [13500, 9000, 4500] and t.seconds["dit"] == 9000.0
    assert len(t.rows) == 100 and len(t.errors) == 10 and t.errors[0] == ("p000000.png", "bad image: 0")
    assert len(t.seen) == 5000    # names only: which photos came back (a lost one gets an error row)


def test_manifest_is_folded_in_row_groups_and_a_resumed_run_keeps_its_rows(tmp_path, monkeypatch):
    from pipeline import manifest as storage
    from pipeline.manifest import ManifestRow, consolidate, read_rows, write_row
    from storage import Store
    monkeypatch.setattr(storage, "ROWS_PER_GROUP", 7)
    dst = Store(str(tmp_path))
    for i in range(30):
        write_row(dst, ManifestRow(run_id="r1", input=f"a{i:02d}.png", output=f"a{i:02d}.png", group_counts=[1, 2]))
    uri = consolidate(dst, "r1")
    f = pq.ParquetFile(uri)
    assert f.metadata.num_rows == 30 and f.metadata.num_row_groups == 5
    assert not (tmp_path / "_manifest" / "rows").exists()
    # the same run id again (a resumed run): two rows replaced, the others kept
    for i in (3, 31):
        write_row(dst, ManifestRow(run_id="r1", input=f"a{i:02d}.png", status="error", error="bad image: x"))
    consolidate(dst, "r1")
    rows = {r["input"]: r for r in pq.read_table(uri).to_pylist()}
    assert len(rows) == 31 and rows["a03.png"]["status"] == "error" and rows["a04.png"]["status"] == "ok"
    latest = read_rows(dst)
    assert set(latest["a05.png"]) == set(storage.RESUME_COLUMNS)   # resume reads what it needs only
    assert json.dumps(latest["a31.png"])


def test_waves_cut_the_pending_inputs_in_order_and_cover_each_once():
    from pipeline.graph import wave_count, waves
    pending = [f"p{i:03d}.png" for i in range(7)]
    assert [len(w) for w in waves(pending, 3)] == [3, 3, 1]
    assert [x for w in waves(pending, 3) for x in w] == pending
    assert list(waves(pending, 2000)) == [pending] and list(waves([], 5)) == []
    # --pools auto's first wave (a photo per actor) comes first, never larger than a wave
    assert [len(w) for w in waves(pending, 3, first=2)] == [2, 3, 2]
    assert [len(w) for w in waves(pending, 3, first=5)] == [3, 3, 1]
    assert [x for w in waves(pending, 4, first=1) for x in w] == pending
    for n in range(0, 12):      # the count the log says is the waves made
        for size in range(1, 6):
            for first in (None, 1, 2, 4, 7, 20):
                made = list(waves(list(range(n)), size, first))
                assert wave_count(n, size, first) == len(made) and all(made), (n, size, first)


def test_auto_pools_re_split_the_actors_by_the_seconds_their_pools_spent():
    """--pools auto: the first wave's seconds per pool (the hub's) re-split the GRM and Patch-DiT
    actors, same total, at least one each; a wave that upscaled nothing keeps the sizes given."""
    from pipeline.graph import auto_pools
    from pipeline.options import UpscaleOptions
    opts = UpscaleOptions("in", "out", grm_actors=2, hard_actors=2, easy_actors=2, stitch_actors=3)
    pools = [("hard", {2}), ("easy", {0, 1})]
    busy = {"grm": 4.0, "hard": 30.0, "easy": 8.0, "stitch": 50.0, "pieces": 0.0}
    new = auto_pools(opts, pools, busy, photos=4)
    assert (new.grm_actors, new.hard_actors, new.easy_actors) == (1, 3, 2)
    assert new.stitch_actors == 3 and new.src == "in"    # the stitchers are not the accelerators'
    assert auto_pools(opts, pools, {}, photos=0) is opts
    assert auto_pools(opts, pools, {"grm": 0.0}, photos=3) is opts


def test_progress_knows_the_pieces_only_when_every_wave_has_read_its_headers():
    """Photos run in waves, so later waves' headers are read late: the piece total is extrapolated
    from the photos read so far, and the patch totals stay 'estimated' until all are read."""
    from pipeline.progress import PipelineProgress, Progress
    pp = PipelineProgress(None, 4000, Progress(interval=3600))
    # the first wave of 2000 photos, 2 pieces each, all cut by the GRM
    wave1 = {"pieces": [2000, 4000], "grm": [4000, 0], "easy": [0, 90_000]}
    assert pp._pieces(wave1) == (8000, False)
    pp._apply(wave1)
    assert "estimated" in pp.p.stages["easy"].desc and pp.p.stages["grm"].total == 8000
    done = {"pieces": [4000, 8000], "grm": [8000, 0], "easy": [0, 180_000]}
    assert pp._pieces(done) == (8000, True)
    pp._apply(done)
    assert "estimated" not in pp.p.stages["easy"].desc
    # before any header is read: one piece per photo at least
    assert pp._pieces({}) == (4000, False)
