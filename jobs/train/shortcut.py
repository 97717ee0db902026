"""Stage `shortcut`: fine-tunes the Patch-DiT on the paths PGS actually samples.

The dit stage draws t from all of 0..999, but the sampler visits only its groups' few timesteps
(stride 50), and it starts a group at tau from the *coarse* patch (y_tau = sqrt(abar) y0 +
sqrt(1 - abar) eps, Eq. 4), not from the true x0: at tau = 100 the net has never seen an input
whose signal is y0 itself, and reads part of the noise as detail to add. Here each training
patch is grouped by the trained confidence head and thresholds, as at inference; t is one of
its group's timesteps (a quarter of the patches take the full 20-step path, so uniform sampling
is not left untrained); at a path's first timestep the input is built from y0 as the sampler
builds it; and for a share of the patches (--shortcut-on-policy) the input at a later step is
the one the sampler itself reaches with the current network. Starts from the dit stage's EMA
weights; a lower LR."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from jobs.train_data import Pairs
from jobs.trainstate import EMA, Dist

from .dit_stage import PromptedDiT
from .train_options import TrainOptions
from .rtm_stage import TexturePriors
from .work import finish, model_so_far, photos, train_loop


@dataclass
class PathBatch:
    """Training patches, each on one timestep t of a sampling path: its group's, or the full one."""
    x0: torch.Tensor        # (B, C, V, V) true latent patches
    y0: torch.Tensor        # (B, C, V, V) the GRM's
    photo: torch.Tensor     # (B,) source photo of each
    t: torch.Tensor         # (B,) the timestep trained on
    start: torch.Tensor     # (B,) bool: t is its path's first timestep
    groups: torch.Tensor    # (B,) PGS group, from the confidence head and thresholds
    j: torch.Tensor         # (B,) t's index on the path
    path: torch.Tensor      # (B, L) the path's timesteps, padded with -1


def group_paths(pgs_cfg, num_timesteps: int) -> tuple[list[list[int]], list[int]]:
    """The timesteps each group's sampling visits, and the full (uniform) path."""
    from patchscaler.diffusion import shortcut_timesteps
    paths = [shortcut_timesteps(tau, n, num_timesteps) for tau, n in zip(pgs_cfg.taus, pgs_cfg.steps)]
    return paths, shortcut_timesteps(num_timesteps, max(pgs_cfg.steps), num_timesteps)


def training_pgs(p, num_timesteps: int, spec: str):
    """The PGS settings whose paths the stage trains on: `p` (the model's own), or its copy with
    the groups' paths `spec` ("TAU/STEPS,..." one per group), so that weights trained on earlier
    defaults can be made again (v0.3.0-v0.5.0's on 100/2,400/8,1000/20). `train` checks the spec
    before its first stage, so a typo does not end a two-hour run at this stage."""
    if not spec:
        return p
    try:
        pairs = [tuple(int(v) for v in part.split("/")) for part in spec.split(",")]
        if any(len(pair) != 2 for pair in pairs):
            raise ValueError
        taus, steps = zip(*pairs)
    except ValueError:
        raise ValueError(f"--shortcut-paths {spec!r}: expected TAU/STEPS per group, e.g. 100/2,400/8,1000/20") from None
    if len(pairs) != p.num_groups:
        raise ValueError(f"--shortcut-paths {spec!r}: the model has {p.num_groups} groups, got {len(pairs)} paths")
    if any(not 1 <= tau <= num_timesteps for tau in taus) or any(n < 1 or n > tau for tau, n in pairs):
        raise ValueError(f"--shortcut-paths {spec!r}: each TAU in 1..{num_timesteps}, each STEPS in 1..TAU")
    return dataclasses.replace(p, taus=taus, steps=steps)


def paths_spec(p) -> str:
    """The groups' paths of PGS settings `p`, as --shortcut-paths writes them."""
    return ",".join(f"{t}/{n}" for t, n in zip(p.taus, p.steps))


