"""Ray pipeline vs the in-process loop: same model (a tiny one by default, or --checkpoint),
same images, one run. Prints wall-time ratios with Ray's start-up reported apart, and the
peak memory (driver + all Ray processes) for N and 4N images, as a ratio: the graph streams,
so memory must not grow with the number of images.

    python bench/pipeline_overhead.py [--images 32] [--size 48] [--checkpoint PATH]
"""
import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import torch
from PIL import Image

ap = argparse.ArgumentParser()
ap.add_argument("--images", type=int, default=32)
ap.add_argument("--size", type=int, default=48)
ap.add_argument("--checkpoint")
a = ap.parse_args()
torch.set_num_threads(2)
tmp = Path(tempfile.mkdtemp(prefix="ps-bench-"))

if a.checkpoint:
    ckpt = a.checkpoint
else:
    from patchscaler import PatchScaler, tiny_config
    from patchscaler.checkpoint import save
    from patchscaler.rtm import RTM
    torch.manual_seed(0)
    m = PatchScaler(tiny_config())
    m.rtm = RTM(torch.randn(64, 32), torch.randn(64, 48, 8, 8))
    ckpt = str(tmp / "tiny.safetensors")
    save(m, ckpt)

samples = sorted((Path(__file__).parents[1] / "patchscaler" / "samples").glob("*.jpg"))


def make_inputs(n: int) -> str:
    d = tmp / f"in{n}"
    d.mkdir()
    for i in range(n):
        im = Image.open(samples[i % len(samples)]).convert("RGB")
        x, y = (i * 7) % (im.width - a.size), (i * 5) % (im.height - a.size)
        im.crop((x, y, x + a.size, y + a.size)).save(d / f"img{i:04d}.png")
    return str(d)


def ray_rss() -> int:
    """Summed RSS (bytes) of this process and every Ray process, read from /proc (Linux)."""
    total = 0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if int(d.name) == os.getpid() or "ray::" in cmd or "raylet" in cmd or "gcs_server" in cmd:
                for line in (d / "status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except (OSError, ValueError):
            continue
    return total


class PeakRSS:
    """Samples the summed RSS of this process and every Ray process every 0.1 s."""

    def __init__(self):
        self.peak, self._stop = 0, threading.Event()

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, ray_rss())
            time.sleep(0.1)

    def __enter__(self):
        self.t = threading.Thread(target=self._sample, daemon=True)
        self.t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.t.join()


from pipeline.graph import run_pipeline  # noqa: E402
from pipeline.local import run_local  # noqa: E402
from pipeline.options import UpscaleOptions  # noqa: E402

n = a.images
src = make_inputs(n)
opts = dict(checkpoint=ckpt, report=False)
t = time.perf_counter()
local = run_local(UpscaleOptions(src, str(tmp / "local"), **opts))
t_local = time.perf_counter() - t

import ray  # noqa: E402

t = time.perf_counter()
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
t_init = time.perf_counter() - t
with PeakRSS() as mem_small:
    t = time.perf_counter()
    small = run_pipeline(UpscaleOptions(src, str(tmp / "ray"), **opts))
    t_ray = time.perf_counter() - t
src4 = make_inputs(4 * n)
with PeakRSS() as mem_big:
    t = time.perf_counter()
    big = run_pipeline(UpscaleOptions(src4, str(tmp / "ray4"), **opts))
    t_ray4 = time.perf_counter() - t
assert local["ok"] == small["ok"] == n and big["ok"] == 4 * n

print(f"\n{n} images of {a.size}x{a.size}, 2 CPUs")
print(f"in-process loop                 {t_local:7.1f} s")
print(f"ray.init (start-up, apart)      {t_init:7.1f} s")
print(f"Ray pipeline, {n:4d} images       {t_ray:7.1f} s   ratio to in-process {t_ray / t_local:5.2f}")
print(f"Ray pipeline, {4 * n:4d} images       {t_ray4:7.1f} s   per-image time ratio 4N/N {t_ray4 / 4 / t_ray:5.2f}")
print(f"peak RSS (driver + Ray) N: {mem_small.peak / 2**20:7.0f} MiB   4N: {mem_big.peak / 2**20:7.0f} MiB"
      f"   ratio 4N/N {mem_big.peak / mem_small.peak:5.2f}")
ray.shutdown()
