"""GRM restoration stage (Real-ESRGAN x4plus) in PyTorch vs the original model files run by the
`ncnn` package on CPU, same input, same process, interleaved; prints ratios and output diffs.

    python bench/grm_vs_ncnn.py [--size 64] [--repeats 3] [--threads 2]
"""
import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from patchscaler.realesrgan import load_backbone, ncnn_model_dir

ap = argparse.ArgumentParser()
ap.add_argument("--size", type=int, default=64)
ap.add_argument("--repeats", type=int, default=3)
ap.add_argument("--threads", type=int, default=2)
a = ap.parse_args()
torch.set_num_threads(a.threads)
import ncnn  # noqa: E402

photo = Path(__file__).parents[1] / "patchscaler" / "samples" / "skimage__astronaut.jpg"
img = Image.open(photo).convert("RGB").resize((a.size, a.size), Image.BICUBIC)
x = np.ascontiguousarray((np.asarray(img, np.float32) / 255).transpose(2, 0, 1))
net = ncnn.Net()
net.opt.use_vulkan_compute = False
net.opt.num_threads = a.threads
d = ncnn_model_dir()
net.load_param(str(d / "realesrgan-x4plus.param"))
net.load_model(str(d / "realesrgan-x4plus.bin"))
model = load_backbone("rrdb")
model_cl = load_backbone("rrdb").to(memory_format=torch.channels_last)
xt = torch.from_numpy(x)[None]
xcl = xt.contiguous(memory_format=torch.channels_last)


def run_ncnn():
    mat = ncnn.Mat(x)
    ex = net.create_extractor()
    ex.input("data", mat)
    return np.array(ex.extract("output")[1]).copy()


def run_fp32():
    with torch.no_grad():
        return model(xt)[0].numpy()


def run_fp32_cl():
    with torch.no_grad():
        return model_cl(xcl)[0].numpy()


def run_bf16():
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        return model_cl(xcl)[0].float().numpy()


variants = {"ncnn": run_ncnn, "torch fp32": run_fp32, "torch fp32+channels_last": run_fp32_cl, "torch bf16+channels_last": run_bf16}
outs = {k: f() for k, f in variants.items()}  # warm-up
times = {k: [] for k in variants}
for _ in range(a.repeats):
    for k, f in variants.items():
        t = time.perf_counter()
        f()
        times[k].append(time.perf_counter() - t)
med = {k: statistics.median(v) for k, v in times.items()}
print(f"input {a.size}x{a.size}, {a.threads} threads, median of {a.repeats}")
for k in variants:
    diff = np.abs(outs[k].clip(0, 1) - outs["ncnn"].clip(0, 1)).max() * 255
    print(f"{k:<28} {med[k]:7.3f} s   time/ncnn {med[k] / med['ncnn']:5.2f}   max|diff| vs ncnn {diff:6.2f}/255")
