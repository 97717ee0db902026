"""Scaled-out RTM: two-stage FPS coverage, FAISS vs brute force, storage format, build job."""
import argparse
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import encode, photo
from patchscaler.rtm import RTM, FaissRTM
from patchscaler.rtm_build import coverage_radius, farthest_point_sampling
from rtm_index.fps import two_stage_fps
from rtm_index.format import RTMMismatch, load_rtm, save_rtm


def recall_at_k(approx: FaissRTM, exact: FaissRTM, queries: torch.Tensor, k: int) -> float:
    """Fraction of the exact top-k that the approximate index also returns."""
    _, a = approx.search(queries, k)
    _, e = exact.search(queries, k)
    hits = sum(len(set(a[r].tolist()) & set(e[r].tolist())) for r in range(len(e)))
    return hits / e.numel()


def test_two_stage_fps_covers_almost_as_well_as_exact():
    # clustered low-dimensional data, where coverage differences are visible
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(30, 3)) * 5
    x = torch.from_numpy((centres[rng.integers(0, 30, 3000)] + rng.normal(size=(3000, 3))).astype(np.float32))
    exact = coverage_radius(x, farthest_point_sampling(x, 100))
    two = coverage_radius(x, two_stage_fps(x, 100, shards=6))
    rand = coverage_radius(x, torch.randperm(3000)[:100])
    assert two <= 1.10 * exact < rand
    assert len(set(two_stage_fps(x, 100, shards=6).tolist())) == 100


def test_faiss_flat_topk_equals_brute_force():
    keys, vals = torch.randn(500, 32), torch.randn(500, 3, 4, 4)
    q = torch.randn(20, 32)
    fs, fi = FaissRTM(keys, vals).search(q, 5)
    bs, bi = RTM(keys, vals).search(q, 5)
    assert torch.equal(fi, bi) and torch.allclose(fs, bs, atol=1e-5)
    v, s = FaissRTM(keys, vals).retrieve(q, 5)
    assert torch.equal(v, vals[bi])


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_report_recall(kind):
    keys = torch.randn(4000, 32)
    q = keys[:200] + 0.05 * torch.randn(200, 32)
    exact = FaissRTM(keys, torch.zeros(4000, 1))
    approx = FaissRTM(keys, torch.zeros(4000, 1), kind=kind, nprobe=16)
    assert recall_at_k(approx, exact, q, 5) > 0.8


def test_store_round_trip_checksums_and_mismatch(tmp_path):
    keys, vals = torch.randn(50, 8), torch.randn(50, 3, 4, 4)
    uri = save_rtm(str(tmp_path), "v1", keys, vals, {"codec": "pixel_unshuffle", "texture_version": "T1"})
    rtm = load_rtm(uri, expect={"codec": "pixel_unshuffle", "texture_version": "T1"})
    assert rtm.size == 50 and rtm.meta["version"] == "v1"
    _, i = rtm.search(keys[:3], 1)
    assert i[:, 0].tolist() == [0, 1, 2]
    with pytest.raises(RTMMismatch, match="texture_version"):
        load_rtm(uri, expect={"texture_version": "T2"})
    (tmp_path / "rtm-v1" / "index.faiss").write_bytes(b"broken")
    with pytest.raises(RTMMismatch, match="checksum"):
        load_rtm(uri)


def _args(src, dst, ckpt, **kw):
    from jobs.rtm_job import add_args
    p = argparse.ArgumentParser()
    add_args(p)
    a = p.parse_args([src, dst, "--checkpoint", ckpt, "--crops-per-image", "8", "--size", "12",
                      "--version", "t", "--actor-cpus", "0.25"])
    for k, v in kw.items():
        setattr(a, k, v)
    return a


def test_build_job_on_local_folder_skips_corrupt_and_is_deterministic(ray_session, checkpoint, tmp_path):
    from jobs.rtm_job import build
    src = tmp_path / "hr"
    src.mkdir()
    for i in range(4):
        (src / f"p{i}.png").write_bytes(encode(photo(48, 40, seed=i)))
    (src / "corrupt.jpg").write_bytes(b"\xff\xd8\xff garbage")
    s = build(_args(str(src), str(tmp_path / "out"), checkpoint))
    assert [x[0] for x in s["skipped"]] == ["corrupt.jpg"]
    assert s["candidates"] == 32 and s["size"] == 12
    rtm = load_rtm(s["uri"])
    assert rtm.size == 12 and tuple(rtm.values.shape[1:]) == (48, 8, 8)
    assert json.loads((tmp_path / "out" / "rtm-t" / "rtm.json").read_text())["skipped"][0][0] == "corrupt.jpg"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["rtm-t"]   # no shard scratch left
    local = build(_args(str(src), str(tmp_path / "out2"), checkpoint, engine="local"))
    assert torch.equal(load_rtm(local["uri"]).values, rtm.values)  # same crops, same FPS
    # fewer candidates than crop slots (40, with the corrupt image's), two-stage FPS: the shards'
    # FPS runs in Ray tasks on the workers, and the in-process engine chooses the same entries
    two = build(_args(str(src), str(tmp_path / "out3"), checkpoint, candidates=20, shards=2))
    assert two["candidates"] <= 20 and len(two["fps_tasks"]) == 2
    assert all(t["pid"] != os.getpid() for t in two["fps_tasks"])
    two_local = build(_args(str(src), str(tmp_path / "out4"), checkpoint, candidates=20, shards=2, engine="local"))
    assert torch.equal(load_rtm(two_local["uri"]).values, load_rtm(two["uri"]).values)


