"""The Patch-DiT plain vs torch.compile'd (`--compile`), same model, same GRM output, interleaved:
prints the one-time compile cost, the refine time ratio and the largest pixel difference.

    python bench/compile.py [--photos DIR] [--n 4] [--lr-size 128] [--repeats 2] [--backend inductor]

The first compiled pass includes the compile (dynamic shapes: the patch batches and the second
token grid vary); the ratio is of the passes after it."""
import argparse
import time

import harness

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--photos", help="folder of HR photos (default: the bundled samples)")
ap.add_argument("--n", type=int, default=4)
ap.add_argument("--lr-size", type=int, default=128)
ap.add_argument("--backend", default="inductor")
ap.add_argument("--checkpoint")
harness.add_args(ap)
a = ap.parse_args()
torch = harness.start(a)

from patchscaler import flow  # noqa: E402
from patchscaler.model import Runtime  # noqa: E402
from patchscaler.upscale import build_default  # noqa: E402

plain = build_default(a.checkpoint).configure(Runtime(precision="fp32"))
compiled = build_default(a.checkpoint).configure(Runtime(precision="fp32", compile=a.backend))
photos = harness.lr_photos(a.photos, a.n, a.lr_size)
states = [flow.begin(plain, prep) for _, prep in photos]
print(f"# {len(photos)} photos {a.lr_size} -> {4 * a.lr_size} px, model {plain.cfg.version}, backend {a.backend}")


def refine_all(model):
    out = []
    for s in states:
        flow.refine(model, s, 0)
        out.append(s.detail.clone())
    return out


t = time.perf_counter()
refine_all(compiled)
print(f"first compiled pass (compile included): {time.perf_counter() - t:.0f} s")
times = harness.interleaved({"plain": lambda: refine_all(plain), "compiled": lambda: refine_all(compiled)}, a.repeats)
m = {k: min(v) for k, v in times.items()}
diff = max(float((x - y).abs().max()) for x, y in zip(refine_all(plain), refine_all(compiled)))
print(f"Patch-DiT plain {m['plain']:.1f} s, compiled {m['compiled']:.1f} s: compiled / plain {m['compiled'] / m['plain']:.2f} "
      f"(best of {a.repeats}); largest latent difference {diff:.1e}")
