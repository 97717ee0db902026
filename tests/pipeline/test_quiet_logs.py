"""What a cron log shows of a run: the Ray engine's own lines only, one per stage, and a stderr
filter that drops only Ray's one known line."""
import json
import subprocess
import sys

from helpers import ROOT, cli, encode, photo, write_tree


def test_ray_run_logs_one_line_per_stage_and_no_ray_noise(ray_session, checkpoint, tmp_path):
    """A run of the Ray engine as cron sees it (stderr not a terminal): our lines only, the
    per-stage totals in images and patches, none of Ray Data's progress logs, no core_worker
    E line (ray-project/ray#57733)."""
    src = tmp_path / "in"
    write_tree(src, {"a.png": encode(photo(24, 20, seed=1)), "b.png": encode(photo(20, 24, seed=2))})
    address = ray_session.get_runtime_context().gcs_address
    r = cli("upscale", str(src), str(tmp_path / "out"), "--checkpoint", checkpoint, "--thresholds", "0.6,0.4",
            "--address", address, "--no-report", "--progress-interval", "600", timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    err = r.stderr.strip().splitlines()
    assert not [x for x in err if "core_worker" in x or "logging_progress" in x or "streaming_executor" in x], err
    assert len(err) <= 8, err   # the plan, one line per stage, the actors' peak memory
    stage_lines = {x.split("patchscaler.progress: ")[1].split(":")[0]: x for x in err if "patchscaler.progress" in x}
    assert set(stage_lines) == {"decode + GRM", "hard Patch-DiT", "easy Patch-DiT", "stitch", "photos written"}, err
    assert "2/2 img" in stage_lines["photos written"] and "2/2 piece" in stage_lines["stitch"]
    groups = json.loads(r.stdout.split("patches per group")[1].splitlines()[0].strip())
    assert f"{groups[2]}/{groups[2]} patch" in stage_lines["hard Patch-DiT"]
    assert f"{groups[0] + groups[1]}/{groups[0] + groups[1]} patch" in stage_lines["easy Patch-DiT"]


def test_stderr_filter_drops_only_the_known_ray_line_and_survives_a_hard_exit():
    code = ("import os, sys\nfrom pipeline.quiet import drop_known_noise\n"
            "with drop_known_noise():\n"
            "    os.write(2, b\"keep 1\\n[2026-11-27 18:08:59,030 E 3793 3793] core_worker.cc:2465: Actor with class "
            "name: 'MapWorker(MapBatches(DecodeGRM))' and ID: 'ab' has constructor arguments in the object store and "
            "max_restarts > 0. See ...\\n\")\n"
            "    os.write(2, b\"bar 1/2\\rbar 2/2\\r[2026 E] a C++ line \")\n"
            "    os.write(2, b\"in two writes\\n\")\n"
            "print('between', file=sys.stderr)\n"
            "with drop_known_noise():\n"
            "    os.write(2, b'last words before a hard exit\\n')\n"
            "    os._exit(7)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, timeout=60)
    assert r.returncode == 7
    assert r.stderr == (b"keep 1\nbar 1/2\rbar 2/2\r[2026 E] a C++ line in two writes\nbetween\n"
                        b"last words before a hard exit\n"), r.stderr