def path_batch(data: Pairs, model, rng: np.random.Generator, n: int, device, full_share: float = 0.25,
               p=None) -> PathBatch:
    """n patches, grouped as at inference; each takes the full path with `full_share`, else its
    group's (`p`: the PGS settings trained on, default the model's), at a random step j of it."""
    from patchscaler import pgs
    from patchscaler.grm import confidence_input
    codec, p = model.codec, p or model.cfg.pgs
    paths, full = group_paths(p, model.diffusion.num_timesteps)
    c, src = data.crops(rng, n, p.patch_size, codec.factor)
    x0, y0 = codec.encode(c["hr"].to(device)), codec.encode(c["sr"].to(device))
    with torch.no_grad():
        q = model.grm.conf_head(confidence_input(y0, c["lr"].to(device))).mean((1, 2, 3)).cpu()
    groups = pgs.assign_groups(q, p.thresholds)
    t, start, js, rows = [], [], [], []
    for g in groups.tolist():
        path = full if rng.random() < full_share else paths[g]
        j = int(rng.integers(len(path)))
        t.append(path[j])
        start.append(j == 0)
        js.append(j)
        rows.append(path + [-1] * (len(full) - len(path)))
    return PathBatch(x0, y0, src.to(device), torch.tensor(t, device=device), torch.tensor(start, device=device),
                     groups, torch.tensor(js, device=device), torch.tensor(rows, device=device))


@torch.no_grad()
def sampled_error_ratios(diffusion, module, pgs_cfg, mon: PathBatch, noise, priors, sims) -> dict:
    """Every patch of `mon` sampled along its own group's path: its error relative to the GRM's
    (< 1: PGS output closer to the truth than the GRM's), per group."""
    out = {}
    tokens = module.encode_texture(priors, sims)
    for g in range(pgs_cfg.num_groups):
        m = (mon.groups == g).to(noise.device)
        if not m.any():
            continue
        y0, x0 = mon.y0[m], mon.x0[m]
        x = diffusion.sample(lambda x_t, t, y0=y0, m=m: module(x_t, t, y0, tokens[m]), y0, pgs_cfg.taus[g], pgs_cfg.steps[g], noise[m])
        out[f"sampled_err_ratio_g{g}"] = float((x - x0).pow(2).mean() / (y0 - x0).pow(2).mean().clamp_min(1e-12))
    return out


@torch.no_grad()
def on_policy_input(diffusion, dit, y0, j, path, priors, sims, noise) -> torch.Tensor:
    """x_t as the sampler reaches it: from y_tau (built from y0) through j DDIM steps of the
    current network along the patch's path (rows of `path`, timesteps padded with -1), so that
    training sees, and learns to correct, the drift of its own earlier steps rather than only
    the forward process's x_t."""
    dit.eval()
    tokens = dit.encode_texture(priors, sims)
    x, _ = diffusion.ddim(lambda x_t, t, rows: dit(x_t, t, y0[rows], tokens[rows]), y0, path, noise, steps=j)
    return x


def training_input(diffusion, dit, b: PathBatch, noise, own, priors, sims) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, the noise it holds relative to the truth): q_sample of x0, of y0 at a path's start
    (as the sampler starts), or the sampler's own x_t for the patches `own`. The noise is the
    implied one, not the one drawn (path starts and on-policy inputs are not q_sample(x0)), so
    that eps/v targets are right too."""
    x_t = diffusion.q_sample(torch.where(b.start.view(-1, 1, 1, 1), b.y0, b.x0), b.t, noise)
    if own.any():
        x_t[own] = on_policy_input(diffusion, dit, b.y0[own], b.j[own], b.path[own], priors[own], sims[own], noise[own])
    a_t = diffusion.abar(b.t, b.x0)
    return x_t, (x_t - a_t.sqrt() * b.x0) / (1 - a_t).sqrt()


def shard(d: Dist, b: PathBatch) -> PathBatch:
    """This rank's patches of a global batch."""
    return PathBatch(*(d.shard(getattr(b, f.name)) for f in dataclasses.fields(PathBatch)))


