"""Stage `dit`: the Patch-DiT (x0-residual parametrisation, see the package's docstring) with
texture prompts, at timesteps drawn from all of 0..T-1."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jobs.train_data import Pairs
from jobs.trainstate import EMA, Dist

from .train_options import TrainOptions
from .rtm_stage import TexturePriors
from .work import finish, model_so_far, photos, train_loop


class PromptedDiT(nn.Module):
    """Patch-DiT plus its texture encoder in one forward, so DDP sees both."""

    def __init__(self, dit):
        super().__init__()
        self.dit = dit

    def forward(self, x_t, t, y0, priors, sims):
        return self.dit(x_t, t, y0, self.dit.encode_texture(priors, sims))


@torch.no_grad()
def x0_error_ratios(diffusion, module, mon: dict) -> dict:
    """How far the one-step x0 estimate is from the truth, relative to the GRM's own error, at
    three noise levels (< 1: the DiT improves on the GRM), on a fixed monitoring batch `mon`
    (y0, x0, noise, priors, sims)."""
    out = {}
    y0, x0 = mon["y0"], mon["x0"]
    grm_err = float((y0 - x0).pow(2).mean())
    for tv in (150, 450, 950):
        t = torch.full((y0.shape[0],), tv, device=y0.device)
        x_t = diffusion.q_sample(x0, t, mon["noise"])
        o = module(x_t, t, y0, module.encode_texture(mon["priors"], mon["sims"]))
        x0_hat, _ = diffusion.to_x0_eps(o, x_t, t, y0)
        out[f"x0_err_ratio_t{tv}"] = float((x0_hat - x0).pow(2).mean()) / grm_err
    return out


def stage_dit(a: TrainOptions, d: Dist) -> dict:
    model = model_so_far(a, ("texture",))
    cfg, codec, diffusion, dit = model.cfg, model.codec, model.diffusion, model.dit
    dev = d.device
    priors_for = TexturePriors(a, model, dev)
    train, _ = photos(a)
    data = Pairs(a.work, train)
    V = cfg.pgs.patch_size
    net = d.wrap(PromptedDiT(dit))
    ema = EMA(dit, 0.999 if not a.tiny else 0.9)
    mon_rng = np.random.default_rng([a.seed, 4])
    c, src = data.crops(mon_rng, 32, V, codec.factor)
    mon = {"y0": codec.encode(c["sr"]).to(dev), "x0": codec.encode(c["hr"]).to(dev)}
    mon["noise"] = torch.randn(mon["y0"].shape, generator=torch.Generator().manual_seed(a.seed)).to(dev)
    mon["priors"], mon["sims"] = priors_for(mon["y0"], src.to(dev))

    def step_fn(step):
        rng = np.random.default_rng([a.seed, 3, step])
        c, src = data.crops(rng, a.batch, V, codec.factor)
        g = torch.Generator().manual_seed(a.seed * 1_000_003 + step)
        t = torch.randint(0, diffusion.num_timesteps, (a.batch,), generator=g)
        noise = torch.randn((a.batch, cfg.latent_channels, V, V), generator=g)
        hr, sr, src, t, noise = (d.shard(x).to(dev) for x in (c["hr"], c["sr"], src, t, noise))
        x0, y0 = codec.encode(hr), codec.encode(sr)
        priors, sims = priors_for(y0, src)
        x_t = diffusion.q_sample(x0, t, noise)
        dit.train()
        out = net(x_t, t, y0, priors, sims)
        loss = F.mse_loss(out, diffusion.target(x0, noise, t, y0))
        extra = x0_error_ratios(diffusion, ema.shadow, mon) if (step + 1) % 100 == 0 and d.main else {}
        return loss, extra

    steps = train_loop(a, d, "dit", {"dit": dit}, list(dit.parameters()), a.dit_steps, a.lr, step_fn,
                       warmup=100, ema=ema, minutes=a.dit_minutes)
    result = {"steps": steps, "prediction": cfg.diffusion.prediction, **x0_error_ratios(diffusion, ema.shadow, mon)}
    if d.main:
        print("Patch-DiT (EMA) x0 error / GRM error on the monitoring batch: " +
              ", ".join(f"{k[-4:]} {v:.3f}" for k, v in result.items() if k.startswith("x0_err")))
    finish(a, d, "dit", ema.shadow, "dit", result)
    return result
