"""The RTM at dataset scale, three measurements:

  build  the build's driver peak RSS and wall time per image, at two dataset sizes (default 600
         and 6000 synthetic 256 px images; `patchscaler build-rtm --engine local
         --crops-per-image 32 --candidates 100000 --size 500`, the shipped checkpoint's codec and
         T). Each size runs in a fresh process: peak RSS is a process's lifetime maximum.
  fps    two-stage farthest point sampling against exact FPS: the coverage radius (the largest
         distance from a candidate to its nearest chosen point; smaller is better) on 10^5
         synthetic 128-d keys (-> 2000), and the wall time of both on 10^6 keys (-> 500; keys only).
  serve  an RTM of 2k, 20k and 200k synthetic entries (48x16x16 float16 values, IVF index)
         opened by a Ray actor as a Patch-DiT actor opens it: the actor's private memory
         (RssAnon) after opening and after retrieving the top 4 for 20 000 patches, the file
         pages it maps (RssFile: page cache, shared by the node's actors, dropped by the kernel
         under pressure), and the retrieval time per patch.

    OMP_WAIT_POLICY=PASSIVE python bench/rtm_scale.py build [--sizes 600,6000]
    OMP_WAIT_POLICY=PASSIVE python bench/rtm_scale.py fps [--n 100000] [--big 1000000] [--big-size 500]
    OMP_WAIT_POLICY=PASSIVE python bench/rtm_scale.py serve [--entries 2000,20000,200000]

Threads: 2 intra-op threads (`--threads`), OMP_WAIT_POLICY=PASSIVE (set here if unset).
Scratch goes to a temporary folder (200k entries: 4.9 GB on disk), removed at the end."""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from actors.runtime import passive_openmp  # noqa: E402

passive_openmp()   # before torch loads, here and in the processes this starts

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402


