"""PGS vs uniform sampling: same model, same photos, same GRM output, interleaved. Prints the
Patch-DiT stage time of PGS (the checkpoint's per-group tau/N; the shipped model's are 100/2,
200/4, 1000/20) against uniform sampling (tau 1000, N 20 for every patch), their ratio, the
group fractions, and the PSNR between the two outputs.

    python bench/pgs_vs_uniform.py [--photos DIR] [--n 4] [--lr-size 128] [--repeats 2] [--threads 2]

With an untrained checkpoint the confidence head says nothing, so the Qmap thresholds are set
from its quantiles (--quantiles: the fractions of simple and simple+medium patches) and the
Patch-DiT gets random output weights, so that the speed ratio is meaningful."""
import argparse

import harness

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--photos", help="folder of HR photos (default: the bundled samples)")
ap.add_argument("--n", type=int, default=4)
ap.add_argument("--lr-size", type=int, default=128)
ap.add_argument("--checkpoint")
ap.add_argument("--quantiles", default="0.4,0.7")
harness.add_args(ap)
a = ap.parse_args()
torch = harness.start(a)

import numpy as np  # noqa: E402

from patchscaler import flow  # noqa: E402
from patchscaler.config import override  # noqa: E402
from patchscaler.model import Runtime  # noqa: E402
from patchscaler.pgs import assign_groups  # noqa: E402
from patchscaler.upscale import build_default  # noqa: E402

model = build_default(a.checkpoint).configure(Runtime(precision="fp32"))
untrained = model.cfg.version == "untrained"
if untrained:
    torch.manual_seed(0)
    for p in model.dit.out.parameters():
        p.data.normal_(0, 0.01)
pgs_cfg = model.cfg
G = pgs_cfg.pgs.num_groups
uniform_cfg = override(pgs_cfg, pgs={"taus": (pgs_cfg.diffusion.num_timesteps,) * G, "steps": (max(pgs_cfg.pgs.steps),) * G})


def psnr(x, y):
    mse = np.mean((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2)
    return 10 * np.log10(255 ** 2 / max(mse, 1e-12))


def sample(cfg, state, out: dict, key: str):
    model.cfg = cfg
    done = flow.refine(model, state.regrouped(state.coarse.groups), seed=0)
    out.setdefault(key, []).append(done.seconds["dit"])
    out[key + " image"] = flow.finish(model, done)
    model.cfg = pgs_cfg


tot = {"PGS": 0.0, "uniform": 0.0}
psnrs, counts = [], np.zeros(G)
print(f"# model {pgs_cfg.version}; PGS taus {pgs_cfg.pgs.taus} steps {pgs_cfg.pgs.steps}; uniform taus "
      f"{uniform_cfg.pgs.taus} steps {uniform_cfg.pgs.steps}")
for name, prep in harness.lr_photos(a.photos, a.n, a.lr_size):
    state = flow.begin(model, prep)
    if untrained:
        qs = [float(np.quantile(state.coarse.qmap.numpy(), 1 - float(q))) for q in a.quantiles.split(",")]
        pgs_cfg = model.cfg = override(pgs_cfg, pgs={"thresholds": tuple(sorted(qs, reverse=True))})
        state.coarse.groups = assign_groups(state.coarse.qmap, pgs_cfg.pgs.thresholds)
    counts += np.bincount(state.coarse.groups.numpy(), minlength=G)[:G]
    out = {}
    harness.interleaved({"PGS": lambda: sample(pgs_cfg, state, out, "PGS"),
                         "uniform": lambda: sample(uniform_cfg, state, out, "uniform")}, a.repeats)
    # the Patch-DiT calls' own seconds, median over the interleaved repeats (warm-up left out)
    m = {k: harness.med(out[k][1:]) for k in tot}
    for k in tot:
        tot[k] += m[k]
    psnrs.append(psnr(out["PGS image"], out["uniform image"]))
    print(f"{name:<36} {len(state.coarse.groups):4d} patches  PGS {m['PGS']:6.2f} s  uniform {m['uniform']:6.2f} s  "
          f"PSNR(PGS, uniform) {psnrs[-1]:.2f} dB")
fr = counts / counts.sum()
print("\ngroup fractions: " + " / ".join(f"{x:.2f}" for x in fr)
      + f"  (step ratio {(fr * np.array(pgs_cfg.pgs.steps)).sum() / max(pgs_cfg.pgs.steps):.3f})")
print(f"Patch-DiT time PGS / uniform: {tot['PGS'] / tot['uniform']:.3f}")
print(f"mean PSNR between PGS and uniform outputs: {np.mean(psnrs):.2f} dB"
      + ("  (untrained model: a speed check, not a quality one)" if untrained else ""))
