"""bench/gpu.py is the prepared script for a GPU machine: it must work before it gets there. Here
it runs on CPU with tiny settings, end to end, with the int8 Real-ESRGAN weights that can travel
with it, and the Ray pipeline against the in-process engine."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def _bench(*args, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), TMPDIR=str(tmp_path))
    return subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.bench
def test_gpu_bench_runs_on_cpu_with_the_carried_int8_weights(tmp_path):
    pytest.importorskip("safetensors")
    from safetensors.torch import load_file

    from patchscaler.realesrgan import load_backbone
    carry = tmp_path / "x4plus-int8.safetensors"
    r = _bench("--make-carry", str(carry), "--threads", "1", tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    # small enough to travel beside the checkpoint (64 MiB in all), and close to the real weights
    assert carry.stat().st_size < 20 * 2 ** 20
    sd, ref = load_file(str(carry)), load_backbone("rrdb").state_dict()
    name = next(k for k, v in ref.items() if v.dim() == 4)
    w = sd[name + ".int8"].float() * sd[name + ".scale"]
    step = ref[name].abs().amax((1, 2, 3), keepdim=True) / 127
    assert sd[name + ".int8"].dtype == torch.int8
    assert ((w - ref[name]).abs() <= step / 2 + 1e-7).all()

    out = tmp_path / "out"
    r = _bench("--device", "cpu", "--grm-int8", str(carry), "--n", "2", "--lr-size", "16", "--repeats", "1",
               "--threads", "1", "--max-batch", "8", "--dit-images", "2", "--out", str(out), "--ray", tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    for line in ("images/s", "whole method fp32 / Real-ESRGAN alone", "PGS / uniform", "2 images per call"):
        assert line in r.stdout, r.stdout
    report = json.loads((out / "gpu.json").read_text())
    assert report["photos"] == 2 and report["lr_size"] == 16
    assert set(report["images_per_s"]) == {"Real-ESRGAN alone", "PatchScaler fp32"}
    assert all(v > 0 for v in report["images_per_s"].values())
    assert abs(sum(report["group_fractions"]) - 1) < 1e-6
    assert {"fp32 PGS", "fp32 uniform"} <= set(report["dit_seconds"])
    assert "Ray pipeline / in-process" in r.stdout and set(report["engine_seconds"]) == {"Ray pipeline", "in-process"}
