"""The whole method vs Real-ESRGAN alone (the GRM's backbone, no Patch-DiT, no fusion), same
model, same photos, same precision, interleaved per photo. Prints the time ratio, the share of
each stage, the group fractions and the peak memory.

    python bench/method_vs_grm.py [--photos DIR] [--n 4] [--lr-size 128] [--repeats 3] [--threads 2]

docs/benchmarks.md's figures: `--photos DATA/train --n 24` (128 -> 512 px) and, for one large
photo, `--n 1 --lr-size 512 --repeats 1` (512 -> 2048 px)."""
import argparse

import harness

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--photos", help="folder of HR photos (default: the bundled samples)")
ap.add_argument("--n", type=int, default=4)
ap.add_argument("--lr-size", type=int, default=128)
ap.add_argument("--precision", default="auto", help="auto (default) or one of patchscaler.model.PRECISIONS")
ap.add_argument("--checkpoint")
ap.add_argument("--compile", default="", metavar="BACKEND",
                help="torch.compile the Patch-DiT with this backend (e.g. inductor); the first photo's "
                     "warm-up then includes the compile")
harness.add_args(ap)
a = ap.parse_args()
torch = harness.start(a)

from patchscaler.model import Runtime  # noqa: E402
from patchscaler.upscale import build_default, upscale_prepared  # noqa: E402

model = build_default(a.checkpoint).configure(Runtime(precision=a.precision, compile=a.compile))
photos = harness.lr_photos(a.photos, a.n, a.lr_size)
print(f"# {len(photos)} photos {a.lr_size} -> {4 * a.lr_size} px, precision {model.runtime.precision}, "
      f"model {model.cfg.version}" + (f", Patch-DiT compiled ({a.compile})" if a.compile else ""))


def realesrgan_alone(prep):
    lr = prep.rgb.contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), model.runtime.autocast():
        return model.grm.restore(lr)


tot = {"Real-ESRGAN alone": 0.0, "PatchScaler": 0.0}
stages = {"grm": 0.0, "dit": 0.0, "stitch": 0.0}
groups = [0] * model.cfg.pgs.num_groups
for name, prep in photos:
    results = []
    times = harness.interleaved({"Real-ESRGAN alone": lambda: realesrgan_alone(prep),
                                 "PatchScaler": lambda: results.append(upscale_prepared(model, prep))}, a.repeats)
    m = {k: harness.med(v) for k, v in times.items()}
    r = results[-1]
    for k in tot:
        tot[k] += m[k]
    for k in stages:
        stages[k] += r.seconds.get(k, 0.0)
    groups = [g + c for g, c in zip(groups, r.group_counts)]
    print(f"{name:<40} Real-ESRGAN {m['Real-ESRGAN alone']:7.2f} s  PatchScaler {m['PatchScaler']:7.2f} s  "
          f"ratio {m['PatchScaler'] / m['Real-ESRGAN alone']:5.2f}  groups {r.group_counts}")
s = sum(stages.values())
n = sum(groups)
print(f"\nwhole method / Real-ESRGAN alone: {tot['PatchScaler'] / tot['Real-ESRGAN alone']:.2f}x "
      f"(sums of per-photo medians: {tot['PatchScaler']:.1f} s vs {tot['Real-ESRGAN alone']:.1f} s)")
print("stage shares of the method's time: " + ", ".join(f"{k} {v / s:.0%}" for k, v in stages.items()))
print("patches per group: " + " / ".join(f"{g / n:.0%}" for g in groups) + f" of {n}")
print(f"per photo: {tot['PatchScaler'] / len(photos):.1f} s; peak RSS {harness.peak_rss_gib():.2f} GiB")