def make_images(folder: Path, n: int, size: int = 256) -> None:
    """n distinct 256 px photos-like images: smooth colour fields with noise, seeded by index."""
    import numpy as np
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rng = np.random.default_rng(i)
        y, x = np.mgrid[0:size, 0:size] / size
        base = np.stack([np.sin(6 * x * rng.uniform(0.5, 2) + rng.uniform(0, 6)),
                         np.cos(5 * y * rng.uniform(0.5, 2) + rng.uniform(0, 6)),
                         np.sin(4 * (x + y) * rng.uniform(0.5, 2))], -1)
        img = (127 + 90 * base + rng.normal(0, 12, base.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"img{i:06d}.png")


def build_one(src: str, dst: str, threads: int) -> dict:
    """In this (fresh) process: one build, its peak RSS."""
    import torch
    torch.set_num_threads(threads)
    from jobs.rtm_job import BuildRTMOptions, build
    t0 = time.perf_counter()
    s = build(BuildRTMOptions(src, dst, crops_per_image=32, candidates=100_000, size=500, engine="local",
                              version="bench").namespace())
    return {"images": s["images"], "candidates": s["candidates"], "seconds": time.perf_counter() - t0,
            "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def bench_build(a, tmp: Path) -> None:
    out = {}
    for n in a.sizes:
        src = tmp / f"img{n}"
        make_images(src, n)
        code = (f"import json, sys; sys.path.insert(0, {str(ROOT)!r}); sys.argv = ['x']; "
                f"from bench.rtm_scale import build_one; "
                f"print('RESULT', json.dumps(build_one({str(src)!r}, {str(tmp / f'rtm{n}')!r}, {a.threads})))")
        r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
        line = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
        if not line:
            raise SystemExit(r.stderr[-3000:])
        out[n] = json.loads(line[0][7:])
        o = out[n]
        print(f"{n:>6} images: {o['candidates']:>6} candidates, driver peak RSS {o['peak_gib']:.2f} GiB, "
              f"{o['seconds']:.0f} s ({1000 * o['seconds'] / n:.0f} ms per image)", flush=True)
        shutil.rmtree(src)
    lo, hi = min(a.sizes), max(a.sizes)
    print(f"peak RSS {hi} / {lo} images: {out[hi]['peak_gib'] / out[lo]['peak_gib']:.2f}x")


def bench_fps(a) -> None:
    import numpy as np
    import torch
    torch.set_num_threads(a.threads)
    from patchscaler.rtm_build import farthest_point_sampling
    from rtm_index.fps import two_stage_fps

    def keys(n: int, seed: int) -> torch.Tensor:
        rng = np.random.default_rng(seed)     # clustered, as texture features are
        centres = rng.normal(size=(200, 128)).astype(np.float32) * 3
        x = centres[rng.integers(0, 200, n)] + rng.normal(size=(n, 128)).astype(np.float32)
        return torch.from_numpy(x / np.linalg.norm(x, axis=1, keepdims=True))

    def radius(x, chosen) -> float:
        c = x[chosen]
        return max(float(torch.cdist(x[i:i + 8192], c).min(1).values.max()) for i in range(0, len(x), 8192))

    x = keys(a.n, 0)
    exact = radius(x, farthest_point_sampling(x, a.size))
    for shards in (4, 16):
        two = radius(x, two_stage_fps(x, a.size, shards))
        print(f"coverage radius, {a.n} keys -> {a.size}: two-stage over {shards} shards {two:.4f}, "
              f"exact {exact:.4f} ({two / exact:.3f}x)", flush=True)
    x = keys(a.big, 1)
    t0 = time.perf_counter()
    farthest_point_sampling(x, a.big_size)
    t_exact = time.perf_counter() - t0
    t0 = time.perf_counter()
    two_stage_fps(x, a.big_size, 16)
    t_two = time.perf_counter() - t0
    print(f"{a.big} keys -> {a.big_size}, one process, {a.threads} threads: exact {t_exact:.0f} s, two-stage over "
          f"16 shards {t_two:.0f} s in sequence ({t_two / 16:.1f} s per shard-equivalent when the shards run "
          f"side by side as Ray tasks)")


def synthetic_rtm(folder: Path, n: int) -> str:
    """An RTM folder of n random entries, written a block at a time (values never held whole)."""
    import numpy as np
    import torch

    from rtm_index.format import save_rtm
    path = folder / f"values{n}.bin"
    values = np.memmap(path, dtype=np.float16, mode="w+", shape=(n, 48, 16, 16))
    rng = np.random.default_rng(n)
    for i in range(0, n, 4096):
        values[i:i + 4096] = rng.normal(size=values[i:i + 4096].shape).astype(np.float16)
    values.flush()
    keys = torch.from_numpy(rng.normal(size=(n, 128)).astype(np.float32))
    meta = {"codec": "pixel_unshuffle", "feature_dim": 128}
    uri = save_rtm(str(folder / "rtm"), f"s{n}", keys, torch.from_numpy(values), meta, index_kind="ivf")
    del values
    path.unlink()
    return uri


class Server:
    """What a Patch-DiT actor does with an RTM: open it, retrieve texture prompts."""

    def __init__(self, uri: str):
        import torch
        torch.set_num_threads(1)
        from rtm_index.format import load_rtm
        t0 = time.perf_counter()
        self.rtm = load_rtm(uri)
        self.open_s = time.perf_counter() - t0

    def rss_gib(self) -> tuple[float, float]:
        """(private memory, mapped file pages) in GiB: RssAnon, and RssFile, which is the shared
        page cache (every actor on a node maps the same pages; the kernel can drop them)."""
        with open("/proc/self/status") as f:
            kb = {x.split(":")[0]: int(x.split()[1]) for x in f if x.startswith(("RssAnon", "RssFile"))}
        return kb["RssAnon"] / 2**20, kb["RssFile"] / 2**20

    def retrieve(self, patches: int, batch: int = 64) -> float:
        import torch
        g = torch.Generator().manual_seed(0)
        t0 = time.perf_counter()
        for _ in range(patches // batch):
            self.rtm.retrieve(torch.randn(batch, 128, generator=g), 4)
        return (time.perf_counter() - t0) / patches

    def opened(self) -> float:
        return self.open_s


def bench_serve(a, tmp: Path) -> None:
    import ray
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    actor_cls = ray.remote(num_cpus=0.5)(Server)
    for n in a.entries:
        uri = synthetic_rtm(tmp, n)
        s = actor_cls.remote(uri)
        opened, rss0 = ray.get([s.opened.remote(), s.rss_gib.remote()])
        per_patch = ray.get(s.retrieve.remote(a.patches))
        rss1 = ray.get(s.rss_gib.remote())
        size = sum(f.stat().st_size for f in Path(uri).iterdir()) / 2**30
        print(f"{n:>7} entries ({size:.2f} GiB on disk): actor private memory {rss0[0]:.2f} GiB opened "
              f"({opened:.1f} s, with the checksum), {rss1[0]:.2f} GiB after {a.patches} patches' top-4 "
              f"(mapped file pages {rss1[1]:.2f} GiB: shared page cache); {1e6 * per_patch:.0f} us per patch",
              flush=True)
        ray.kill(s)
        shutil.rmtree(tmp / "rtm")
    ray.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["build", "fps", "serve"])
    ap.add_argument("--sizes", default="600,6000", help="build: dataset sizes (images)")
    ap.add_argument("--n", type=int, default=100_000, help="fps: keys for the coverage radius")
    ap.add_argument("--big", type=int, default=1_000_000, help="fps: keys for the timing")
    ap.add_argument("--size", type=int, default=2000, help="fps: points chosen from --n keys")
    ap.add_argument("--big-size", type=int, default=500, help="fps: points chosen from --big keys")
    ap.add_argument("--entries", default="2000,20000,200000", help="serve: RTM sizes")
    ap.add_argument("--patches", type=int, default=20_000, help="serve: patches retrieved for")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    a.sizes = [int(x) for x in a.sizes.split(",")]
    a.entries = [int(x) for x in a.entries.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="ps-rtm-scale-"))
    print(f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, {a.threads} threads; scratch {tmp}", flush=True)
    try:
        if a.what == "build":
            bench_build(a, tmp)
        elif a.what == "fps":
            bench_fps(a)
        else:
            bench_serve(a, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
