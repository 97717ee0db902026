"""RTM build throughput and retrieval cost, one run, printed as ratios:
  * crops/s of `build-rtm` (Ray Data feature actors) with 1 vs 2 actors, same images;
  * FAISS retrieval time per patch vs Patch-DiT time per patch (default model config, one
    hard-group refinement of 20 steps, 64 patches).

    python bench/rtm_build_speed.py [--images 16] [--crops 32] [--threads 2]
"""
import argparse
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

ap = argparse.ArgumentParser()
ap.add_argument("--images", type=int, default=16)
ap.add_argument("--crops", type=int, default=32)
ap.add_argument("--threads", type=int, default=2)
a = ap.parse_args()
torch.set_num_threads(a.threads)
tmp = Path(tempfile.mkdtemp(prefix="ps-rtm-bench-"))
samples = sorted((Path(__file__).parents[1] / "patchscaler" / "samples").glob("*.jpg"))
src = tmp / "hr"
src.mkdir()
for i in range(a.images):  # 256 px images made from the samples (flipped/rotated copies)
    im = Image.open(samples[i % len(samples)]).convert("RGB").resize((256, 256), Image.BICUBIC)
    im.rotate(90 * (i // len(samples))).save(src / f"hr{i:03d}.png")

import ray  # noqa: E402

from jobs.rtm_job import add_args, build  # noqa: E402

ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
rate = {}
for n in (1, 2):
    p = argparse.ArgumentParser()
    add_args(p)
    args = p.parse_args([str(src), str(tmp / f"rtm{n}"), "--crops-per-image", str(a.crops), "--size", "256",
                         "--feature-actors", str(n), "--actor-cpus", "0.5", "--version", f"b{n}"])
    s = build(args)
    rate[n] = s["candidates"] / s["seconds_features"]
ray.shutdown()

from patchscaler.model import PatchScaler, Runtime, patch_noise  # noqa: E402
from patchscaler.config import PatchScalerConfig, GRMConfig  # noqa: E402
from patchscaler.rtm import FaissRTM  # noqa: E402

cfg = PatchScalerConfig(grm=GRMConfig(backbone="unet"))
model = PatchScaler(cfg).configure(Runtime())
C, V = cfg.latent_channels, cfg.pgs.patch_size
model.rtm = FaissRTM(torch.randn(2000, cfg.texture.feature_dim), torch.randn(2000, C, V, V).half())
y0 = torch.randn(64, C, V, V)
with torch.no_grad():
    q = model.texture(y0)
t = time.perf_counter()
for _ in range(5):
    model.rtm.retrieve(q, cfg.texture.top_k)
t_ret = (time.perf_counter() - t) / 5 / 64
t = time.perf_counter()
model.refine(y0, 2, patch_noise(0, list(range(64)), (C, V, V)))
t_dit = (time.perf_counter() - t) / 64

print(f"\nbuild-rtm feature stage: 1 actor {rate[1]:.1f} crops/s, 2 actors {rate[2]:.1f} crops/s, "
      f"ratio {rate[2] / rate[1]:.2f}")
print(f"retrieval (FAISS flat, 2000 entries, top-{cfg.texture.top_k}) {t_ret * 1e6:.0f} us/patch; "
      f"Patch-DiT hard group (20 steps) {t_dit * 1e3:.0f} ms/patch; ratio {t_ret / t_dit:.5f}")
