"""Stage `confidence`: the GRM's confidence head with the paper's loss (Eq. 6), then the PGS
thresholds calibrated on the training crops (eta-independent: Qmap quantiles)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from jobs.train_data import Pairs
from jobs.trainstate import Dist

from .train_options import TrainOptions
from .work import finish, model_so_far, photos, train_loop, work_path


def choose_eta(codec, data: Pairs, quantile: float) -> float:
    """eta sets where C saturates at 1 (C* = min(1, eta / err)); chosen from the data so that C
    spreads over most patches instead of sitting at 1 (the paper's eta is for SD-VAE latents):
    this quantile of the GRM's squared latent error."""
    with torch.no_grad():
        err = (codec.encode(data.sr[:256].float() / 255) - codec.encode(data.hr[:256].float() / 255)).pow(2).mean(1)
    return float(torch.quantile(err.flatten()[::7], quantile))


@torch.no_grad()
def qmaps(head, codec, data: Pairs, patch_size: int, overlap: int, device) -> torch.Tensor:
    """The Qmap (mean confidence per PGS patch) of every patch of every training crop."""
    from patchscaler import pgs
    from patchscaler.grm import confidence_input
    head.eval()
    q_all = []
    for i in range(0, len(data), 32):
        y = codec.encode(data.sr[i:i + 32].float().to(device) / 255)
        conf = head(confidence_input(y, data.lr[i:i + 32].float().to(device) / 255)).cpu()
        for k in range(y.shape[0]):
            grid = pgs.make_grid(y.shape[-2], y.shape[-1], patch_size, overlap)
            q_all.append(pgs.qmap(conf[k, 0], grid))
    return torch.cat(q_all)


def stage_confidence(a: TrainOptions, d: Dist) -> dict:
    from patchscaler.grm import confidence_input, confidence_loss
    model = model_so_far(a)
    codec, head = model.codec, model.grm.conf_head
    train, _ = photos(a)
    data = Pairs(a.work, train)
    lat = min(32, data.size // codec.factor)
    eta = choose_eta(codec, data, a.eta_quantile)
    net = d.wrap(head)
    bsz = max(1, a.batch // 2)

    def step_fn(step):
        rng = np.random.default_rng([a.seed, 2, step])
        c, _ = data.crops(rng, bsz, lat, codec.factor)
        c = {k: d.shard(v).to(d.device) for k, v in c.items()}
        y, x = codec.encode(c["sr"]), codec.encode(c["hr"])
        head.train()
        conf = net(confidence_input(y, c["lr"]))
        return confidence_loss(y, x, conf, model.cfg.grm.loss_lambda, eta), {}

    train_loop(a, d, "confidence", {"conf_head": head}, list(head.parameters()), a.confidence_steps, 1e-3, step_fn)
    # calibration: thresholds at Qmap quantiles over all training crops
    q = qmaps(head, codec, data, model.cfg.pgs.patch_size, model.cfg.pgs.overlap, d.device)
    thresholds = (float(torch.quantile(q, 1 - a.simple_fraction)), float(torch.quantile(q, a.hard_fraction)))
    result = {"eta": eta, "thresholds": thresholds, "qmap_quantiles": [float(torch.quantile(q, t)) for t in (0.1, 0.5, 0.9)]}
    if d.main:
        Path(work_path(a, "calibration.json")).write_text(json.dumps(result, indent=1))
        print(f"confidence head: eta {eta:.5f}, thresholds {thresholds[0]:.3f} / {thresholds[1]:.3f}")
    finish(a, d, "confidence", head, "conf_head", result)
    return result
