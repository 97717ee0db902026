"""The Ray Data pipeline against the in-process oracle, on a real local Ray, with a bad-input
corpus, resume, and actors that die. (A real S3 API, moto server over HTTP, through the Ray
engine: tests/pipeline/test_reliability_chaos.py.)"""
import json
import os
import tempfile
import threading

import pyarrow.parquet as pq
import pytest
from PIL import Image

from corpus import corpus
from helpers import encode, photo, write_tree

ray = pytest.importorskip("ray")
# the test-only fault hook (actors/faults.py): set before the session's Ray starts, so that
# its workers inherit it; inert until a test writes the file it names
FAULTS = os.path.join(tempfile.mkdtemp(prefix="faults"), "faults.json")
os.environ.setdefault("PATCHSCALER_FAULTS", FAULTS)


class _WorkerCount(threading.Thread):
    """The most Ray worker processes at once whose title names `what` (from /proc, every 20 ms)."""

    def __init__(self, what: str):
        super().__init__(daemon=True)
        self.what, self.most, self.stop = what, 0, threading.Event()

    def run(self):
        while not self.stop.wait(0.02):
            n = 0
            for pid in os.listdir("/proc"):
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        n += self.what.encode() in f.read()
                except OSError:
                    continue
            self.most = max(self.most, n)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.join()


def opts_for(src, dst, ckpt, **kw):
    from pipeline.options import UpscaleOptions
    base = dict(checkpoint=ckpt, precision="fp32", max_pixels=250_000, max_batch=16,
                thresholds=(0.6, 0.4), report=True)
    base.update(kw)
    return UpscaleOptions(src, dst, **base)


@pytest.fixture(scope="module")
def corpus_run(ray_session, checkpoint, tmp_path_factory):
    """The corpus (every bad-input case, real photos, a tagged JPEG) through the Ray engine once,
    watching the split's workers, and through the in-process oracle: the tests below read it."""
    from pipeline.graph import run_pipeline
    from pipeline.local import run_local
    tmp_path = tmp_path_factory.mktemp("corpus")
    files = {k: v[0] for k, v in corpus().items()}
    files["photo_a.jpg"] = encode(photo(40, 32, seed=5), "JPEG")
    files["photo_b.png"] = encode(photo(33, 27, seed=6))
    exif = Image.Exif()
    exif[0x010F], exif.get_ifd(0x8825)[1] = "Canon", "N"
    files["tagged.jpg"] = encode(photo(30, 22, seed=8), "JPEG", exif=exif, dpi=(300, 300), comment="album",
                                 xmp=b'<x:xmpmeta xmlns:x="adobe:ns:meta/"/>')
    src = tmp_path / "in"
    write_tree(src, files)
    with _WorkerCount("split_pieces") as split_workers:
        summary = run_pipeline(opts_for(str(src), str(tmp_path / "ray"), checkpoint, run_id="r1"))
    oracle = run_local(opts_for(str(src), str(tmp_path / "local"), checkpoint, run_id="l1"))
    return {"tmp": tmp_path, "src": src, "files": files, "summary": summary, "oracle": oracle,
            "rows": {r["input"]: r for r in summary["rows"]}, "split_workers": split_workers.most,
            "checkpoint": checkpoint}


def test_the_header_split_is_bounded(corpus_run):
    # the header split reserves no CPU, so only its own bound keeps it from a worker per photo
    # (its pieces leave it one per block: graph.one_row_per_block, tests/pipeline/test_pieces.py)
    from pipeline.graph import SPLIT_TASKS
    assert 1 <= corpus_run["split_workers"] <= SPLIT_TASKS, corpus_run["split_workers"]


def test_the_run_leaves_ray_datas_block_size_as_it_was(corpus_run):
    from ray.data import DataContext
    from ray.data.context import DEFAULT_TARGET_MAX_BLOCK_SIZE
    assert DataContext.get_current().target_max_block_size == DEFAULT_TARGET_MAX_BLOCK_SIZE


