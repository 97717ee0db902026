"""Where a patch's Patch-DiT time goes: the refine stage of the method on held-out photos, each
part of it timed by wrapping the function that does it (the texture extractor's query, the RTM
retrieval, the texture encoder, the cross-attention keys, each denoising call of the Patch-DiT,
the second token grid, the noise, cutting patches out, adding their change back), per group.

    OMP_WAIT_POLICY=PASSIVE python bench/dit_profile.py --data DATA [--n 6] [--checkpoint default]

Prints seconds per patch of each part and its share of the stage (the rest: the sampler's own
arithmetic and Python). The photos are made as bench/value.py makes them (128 px LR, both families)."""
import argparse
import time
from collections import defaultdict

import harness

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--data", required=True, help="data folder with train/ (the held-out split is used)")
ap.add_argument("--n", type=int, default=6)
ap.add_argument("--lr-size", type=int, default=128)
ap.add_argument("--checkpoint", default="default")
harness.add_args(ap, threads=2)
a = ap.parse_args()
torch = harness.start(a)

from patchscaler import flow, model as model_module  # noqa: E402
from patchscaler.model import Runtime  # noqa: E402
from patchscaler.upscale import build_default, resolve_checkpoint  # noqa: E402

spent: dict[str, float] = defaultdict(float)
calls: dict[str, int] = defaultdict(int)


def timed(owner, name: str, label: str):
    """Replace owner.name by a wrapper that adds its wall time to spent[label]."""
    fn = getattr(owner, name)

    def wrapper(*args, **kw):
        t = time.perf_counter()
        try:
            return fn(*args, **kw)
        finally:
            spent[label] += time.perf_counter() - t
            calls[label] += 1
    setattr(owner, name, wrapper)


m = build_default(resolve_checkpoint(a.checkpoint)).configure(Runtime())
timed(m.texture, "forward", "texture extractor T (RTM query)")
timed(m.rtm, "retrieve", "RTM retrieval (top-K)")
timed(m.dit, "encode_texture", "texture encoder (per patch)")
timed(m.dit, "texture_prompt", "cross-attention keys/values")
timed(flow, "patch_noise", "starting noise")
timed(flow.Coarse, "patches", "cutting patches out")
timed(flow._Detail, "add", "adding each patch's change back")
timed(flow._Detail, "close", "adding each patch's change back")
dit_forward = m.dit.forward


def counted_forward(x, t, y0, tokens):
    t0 = time.perf_counter()
    out = dit_forward(x, t, y0, tokens)
    label = "Patch-DiT denoising calls" if x.shape[-1] == m.cfg.pgs.patch_size else "second token grid (seam shift)"
    spent[label] += time.perf_counter() - t0
    calls[label] += 1
    return out


m.dit.forward = counted_forward
patches = 0
stage = 0.0
for path in harness.held_out(a.data, a.n):
    for family in ("training", "classical"):
        prep, _ = harness.held_out_pair(path, a.lr_size, family)
        state = flow.begin(m, prep)
        patches += len(state.coarse.index)
        t = time.perf_counter()
        flow.refine(m, state, 0)
        stage += time.perf_counter() - t
print(f"# {a.n} held-out photos x 2 families, {a.lr_size} px LR; {patches} patches; refine stage "
      f"{stage:.1f} s = {1000 * stage / patches:.1f} ms per patch; precision {m.runtime.precision}; "
      f"groups' paths {m.cfg.pgs.taus} / {m.cfg.pgs.steps}")
print("| part | calls | ms per patch | share of the stage |")
print("|---|---|---|---|")
for label, s in sorted(spent.items(), key=lambda kv: -kv[1]):
    print(f"| {label} | {calls[label]} | {1000 * s / patches:.2f} | {100 * s / stage:.1f} % |")
rest = stage - sum(spent.values())
print(f"| the rest (sampler arithmetic, batching, Python) | | {1000 * rest / patches:.2f} | {100 * rest / stage:.1f} % |")