def stage_shortcut(a: TrainOptions, d: Dist) -> dict:
    model = model_so_far(a, ("texture", "confidence", "dit"))
    diffusion, dit = model.diffusion, model.dit
    paths = training_pgs(model.cfg.pgs, diffusion.num_timesteps, a.shortcut_paths)
    if a.shortcut_steps <= 0:
        finish(a, d, "shortcut", dit, "dit", {"steps": 0})
        return {"steps": 0}
    dev = d.device
    priors_for = TexturePriors(a, model, dev)
    model.grm.conf_head.eval().requires_grad_(False)
    train, _ = photos(a)
    data = Pairs(a.work, train)
    net = d.wrap(PromptedDiT(dit))
    ema = EMA(dit, 0.999 if not a.tiny else 0.9)
    mon = path_batch(data, model, np.random.default_rng([a.seed, 6]), 48, dev, p=paths)
    mon_noise = torch.randn(mon.y0.shape, generator=torch.Generator().manual_seed(a.seed + 6)).to(dev)
    mon_priors, mon_sims = priors_for(mon.y0, mon.photo)

    # what a viewer sees: VGG16 features of the decoded x0 estimate (never AlexNet: LPIPS-Alex judges)
    perceptual = None
    if a.shortcut_perceptual > 0:
        from jobs.perceptual import perceptual_loss
        perceptual = perceptual_loss(a.shortcut_perceptual_kind).to(dev)

    def monitor(module) -> dict:
        return sampled_error_ratios(diffusion, module, paths, mon, mon_noise, mon_priors, mon_sims)

    def step_fn(step):
        rng = np.random.default_rng([a.seed, 5, step])
        b = path_batch(data, model, rng, a.batch, dev, p=paths)
        g = torch.Generator().manual_seed(a.seed * 1_000_003 + 7 * step)
        noise = torch.randn(b.x0.shape, generator=g).to(dev)
        own = torch.tensor(rng.random(a.batch) < a.shortcut_on_policy, device=dev) & (b.j > 0)
        b, noise, own = shard(d, b), d.shard(noise), d.shard(own)
        priors, sims = priors_for(b.y0, b.photo)
        x_t, implied = training_input(diffusion, dit, b, noise, own, priors, sims)
        dit.train()
        out = net(x_t, b.t, b.y0, priors, sims)
        loss = diffusion_loss = F.mse_loss(out, diffusion.target(b.x0, implied, b.t, b.y0))
        extra = monitor(ema.shadow) if (step + 1) % 100 == 0 and d.main else {}
        if perceptual is not None:
            x0_hat, _ = diffusion.to_x0_eps(out, x_t, b.t, b.y0)
            seen = perceptual(model.codec.decode(x0_hat).clamp(0, 1), model.codec.decode(b.x0))
            loss = loss + a.shortcut_perceptual * seen
            extra.update(diffusion_loss=float(diffusion_loss.detach()), perceptual_loss=float(seen.detach()))
        return loss, extra

    before = monitor(dit) if d.main else {}
    steps = train_loop(a, d, "shortcut", {"dit": dit}, list(dit.parameters()), a.shortcut_steps, a.shortcut_lr,
                       step_fn, warmup=50, ema=ema, minutes=a.shortcut_minutes,
                       settings={"paths": paths_spec(paths), "perceptual": a.shortcut_perceptual,
                                 "perceptual_kind": a.shortcut_perceptual_kind})
    result_settings = ({"perceptual": a.shortcut_perceptual, "perceptual_kind": a.shortcut_perceptual_kind}
                       if a.shortcut_perceptual else {})
    result = {"steps": steps, "paths": paths_spec(paths), **result_settings,
              **monitor(ema.shadow), **{f"before_{k}": v for k, v in before.items()}}
    if d.main:
        print("Patch-DiT sampled along its group's path, error / GRM error, before -> after: " +
              ", ".join(f"{k[-2:]} {before.get(k, float('nan')):.3f} -> {v:.3f}"
                        for k, v in result.items() if k.startswith("sampled")))
    finish(a, d, "shortcut", ema.shadow, "dit", result)
    return result