def test_the_driver_gets_a_manifest_row_and_a_short_trace_per_photo(corpus_run):
    # no group map, no state (the report reads the maps from DST)
    from pipeline.manifest import MANIFEST_SCHEMA
    for r in corpus_run["summary"]["rows"]:
        assert set(r) == set(MANIFEST_SCHEMA.names) | {"trace"}, set(r) ^ set(MANIFEST_SCHEMA.names)
        assert len(json.dumps(r, default=str)) < 4000, r["input"]


def test_every_input_gets_its_status_error_and_output_name(corpus_run):
    rows, summary, tmp_path = corpus_run["rows"], corpus_run["summary"], corpus_run["tmp"]
    expected = corpus()
    assert set(rows) == set(corpus_run["files"])
    for name, (_, want) in expected.items():
        r = rows[name]
        if want == "ok":
            assert r["status"] == "ok", (name, r["error"])
        else:
            assert r["status"] == "error" and r["error"], name
            if want != "error":
                assert want in r["error"], (name, r["error"])
    assert summary["failed"] == sum(1 for _, w in expected.values() if w != "ok")
    assert "first frame" in rows["animated.gif"]["notes"]
    assert rows["png_named.jpg"]["output"] == "png_named.png"
    assert rows["palette.gif"]["output"] == "palette.png"
    assert Image.open(tmp_path / "ray" / rows["exif_rotated.jpg"]["output"]).size == (80, 96)


def test_hard_patches_go_to_the_hard_pool_and_progress_counts_every_patch(corpus_run):
    summary = corpus_run["summary"]
    assert all(c > 0 for c in summary["patches_per_group"])   # every group occurred
    ppg = summary["patches_per_group"]
    assert summary["stages"]["hard"][1] >= ppg[2] and summary["stages"]["easy"][1] >= ppg[0] + ppg[1]
    assert summary["stages"]["hard"][0] == summary["stages"]["hard"][1]
    assert summary["stages"]["easy"][0] == summary["stages"]["easy"][1]
    assert summary["stages"]["stitch"] == [len(corpus_run["files"]), 0]
    for r in summary["rows"]:
        for g, (pool, _node) in json.loads(r["trace"]).get("groups", {}).items():
            assert pool == ("hard" if g == "2" else "easy")


def test_the_ray_engine_writes_the_oracles_bytes(corpus_run):
    tmp_path = corpus_run["tmp"]
    lrows = {r["input"]: r for r in corpus_run["oracle"]["rows"]}
    for name, r in corpus_run["rows"].items():
        assert r["status"] == lrows[name]["status"]
        if r["status"] == "ok":
            a = (tmp_path / "ray" / r["output"]).read_bytes()
            b = (tmp_path / "local" / lrows[name]["output"]).read_bytes()
            assert a == b, name


def test_one_manifest_row_per_image_a_report_and_no_leftovers(corpus_run):
    tmp_path, files = corpus_run["tmp"], corpus_run["files"]
    t = pq.read_table(corpus_run["summary"]["manifest"]).to_pylist()
    assert len(t) == len(files) and {x["input"] for x in t} == set(files)
    leftovers = [p for p in (tmp_path / "ray").rglob("*") if p.name.startswith(".part-") or p.suffix == ".json"]
    assert not leftovers
    assert "<img" in (tmp_path / "ray" / "_manifest" / "report-r1.html").read_text()


def test_resume_skips_what_is_written_and_redoes_only_what_is_gone(corpus_run):
    """Last in this file: it changes the run's DST. A re-run skips every written image; the
    failures whose input has not changed are listed as still bad, not tried again; --retry-failed
    tries them (the worklist is the same code in both engines, so the in-process engine continues
    the Ray engine's DST); a deleted output is the only image redone."""
    from pipeline.graph import run_pipeline
    from pipeline.local import run_local
    src, tmp_path, ckpt = corpus_run["src"], corpus_run["tmp"], corpus_run["checkpoint"]
    summary, rows = corpus_run["summary"], corpus_run["rows"]
    again = run_pipeline(opts_for(str(src), str(tmp_path / "ray"), ckpt, run_id="r2"))
    assert again["skipped"] == summary["ok"] and again["ok"] == 0
    assert again["failed"] == 0 and len(again["still_bad"]) == summary["failed"]
    retried = run_local(opts_for(str(src), str(tmp_path / "ray"), ckpt, run_id="r2b", retry_failed=True))
    assert retried["failed"] == summary["failed"] and retried["ok"] == 0
    os.unlink(tmp_path / "ray" / rows["photo_a.jpg"]["output"])
    third = run_local(opts_for(str(src), str(tmp_path / "ray"), ckpt, run_id="r3"))
    assert {r["input"] for r in third["rows"] if r["status"] == "ok"} == {"photo_a.jpg"}


