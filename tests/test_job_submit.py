"""`ray job submit --working-dir . -- python -m jobs.upscale ...` against a real local head
(ray[default]; token auth as Ray 2.60 turns it on), and a repeated dated submission id is refused."""
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture()
def head(tmp_path):
    ray_bin = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")
    if ray_bin is None:
        pytest.skip("the ray CLI is not installed")
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16),
               RAY_ENABLE_UV_RUN_RUNTIME_ENV="0")
    env.pop("RAY_ADDRESS", None)
    cmd = [ray_bin, "start", "--head", "--num-cpus=2", "--port=6391", "--dashboard-host=127.0.0.1",
           "--dashboard-port=8291", "--include-dashboard=true", "--ray-client-server-port=10093",
           "--min-worker-port=20100", "--max-worker-port=20300"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    if r.returncode != 0:
        pytest.fail(f"ray start failed: {r.stderr[-2000:]}")
    yield ray_bin, env
    subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True, timeout=120)


def test_job_submit_runs_the_upscale_job(head, checkpoint, tmp_path):
    ray_bin, env = head
    out = tmp_path / "out"
    sub = [ray_bin, "job", "submit", "--address", "http://127.0.0.1:8291", "--working-dir", str(ROOT),
           "--submission-id", "upscale-2026-11-22", "--", "python", "-m", "jobs.upscale",
           str(ROOT / "patchscaler" / "samples"), str(out), "--checkpoint", checkpoint, "--no-report"]
    r = subprocess.run(sub, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "succeeded" in (r.stdout + r.stderr)
    assert len(list(out.glob("*.jpg"))) == 4 and list((out / "_manifest").glob("manifest-*.parquet"))
    again = subprocess.run(sub, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert again.returncode != 0  # the same dated id cannot run twice
