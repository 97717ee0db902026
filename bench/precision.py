"""bf16 vs fp32 on this machine: Real-ESRGAN alone and the whole method (bf16-dit: the Patch-DiT
in bf16, the GRM in fp32; bf16: everything) on photos, interleaved; prints time ratios and how
far the bf16 outputs move (pixels, groups). It also says whether the hardware computes bf16
natively (`Runtime(precision="auto")` picks bf16-dit only then): elsewhere bf16 is emulated
and slow.

    python bench/precision.py [--photos DIR] [--n 2] [--lr-size 64] [--repeats 2] [--threads 2]
"""
import argparse

import harness

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--photos", help="folder of HR photos (default: the bundled samples)")
ap.add_argument("--n", type=int, default=2)
ap.add_argument("--lr-size", type=int, default=64)
ap.add_argument("--checkpoint")
harness.add_args(ap)
a = ap.parse_args()
torch = harness.start(a)

import numpy as np  # noqa: E402

from patchscaler.model import PRECISIONS, Runtime, native_bf16  # noqa: E402
from patchscaler.upscale import build_default, upscale_prepared  # noqa: E402

models = {p: build_default(a.checkpoint).configure(Runtime(precision=p)) for p in PRECISIONS}
print(f"# bf16 native on cpu: {native_bf16('cpu')}; Runtime(precision='auto') -> {Runtime().precision}")
photos = harness.lr_photos(a.photos, a.n, a.lr_size)


def grm_alone(p, prep):
    m = models[p]
    with torch.no_grad(), m.runtime.autocast():
        return m.grm.restore(prep.rgb.contiguous(memory_format=torch.channels_last))


tot = {}
for name, prep in photos:
    out = {}
    variants = {"grm fp32": lambda: grm_alone("fp32", prep), "grm bf16": lambda: grm_alone("bf16", prep)}
    for p in PRECISIONS:
        variants[f"method {p}"] = (lambda p: lambda: out.__setitem__(p, upscale_prepared(models[p], prep)))(p)
    times = harness.interleaved(variants, a.repeats)
    for k in times:
        tot[k] = tot.get(k, 0.0) + harness.med(times[k])
    f = np.asarray(out["fp32"].image, np.float32)
    for p in PRECISIONS[1:]:
        b = np.asarray(out[p].image, np.float32)
        moved = int((out["fp32"].groups != out[p].groups).sum())
        print(f"{name:<36} {p:<8} max |diff| vs fp32 {np.abs(f - b).max():5.1f}/255, mean {np.abs(f - b).mean():.3f}; "
              f"patches that changed group: {moved} of {len(out['fp32'].groups)}")
print(f"\nReal-ESRGAN alone bf16 / fp32: {tot['grm bf16'] / tot['grm fp32']:.2f}x time")
for p in PRECISIONS[1:]:
    print(f"whole method {p} / fp32: {tot[f'method {p}'] / tot['method fp32']:.2f}x time")