def test_actor_deaths_midjob_lose_nothing_and_a_poison_photo_fails_alone(ray_session, checkpoint, tmp_path):
    """A GRM actor and a hard Patch-DiT actor die (process exit) with an image in flight; Ray
    Data restarts them, the job finishes, every output is written once and none is partial. A
    photo in two pieces kills its hard actor every time it is taken: it alone fails, with the
    stage named, and its pieces leave no scratch."""
    from pipeline.graph import run_pipeline
    from pipeline.local import run_local
    src = tmp_path / "in"
    good = [f"p{i}.png" for i in range(6)]
    write_tree(src, {**{n: encode(photo(24, 20, seed=i)) for i, n in enumerate(good)},
                     "poison.png": encode(photo(60, 30, seed=9))})
    chaos = {"grm": str(tmp_path / "grm.died"), "hard": str(tmp_path / "hard.died"),
             "always": {"hard": "poison.png"}}
    faults = os.environ["PATCHSCALER_FAULTS"]
    with open(faults, "w") as f:
        json.dump(chaos, f)
    try:
        s = run_pipeline(opts_for(str(src), str(tmp_path / "ray"), checkpoint, run_id="chaos", piece_size=40,
                                  report=False))
    finally:
        os.unlink(faults)
    assert os.path.exists(chaos["grm"]) and os.path.exists(chaos["hard"])  # they did die
    rows = {r["input"]: r for r in s["rows"]}
    assert s["ok"] == 6 and s["failed"] == 1, s["errors"]
    assert "actor died" in rows["poison.png"]["error"] and "hard Patch-DiT" in rows["poison.png"]["error"]
    ref = run_local(opts_for(str(src), str(tmp_path / "local"), checkpoint, run_id="ref", piece_size=40,
                             report=False))
    assert ref["ok"] == 7
    for n in good:
        assert (tmp_path / "ray" / n).read_bytes() == (tmp_path / "local" / n).read_bytes()
    assert not [p for p in (tmp_path / "ray").rglob(".part-*")]
    assert not (tmp_path / "ray" / "_manifest" / "parts").exists()
    t = pq.read_table(s["manifest"]).to_pylist()
    assert sorted(r["input"] for r in t) == [*good, "poison.png"]  # one row each


def test_cli_single_file_and_exit_codes(checkpoint, tmp_path, capsys):
    from jobs.cli import main
    good, bad = tmp_path / "photo.jpeg", tmp_path / "broken.png"
    good.write_bytes(encode(photo(20, 16), "JPEG"))
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert main(["upscale", str(good), str(tmp_path / "o"), "--engine", "local", "--checkpoint", checkpoint]) == 0
    assert Image.open(tmp_path / "o" / "photo.jpeg").size == (80, 64)
    assert main(["upscale", str(bad), str(tmp_path / "o"), "--engine", "local", "--checkpoint", checkpoint]) == 3
    out = capsys.readouterr().out
    assert "FAILED broken.png" in out and "images failed" in out
    # re-run of the good file: already done, nothing redone
    assert main(["upscale", str(good), str(tmp_path / "o"), "--engine", "local", "--checkpoint", checkpoint]) == 0
    assert "already done          1" in capsys.readouterr().out


def test_consolidate_merges_rows_of_a_resumed_run_id(tmp_path):
    from pipeline.manifest import ManifestRow, consolidate, write_row
    from storage import Store
    dst = Store(str(tmp_path))
    write_row(dst, ManifestRow(run_id="same", input="a.jpg"))
    consolidate(dst, "same")
    write_row(dst, ManifestRow(run_id="same", input="b.jpg"))
    path = consolidate(dst, "same")
    assert sorted(r["input"] for r in pq.read_table(path).to_pylist()) == ["a.jpg", "b.jpg"]
