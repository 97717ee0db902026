"""`patchscaler status DST`: every run into DST at once: each input's latest state (written,
failed with its reason, interrupted, not read) and the totals, from the manifests and the rows
a stopped run left."""
import json
import os

import pytest

from helpers import encode, photo

pytestmark = pytest.mark.fast


def test_status_shows_each_inputs_latest_state_across_runs(checkpoint, tmp_path, capsys):
    from jobs.cli import main
    from pipeline.manifest import ManifestRow, write_row
    from storage import Store
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    (src / "a.png").write_bytes(encode(photo(20, 16, seed=1)))
    (src / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (src / ".hidden.png").write_bytes(encode(photo(8, 8)))
    base = ["upscale", str(src), str(dst), "--engine", "local", "--checkpoint", checkpoint, "--precision", "fp32",
            "--no-report"]
    assert main(base + ["--run-id", "night1"]) == 3
    (src / "b.png").write_bytes(encode(photo(16, 16, seed=2)))
    assert main(base + ["--run-id", "night2"]) == 0       # b written, bad.jpg still bad (not tried)
    # a third run was killed after writing c's row but before its output
    write_row(Store(str(dst)), ManifestRow(run_id="night3", input="c.png", output="c.png"))
    capsys.readouterr()

    assert main(["status", str(dst)]) == 3                 # failures in the archive: exit 3
    out = capsys.readouterr().out
    assert "3 run(s)" in out and "not folded" in out
    lines = {ln.split()[0]: int(ln.split()[-1]) for ln in out.splitlines() if ln and not ln.startswith(" ")
             and ln.split()[0] in ("written", "failed", "interrupted")}
    assert lines == {"written": 3, "failed": 1, "interrupted": 0}   # c: its loose row says ok, not folded yet
    assert "FAILED       bad.jpg: bad image" in out and "(run night1)" in out   # the still-bad row keeps the failure

    # the next run folds night3's row: c has no output, so it is interrupted (and redone)
    assert main(["status", str(dst), "--json", "--show", "all"]) == 3
    doc = json.loads(capsys.readouterr().out)
    assert {i["input"]: i["state"] for i in doc["inputs"]} == {"a.png": "written", "b.png": "written",
                                                              "bad.jpg": "failed", "c.png": "written",
                                                              ".hidden.png": "not read"}
    os.remove(src / "bad.jpg")
    assert main(base + ["--run-id", "night4"]) == 0
    capsys.readouterr()
    assert main(["status", str(dst), "--show", "interrupted"]) == 3
    out = capsys.readouterr().out
    assert "INTERRUPTED  c.png" in out


def test_status_of_a_folder_that_is_no_dst_is_usage_error(tmp_path, capsys):
    from jobs.cli import main
    assert main(["status", str(tmp_path)]) == 2
    assert "not the DST of an upscale run" in capsys.readouterr().err
