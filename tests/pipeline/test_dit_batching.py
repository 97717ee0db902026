"""The GPU-pool features on a real local Ray: several images per Patch-DiT call
(--dit-images: their patches batched by group), pools sized from measured work (--pools auto),
and the planner (`patchscaler plan`). Results stay within float rounding of the in-process
engine, image by image."""
import json
import re

import numpy as np
import pytest
from PIL import Image

from helpers import encode, photo, write_tree

ray = pytest.importorskip("ray")


def images() -> dict[str, bytes]:
    files = {f"p{i}.png": encode(photo(40, 32, seed=40 + i)) for i in range(5)}
    files["broken.png"] = b"\x89PNG\r\n\x1a\nnot really"
    return files


def test_several_images_per_call_and_auto_pools_match_in_process(ray_session, checkpoint, tmp_path, caplog):
    from pipeline.graph import run_pipeline
    from pipeline.local import run_local
    from pipeline.options import UpscaleOptions
    src = tmp_path / "in"
    write_tree(src, images())
    kw = dict(checkpoint=checkpoint, precision="fp32", max_batch=16, thresholds=(0.6, 0.4), report=False)
    caplog.set_level("INFO", logger="patchscaler")
    s = run_pipeline(UpscaleOptions(str(src), str(tmp_path / "ray"), dit_images=3, pools="auto",
                                    grm_actors=1, hard_actors=1, easy_actors=2, run_id="batched", **kw))
    assert s["ok"] == 5 and s["failed"] == 1 and s["errors"][0][0] == "broken.png"
    # --pools auto: a first wave of a photo per actor (broken.png p0 p1 p2: 3 upscaled), then the
    # 4 actors re-split for the rest by what the pools measured
    assert "wave 1 of 2: 4 photos, from broken.png" in caplog.text and "wave 2 of 2: 2 photos" in caplog.text
    resplit = re.search(r"pools from the work of 3 photo\(s\) \(s/photo: grm [\d.]+, hard [\d.]+, easy [\d.]+\): "
                        r"grm (\d) actors, hard (\d) actors, easy (\d) actors", caplog.text)
    assert resplit and sum(map(int, resplit.groups())) == 4, caplog.text
    ppg = s["patches_per_group"]
    assert all(c > 0 for c in ppg), ppg
    # the Patch-DiT pools did see several images per call
    per_call = [json.loads(r["trace"]).get("images_per_call", {}) for r in s["rows"] if r["status"] == "ok"]
    assert max(c.get("easy", 0) for c in per_call) > 1 and max(c.get("hard", 0) for c in per_call) > 1, per_call
    # every patch counted once by its pool's progress, batched or not
    assert s["stages"]["hard"][0] == ppg[2] and s["stages"]["easy"][0] == ppg[0] + ppg[1]
    ref = run_local(UpscaleOptions(str(src), str(tmp_path / "local"), run_id="ref", **kw))
    assert ref["patches_per_group"] == ppg
    for i in range(5):
        a = np.asarray(Image.open(tmp_path / "ray" / f"p{i}.png"), np.int16)
        b = np.asarray(Image.open(tmp_path / "local" / f"p{i}.png"), np.int16)
        assert np.abs(a - b).max() <= 1, f"p{i}.png"


def test_plan_command_prints_a_measured_split(checkpoint, tmp_path, capsys):
    from jobs.cli import main
    write_tree(tmp_path / "in", {f"p{i}.png": encode(photo(32, 32, seed=i)) for i in range(4)})
    assert main(["plan", str(tmp_path / "in"), "--checkpoint", checkpoint, "--sample", "2", "--gpus", "4"]) == 0
    out = capsys.readouterr().out
    assert "4 images in" in out and "4 GPUs" in out
    assert "measured on 2 sample image(s)" in out
    assert "measured split" in out and "even split" in out and "images/hour" in out
