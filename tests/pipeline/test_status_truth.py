"""`patchscaler status` after a run that stopped: every input the run planned and did not do
counts (`not done`, exit 3), from the moment the run started: a real SIGTERM before the first
photo and part-way, and a real full disk (a 1 MiB tmpfs)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import encode, photo, tmpfs

ROOT = Path(__file__).parents[2]
N = 12   # photos of the stopped runs


def _run(src, dst, checkpoint, run_id):
    cmd = [sys.executable, "-m", "jobs.cli", "upscale", str(src), str(dst), "--engine", "local",
           "--checkpoint", checkpoint, "--precision", "fp32", "--no-report", "--run-id", run_id]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": ""}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(proc, ready, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None and not ready():
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()


def _status(dst, capsys):
    from jobs.cli import main
    capsys.readouterr()
    rc = main(["status", str(dst), "--json", "--show", "all"])
    return rc, json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_a_run_stopped_by_sigterm_before_its_first_photo_or_part_way_is_not_all_fine(checkpoint, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    names = [f"p{i:02d}.png" for i in range(N)]
    for i, n in enumerate(names):
        (src / n).write_bytes(encode(photo(64, 48, seed=i)))

    # 1. stopped before the first photo finished: the plan is there, no row yet
    dst = tmp_path / "early"
    proc = _run(src, dst, checkpoint, "early")
    plan = dst / "_manifest" / "plans" / "plan-early.parquet"
    _wait_for(proc, plan.exists)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode == 143
    rc, doc = _status(dst, capsys)
    states = {i["input"]: i["state"] for i in doc["inputs"]}
    assert rc == 3 and doc["totals"]["not done"] == N - doc["totals"]["written"] > 0
    assert set(states) == set(names)
    from jobs.cli import main
    assert main(["status", str(dst)]) == 3
    out = capsys.readouterr().out
    assert "run early:" in out and "not done" in out and "NOT DONE" in out

    # 2. part-way: some photos written, the rest not done
    dst = tmp_path / "midway"
    proc = _run(src, dst, checkpoint, "midway")
    rows = dst / "_manifest" / "rows" / "midway"
    _wait_for(proc, lambda: rows.exists() and any(rows.iterdir()))
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode == 143
    rc, doc = _status(dst, capsys)
    t = doc["totals"]
    written = {p.name for p in dst.glob("*.png")}
    assert rc == 3 and t["written"] == len(written) and 0 < t["written"] < N
    assert t["written"] + t["interrupted"] + t["not done"] == N, t
    assert all("planned by run midway" in i["reason"] for i in doc["inputs"] if i["state"] == "not done")

    # the same command again does the rest, and then all is well
    again = _run(src, dst, checkpoint, "again")
    again.communicate(timeout=600)
    assert again.returncode == 0
    rc, doc = _status(dst, capsys)
    assert rc == 0 and doc["totals"]["written"] == N and doc["totals"]["not done"] == 0


def test_a_full_disk_leaves_the_unwritten_inputs_not_done(checkpoint, tmp_path, capsys):
    from jobs.cli import main
    src = tmp_path / "in"
    src.mkdir()
    rng = __import__("numpy").random.default_rng(0)
    from PIL import Image
    for i in range(6):   # noise: large PNGs, so that a few fill the disk
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype="uint8")).save(src / f"p{i}.png")
    with tmpfs(tmp_path / "small", size="1m") as dst:
        (dst / "filler").write_bytes(b"\0" * (640 << 10))
        rc = main(["upscale", str(src), str(dst), "--engine", "local", "--checkpoint", checkpoint,
                   "--precision", "fp32", "--no-report", "--run-id", "full"])
        assert rc == 4
        written = {p.name for p in dst.glob("p*.png")}
        rc, doc = _status(dst, capsys)
        t = doc["totals"]
        assert rc == 3 and t["written"] == len(written) < 6
        assert t["written"] + t["interrupted"] + t["not done"] == 6, t


def test_a_still_bad_input_counts_as_failed_on_its_run_line_and_in_the_totals(checkpoint, tmp_path, capsys):
    from jobs.cli import main
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    (src / "a.png").write_bytes(encode(photo(20, 16)))
    (src / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    base = ["upscale", str(src), str(dst), "--engine", "local", "--checkpoint", checkpoint, "--precision", "fp32",
            "--no-report"]
    assert main(base + ["--run-id", "n1"]) == 3
    assert main(base + ["--run-id", "n2"]) == 0
    capsys.readouterr()
    assert main(["status", str(dst)]) == 3
    out = capsys.readouterr().out
    run2 = next(ln for ln in out.splitlines() if ln.strip().startswith("run n2:"))
    assert "1 failed" in run2 and "not read" not in run2
    totals = {ln[:14].strip(): int(ln[14:]) for ln in out.splitlines() if ln and not ln.startswith(" ")
              and ln[:14].strip() in ("written", "failed", "not read")}
    assert totals == {"written": 1, "failed": 1, "not read": 0}
