"""The nightly scenario end to end: three runs of the Ray pipeline on a growing S3
prefix (moto server over HTTP), the second one killed mid-run (SIGKILL to its driver), with a
colliding name pair, a corrupt file, a key that climbs out of the prefix ('..'), and a DST
inside SRC that is refused. Every good image is
written exactly once (the results bucket is versioned: one version per output), every run has
at most one manifest row per input, and no image is upscaled twice."""
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from helpers import encode, photo

ROOT = Path(__file__).parents[2]
ray = pytest.importorskip("ray")


def test_three_nights_on_a_growing_s3_prefix(ray_session, checkpoint, s3_endpoint):
    from jobs.cli import main
    from pipeline.graph import run_pipeline
    from pipeline.options import UpscaleOptions
    s3, endpoint, _ = s3_endpoint
    s3.create_bucket(Bucket="archive")
    s3.create_bucket(Bucket="results")
    s3.put_bucket_versioning(Bucket="results", VersioningConfiguration={"Status": "Enabled"})
    so = {"client_kwargs": {"endpoint_url": endpoint}}  # credentials: the environment, as cron has them
    model = dict(checkpoint=checkpoint, precision="fp32", max_batch=16, thresholds=(0.6, 0.4), report=False)

    def put(files: dict):
        for name, data in files.items():
            s3.put_object(Bucket="archive", Key=f"in/{name}", Body=data)

    def outputs() -> dict[str, int]:
        """image output key -> number of versions written"""
        counts: dict[str, int] = {}
        for page in s3.get_paginator("list_object_versions").paginate(Bucket="results", Prefix="out/"):
            for v in page.get("Versions", []):
                if "/_manifest/" not in v["Key"]:
                    counts[v["Key"][4:]] = counts.get(v["Key"][4:], 0) + 1
        return counts

    def manifest(run: str) -> list[dict]:
        body = s3.get_object(Bucket="results", Key=f"out/_manifest/manifest-{run}.parquet")["Body"].read()
        return pq.read_table(io.BytesIO(body)).to_pylist()

    night1 = {"a.png": encode(photo(24, 20, seed=1)), "b.gif": encode(photo(16, 12, seed=2).convert("P"), "GIF"),
              "b.png": encode(photo(20, 16, seed=3)), "broken.jpg": b"\xff\xd8\xff\xe0 not a jpeg",
              "deep/c.jpg": encode(photo(20, 20, seed=4), "JPEG")}
    put(night1)

    # DST inside SRC: refused before anything is read or written (exit 2)
    assert main(["upscale", "s3://archive/in", "s3://archive/in/up", "--s3-endpoint", endpoint,
                 "--checkpoint", checkpoint]) == 2
    assert not [o for o in s3.list_objects_v2(Bucket="archive")["Contents"] if "/up/" in o["Key"]]

    # night 1 (the in-process engine: the same plan, stores and manifest; nights 2 and 3 are Ray's)
    from pipeline.local import run_local
    s1 = run_local(UpscaleOptions("s3://archive/in", "s3://results/out", src_options=so, dst_options=so,
                                  run_id="night1", **model))
    assert s1["ok"] == 4 and s1["failed"] == 1
    assert outputs() == {"a.png": 1, "b.gif.png": 1, "b.png": 1, "deep/c.jpg": 1}

    # night 2: six new photos; the run is killed (SIGKILL to the driver) after its first output
    night2 = {f"n2/p{i}.png": encode(photo(24, 20, seed=10 + i)) for i in range(6)}
    put(night2)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "jobs.cli", "upscale", "s3://archive/in", "s3://results/out",
                             "--s3-endpoint", endpoint, "--checkpoint", checkpoint, "--thresholds", "0.6,0.4",
                             "--max-batch", "16", "--no-report", "--run-id", "night2",
                             "--address", ray_session.get_runtime_context().gcs_address],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not any(k.startswith("n2/") for k in outputs()):
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "night 2 wrote nothing"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stderr.close()
    killed_with = {k for k in outputs() if k.startswith("n2/")}
    assert 1 <= len(killed_with) < 6, killed_with

    # night 3: two more; it folds night 2's rows and does only what is missing
    night3 = {"n3/q0.png": encode(photo(20, 20, seed=30)), "n3/q1.jpg": encode(photo(24, 16, seed=31), "JPEG")}
    put(night3)
    put({"x/../../escape.jpg": encode(photo(8, 8), "JPEG")})   # a key no run may read or write by
    time.sleep(2)  # any write of night 2's dying actors has landed by now
    after_kill = {k for k in outputs() if k.startswith("n2/")}
    s3_ = run_pipeline(UpscaleOptions("s3://archive/in", "s3://results/out", src_options=so, dst_options=so,
                                      run_id="night3", **model))
    assert s3_["recovered"].get("night2", 0) >= len(killed_with)
    # the key with '..' is not read, and the manifest says so (not a silent skip)
    assert [(n, "unsafe key" in why) for n, why in s3_["not_read"]] == [("x/../../escape.jpg", True)]
    assert {r["input"]: r for r in manifest("night3")}["x/../../escape.jpg"]["status"] == "skipped"
    assert not [o["Key"] for o in s3.list_objects_v2(Bucket="results")["Contents"] if "escape" in o["Key"]]
    q0 = s3.get_object(Bucket="results", Key="out/n3/q0.png")["Body"].read()
    assert Image.open(io.BytesIO(q0)).size == (80, 80)
    good = [k for k in {**night1, **night2, **night3} if k != "broken.jpg"]
    expected = {"b.gif": "b.gif.png"}
    final = outputs()
    # every good image written, each exactly once; nothing else written
    assert final == {expected.get(k, k): 1 for k in good}, final
    # no image upscaled twice: night 3 did only the images no earlier run finished
    done_before = {r["input"] for run in ("night1", "night2") for r in manifest(run) if r["status"] == "ok"}
    n3 = manifest("night3")
    assert not {r["input"] for r in n3 if r["status"] == "ok"} & done_before
    assert {r["input"] for r in n3 if r["status"] == "ok"} == set(good) - done_before
    assert {r["input"] for r in n3 if r["status"] == "ok"} >= set(night2) - after_kill
    # one manifest row per input per run; the corrupt file failed once, and later runs list it as
    # still bad without trying it again (its object's ETag is unchanged)
    for run in ("night1", "night2", "night3"):
        rows = manifest(run)
        assert len(rows) == len({r["input"] for r in rows}), run
    assert {r["input"]: r["status"] for r in manifest("night1")}["broken.jpg"] == "error"
    broken = {r["input"]: r for r in manifest("night3")}["broken.jpg"]
    assert broken["status"] == "skipped" and broken["error"].startswith("still bad (unchanged since run night1)")
    # night 2's record: what it finished is ok, what it left half done says so
    n2 = {r["input"]: r for r in manifest("night2")}
    assert {k for k, r in n2.items() if r["status"] == "ok"} == {k for k in night2 if k in after_kill}
    assert all(r["status"] in ("ok", "interrupted", "error", "skipped") for r in n2.values())
    # nothing loose left behind
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="results", Prefix="out/_manifest/")["Contents"]]
    assert not [k for k in keys if k.endswith(".json")], keys
