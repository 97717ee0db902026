"""Which Patch-DiT parametrisation trains better on a CPU budget: eps (the paper's) or
x0-residual (ours: the net predicts x0 - y0)?

Two identical small Patch-DiTs (same init, same batches, same noise) are trained side by side,
one step each in turn so machine noise hits both alike, on the crops `patchscaler train
prepare` cached. Then each samples a fixed batch of training crops with the shortcut sampler
of the hard group (tau 1000, 20 steps) and of the simple group (tau 200, 4 steps). Printed:
each model's x0 error relative to the GRM's own error (< 1 = better than the GRM), and the
ratio eps / x0-residual (> 1 = x0-residual better).

    python bench/parametrisation.py --work runs/v1 --steps 300
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.train_data import Pairs, list_photos, split  # noqa: E402
from patchscaler.codec import PixelUnshuffleCodec  # noqa: E402
from patchscaler.config import DiffusionConfig, DiTConfig  # noqa: E402
from patchscaler.diffusion import Diffusion  # noqa: E402
from patchscaler.dit import PatchDiT  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="runs/v1")
    ap.add_argument("--data", required=True, help="a training data folder (train/, textures/)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(2)
    data = Pairs(a.work, split(list_photos(Path(a.data) / "train"))[0])
    codec, V = PixelUnshuffleCodec(4), 16
    preds = ("eps", "x0_residual")
    base = PatchDiT(48, DiTConfig(hidden=128, depth=4, heads=4, encoder_depth=2))
    nets = {p: copy.deepcopy(base) for p in preds}
    diff = {p: Diffusion(DiffusionConfig(prediction=p)) for p in preds}
    opts = {p: torch.optim.AdamW(nets[p].parameters(), lr=3e-4) for p in preds}
    secs = dict.fromkeys(preds, 0.0)
    for step in range(a.steps):
        c, _ = data.crops(np.random.default_rng([a.seed, step]), a.batch, V)
        x0, y0 = codec.encode(c["hr"]), codec.encode(c["sr"])
        g = torch.Generator().manual_seed(step)
        t = torch.randint(0, 1000, (a.batch,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        for p in preds:
            t0 = time.perf_counter()
            x_t = diff[p].q_sample(x0, t, noise)
            loss = F.mse_loss(nets[p](x_t, t, y0), diff[p].target(x0, noise, t, y0))
            opts[p].zero_grad()
            loss.backward()
            opts[p].step()
            secs[p] += time.perf_counter() - t0
        if (step + 1) % 50 == 0:
            print(f"step {step + 1}/{a.steps}", flush=True)
    mon, _ = data.crops(np.random.default_rng([a.seed, 10 ** 6]), 64, V)
    x0, y0 = codec.encode(mon["hr"]), codec.encode(mon["sr"])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    grm_err = float((y0 - x0).pow(2).mean())
    print(f"\n{a.steps} steps of batch {a.batch}; train time ratio eps / x0-residual "
          f"{secs['eps'] / secs['x0_residual']:.3f}")
    print(f"{'group (tau, steps)':<22}{'eps err/GRM':>14}{'x0-res err/GRM':>16}{'ratio eps/x0-res':>18}")
    for tau, n in ((1000, 20), (500, 10), (200, 4)):
        errs = {}
        for p in preds:
            nets[p].eval()
            out = diff[p].sample(lambda x, t, p=p: nets[p](x, t, y0), y0, tau, n, noise)
            errs[p] = float((out - x0).pow(2).mean()) / grm_err
        print(f"{f'({tau}, {n})':<22}{errs['eps']:>14.3f}{errs['x0_residual']:>16.3f}{errs['eps'] / errs['x0_residual']:>18.3f}")


if __name__ == "__main__":
    main()
