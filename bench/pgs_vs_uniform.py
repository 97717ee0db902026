"""PGS vs uniform sampling: same model, same images, one run. Prints the Patch-DiT stage time
of PGS (the checkpoint's per-group tau/N; the shipped model's are 100/2, 400/8, 1000/20)
against uniform sampling (tau 1000, N 20 for every patch), their ratio, and the PSNR between
the two outputs.

    python bench/pgs_vs_uniform.py [--images N] [--checkpoint PATH] [--quantiles 0.4,0.7]

With an untrained checkpoint the confidence head says nothing, so the Qmap thresholds are set
from its quantiles (--quantiles: the fractions of simple and simple+medium patches; the
paper's Fig. 11 shows most patches simple) and the Patch-DiT gets random output weights, so
that the speed ratio is meaningful; quality needs trained weights."""
import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch

from patchscaler import imageio
from patchscaler.model import Runtime
from patchscaler import flow
from patchscaler.upscale import build_default

ap = argparse.ArgumentParser()
ap.add_argument("--images", type=int, default=2)
ap.add_argument("--checkpoint")
ap.add_argument("--quantiles", default="0.4,0.7")
ap.add_argument("--threads", type=int, default=2)
a = ap.parse_args()
torch.set_num_threads(a.threads)

model = build_default(a.checkpoint).configure(Runtime())
untrained = model.cfg.version == "untrained"
if untrained:
    torch.manual_seed(0)
    for p in model.dit.out.parameters():
        p.data.normal_(0, 0.01)
files = sorted((Path(__file__).parents[1] / "patchscaler" / "samples").glob("*.jpg"))[: a.images]
base = model.cfg.pgs


def psnr(x, y):
    mse = np.mean((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2)
    return 10 * np.log10(255 ** 2 / max(mse, 1e-12))


def dit_time(state):
    done = flow.refine(model, state.regrouped(state.coarse.groups), seed=0)
    return done.seconds["dit"], flow.finish(model, done)


tot = {"pgs": 0.0, "uniform": 0.0}
psnrs, fractions = [], np.zeros(3)
for f in files:
    prep = imageio.decode(f.read_bytes())
    state = flow.begin(model, prep)
    coarse = state.coarse
    if untrained:
        qs = [float(np.quantile(coarse.qmap.numpy(), 1 - float(q))) for q in a.quantiles.split(",")]
        model.cfg.pgs = dataclasses.replace(base, thresholds=tuple(sorted(qs, reverse=True)))
    from patchscaler.pgs import assign_groups
    coarse.groups = assign_groups(coarse.qmap, model.cfg.pgs.thresholds)
    fractions += np.bincount(coarse.groups.numpy(), minlength=3)[:3]
    t_pgs, out_pgs = dit_time(state)
    model.cfg.pgs = dataclasses.replace(model.cfg.pgs, taus=(1000,) * 3, steps=(20,) * 3)
    t_uni, out_uni = dit_time(state)
    model.cfg.pgs = base
    tot["pgs"] += t_pgs
    tot["uniform"] += t_uni
    psnrs.append(psnr(out_pgs, out_uni))
    print(f"{f.name:<28} {len(coarse.groups)} patches  PGS {t_pgs:6.2f} s  uniform {t_uni:6.2f} s  PSNR(PGS, uniform) {psnrs[-1]:.2f} dB")
fr = fractions / fractions.sum()
print(f"\ngroup fractions simple/medium/hard: {fr[0]:.2f} / {fr[1]:.2f} / {fr[2]:.2f}"
      f"  (expected step ratio {(fr * np.array(base.steps)).sum() / 20:.3f})")
print(f"Patch-DiT time PGS / uniform: {tot['pgs'] / tot['uniform']:.3f}")
print(f"mean PSNR between PGS and uniform outputs: {np.mean(psnrs):.2f} dB"
      + ("  (untrained model: a speed check, not a quality one)" if untrained else ""))