def test_candidate_slots_keep_the_candidates_the_whole_crop_set_would_sample():
    """The candidates are chosen before any feature is computed, as a seeded sample of every
    image's crop slots: exactly --candidates of them, the same slots the v0.7 build sampled
    after computing all crops, and an image with no kept slot is not read at all."""
    from rtm_index.build import candidate_slots
    n, k, c = 1000, 32, 5000
    slots_of = candidate_slots(n, k, c, seed=3)
    slots = np.concatenate([i * k + keep for i, keep in enumerate(slots_of)])
    assert len(slots) == c and np.array_equal(slots, np.sort(np.random.default_rng(3).choice(n * k, c, replace=False)))
    assert all(len(keep) <= k and (keep < k).all() for keep in slots_of)
    assert sum(len(keep) == 0 for keep in candidate_slots(100_000, 32, 20_000, 0)) > 80_000
    assert [len(x) for x in candidate_slots(3, 8, 100, 0)] == [8, 8, 8]   # fewer slots than candidates: all


def test_build_job_on_s3(ray_session, checkpoint, s3_endpoint):
    s3, endpoint, so = s3_endpoint
    s3.create_bucket(Bucket="hr-images")
    for i in range(3):
        s3.put_object(Bucket="hr-images", Key=f"set/p{i}.png", Body=encode(photo(40, 40, seed=i)))
    from jobs.rtm_job import build
    s = build(_args("s3://hr-images/set", "s3://hr-images/rtm", checkpoint, s3_endpoint=endpoint,
                    storage_options={"key": "test", "secret": "test"}))
    assert load_rtm(s["uri"], options=so).size == 12


def test_upscale_job_uses_a_built_rtm(checkpoint, tmp_path):
    from pipeline.local import run_local
    from pipeline.options import UpscaleOptions
    keys, vals = torch.randn(20, 32), torch.randn(20, 48, 8, 8)
    meta = {"codec": "pixel_unshuffle", "codec_factor": 4, "patch_size": 8, "texture_version": "T-untrained",
            "feature_dim": 32}
    uri = save_rtm(str(tmp_path / "rtm"), "x", keys, vals, meta)
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.png").write_bytes(encode(photo(16, 16)))
    s = run_local(UpscaleOptions(str(src), str(tmp_path / "out"), checkpoint=checkpoint, rtm=uri, report=False))
    assert s["ok"] == 1
    bad = save_rtm(str(tmp_path / "rtm"), "y", keys, vals, {**meta, "texture_version": "other"})
    with pytest.raises(RTMMismatch):
        run_local(UpscaleOptions(str(src), str(tmp_path / "out2"), checkpoint=checkpoint, rtm=bad, report=False))


def test_rtm_on_s3_with_a_local_src_gets_the_endpoint_and_credentials(checkpoint, tmp_path, s3_endpoint):
    """--rtm s3://... beside a local SRC: the RTM's store gets --s3-endpoint (it used to get
    SRC's options, i.e. none, and failed to connect)."""
    import s3fs

    from jobs.cli import main
    s3, endpoint, options = s3_endpoint
    s3.create_bucket(Bucket="models")
    keys, vals = torch.randn(20, 32), torch.randn(20, 48, 8, 8)
    meta = {"codec": "pixel_unshuffle", "codec_factor": 4, "patch_size": 8, "texture_version": "T-untrained",
            "feature_dim": 32}
    local = save_rtm(str(tmp_path / "rtm"), "x", keys, vals, meta)
    for f in sorted(Path(local).rglob("*")):
        if f.is_file():
            s3.put_object(Bucket="models", Key=f"rtm/{f.relative_to(tmp_path / 'rtm').as_posix()}", Body=f.read_bytes())
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.png").write_bytes(encode(photo(16, 16)))
    s3fs.S3FileSystem.clear_instance_cache()
    uri = "s3://models/rtm/" + Path(local).relative_to(tmp_path / "rtm").as_posix()
    assert main(["upscale", str(src), str(tmp_path / "out"), "--engine", "local", "--checkpoint", checkpoint,
                 "--rtm", uri, "--s3-endpoint", endpoint, "--no-report"]) == 0
    assert (tmp_path / "out" / "a.png").exists()


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_an_rtm_is_served_memory_mapped_with_the_same_retrievals(tmp_path):
    """Opening an RTM reads its keys into the index, not its values: 50 MB of values cost a few
    MB of memory until retrieved, and retrievals equal those of the RTM held in RAM."""
    g = torch.Generator().manual_seed(0)
    keys, vals = torch.randn(2000, 32, generator=g), torch.randn(2000, 48, 16, 16, generator=g).half()
    meta = {"codec": "pixel_unshuffle", "feature_dim": 32}
    uri = save_rtm(str(tmp_path / "rtm"), "big", keys, vals, meta, index_kind="ivf")
    before = _rss_mib()
    served = load_rtm(uri)
    grew = _rss_mib() - before
    assert grew < 15, f"opening the RTM took {grew:.1f} MiB"
    in_ram = FaissRTM(keys, vals, meta, index=served.index)
    q = torch.randn(64, 32, generator=g)
    (v1, s1), (v2, s2) = served.retrieve(q, 4), in_ram.retrieve(q, 4)
    assert torch.equal(v1, v2) and torch.equal(s1, s2)
    assert np.allclose(served.keys, in_ram.keys, atol=2e-3)   # stored as float16
    # a corrupt copy is refused before anything is served
    blob = (tmp_path / "rtm" / "rtm-big" / "keys.safetensors")
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(RTMMismatch, match="checksum"):
        load_rtm(uri)
