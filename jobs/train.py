"""`patchscaler train STAGE`: train the default model's learned parts on CPU (or GPUs).

    prepare     seeded HR crops -> Real-ESRGAN degradations -> frozen Real-ESRGAN GRM, cached
    texture     T, self-supervised on the texture images (InfoNCE between two augmented crops
                of one texture); prints top-1 retrieval accuracy on held-out textures
    confidence  the GRM's confidence head with the paper's loss (Eq. 6); then eta-independent
                calibration of the PGS thresholds on the training crops
    rtm         the RTM, by the build-rtm job (Ray Data), keyed by the trained T
    dit         the Patch-DiT (x0-residual parametrisation, see below) with texture prompts
    shortcut    fine-tunes the Patch-DiT on the timesteps PGS visits, each patch on its own
                group's path (see stage_shortcut)
    assemble    one checkpoint (fp16 weights, uint8 RTM values) + its training record
    all         everything in order; finished stages are skipped, unfinished ones resume

Every stage writes WORK/STAGE.state.safetensors every --save-every steps and resumes from it;
loss curves go to WORK/logs/STAGE.jsonl. Run under `torchrun --nproc_per_node N` to train
texture/confidence/dit/shortcut with DDP (see trainstate.py).

Why x0-residual for the Patch-DiT (the paper predicts eps): the network outputs x0 - y0, the
correction to the GRM's patch. Its output layer starts at zero (adaLN-Zero), so the untrained
and the barely trained model return the GRM result instead of noise, and every step of a
short CPU budget moves the output from the GRM result towards the truth. eps-prediction needs
the net to recover y0 through the noise first; at the small t of the simple group its x0 error
is amplified by sqrt(1 - abar) / sqrt(abar). `bench/parametrisation.py` measures both."""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .train_data import Pairs, list_photos, load_rgb, prepare, split
from .trainstate import EMA, Dist, LossLog, cosine_lr, load_state, save_state

log = logging.getLogger("patchscaler.train")
STAGES = ("prepare", "texture", "confidence", "rtm", "dit", "shortcut", "assemble")


def train_config(tiny: bool = False):
    """The default model's architecture. Sized so that its fp16 weights plus a 2k-entry uint8
    RTM fit the ~40 MB budget of a checkpoint in git, and training fits 2 hours on 2 cores."""
    from patchscaler.config import DiTConfig, GRMConfig, PatchScalerConfig, PGSConfig, TextureConfig
    if tiny:
        return PatchScalerConfig(grm=GRMConfig(backbone="srvgg", conf_hidden=16),
                                 dit=DiTConfig(hidden=32, depth=2, heads=2, encoder_depth=1),
                                 texture=TextureConfig(feature_dim=16, hidden=16),
                                 pgs=PGSConfig(patch_size=8, overlap=2))
    # taus/steps: a common stride of 50 so the groups' timestep grids nest; simple patches get
    # 2 steps from t=100 (the paper's Fig. 1a: simple patches need ~2), medium 8 from 400, hard
    # the full 20 from 1000. Chosen on training photos only (runs/diag, see MODEL_CARD.md): vs
    # the earlier (200/4, 500/10) it gave +0.08 dB and NIQE -0.7 at 0.77x the Patch-DiT time.
    return PatchScalerConfig(dit=DiTConfig(hidden=192, depth=6, heads=3, encoder_depth=3),
                             pgs=PGSConfig(taus=(100, 400, 1000), steps=(2, 8, 20)))


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("stage", choices=STAGES + ("all",))
    p.add_argument("--data", default="../shared/data", help="folder with train/ (photos) and textures/")
    p.add_argument("--work", default="runs/default", help="working folder: caches, states, logs")
    p.add_argument("--out", default="patchscaler/weights/default.safetensors", help="assembled checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--tiny", action="store_true", help="tiny model and budget (tests)")
    p.add_argument("--crop", type=int, default=192, help="prepare: HR crop size")
    p.add_argument("--crops-per-photo", type=int, default=8)
    p.add_argument("--texture-steps", type=int, default=600)
    p.add_argument("--confidence-steps", type=int, default=3000)
    p.add_argument("--dit-steps", type=int, default=4500)
    p.add_argument("--dit-minutes", type=float, default=0, help="stop the DiT stage after this long (0: no limit)")
    p.add_argument("--shortcut-steps", type=int, default=1500,
                   help="Patch-DiT fine-tuning on the timesteps PGS visits (0: skip)")
    p.add_argument("--shortcut-lr", type=float, default=1e-4)
    p.add_argument("--shortcut-on-policy", type=float, default=0.5,
                   help="share of shortcut patches whose noisy input is made by the sampler itself")
    p.add_argument("--batch", type=int, default=32, help="global batch (split over DDP workers)")
    p.add_argument("--lr", type=float, default=3e-4, help="Patch-DiT learning rate")
    p.add_argument("--save-every", type=int, default=100)
    p.add_argument("--stop-after", type=int, default=0,
                   help="save and stop once a stage reaches this step (resume later with the same command)")
    p.add_argument("--rtm-size", type=int, default=2000)
    p.add_argument("--rtm-candidates", type=int, default=20000)
    p.add_argument("--rtm-engine", choices=["ray", "local"], default="ray")
    p.add_argument("--simple-fraction", type=float, default=0.5, help="calibration: share of simple patches")
    p.add_argument("--hard-fraction", type=float, default=0.2, help="calibration: share of hard patches")
    p.add_argument("--eta-quantile", type=float, default=0.3,
                   help="eta of the confidence loss = this quantile of the GRM's squared latent error")
    p.add_argument("--no-progress", dest="progress", action="store_false")


# --- helpers ------------------------------------------------------------------------------

class Interrupted(Exception):
    """A stage stopped early on request; its state is saved and the same command resumes it."""


def _path(a, name: str) -> str:
    return os.path.join(a.work, name)


def _done(a, stage: str) -> bool:
    return os.path.exists(_path(a, f"{stage}.done.safetensors")) or (
        stage in ("prepare", "rtm") and os.path.exists(_path(a, f"{stage}.done.json")))


def _photos(a):
    return split(list_photos(Path(a.data) / "train"))


def _textures(a):
    return split(list_photos(Path(a.data) / "textures"))


def _model(a, stages: tuple[str, ...] = ()):
    """The model as far as it is trained: the config (with calibration) and finished stages."""
    from patchscaler.model import PatchScaler
    cfg = train_config(a.tiny)
    calib = _path(a, "calibration.json")
    if os.path.exists(calib):
        c = json.loads(Path(calib).read_text())
        cfg.grm.loss_eta = c["eta"]
        cfg.pgs.thresholds = tuple(c["thresholds"])
    if "texture" in stages:
        cfg.texture.version = json.loads(Path(_path(a, "texture.version.json")).read_text())["version"]
    model = PatchScaler(cfg)
    for stage, name in (("texture", "texture"), ("confidence", "conf_head"), ("dit", "dit"), ("shortcut", "dit")):
        if stage in stages and (stage != "shortcut" or _done(a, stage)):
            module = model.grm.conf_head if name == "conf_head" else getattr(model, name)
            load_state(_path(a, f"{stage}.done.safetensors"), {name: module}, None)
    return model.to(a.device)


def _loop(a, d: Dist, stage: str, modules: dict[str, nn.Module], params, steps: int, lr: float,
          step_fn, warmup: int = 50, ema: EMA | None = None, minutes: float = 0.0):
    """The shared training loop: resume, cosine LR, AdamW, logs, periodic state, progress."""
    from tqdm import tqdm
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    state_path = _path(a, f"{stage}.state.safetensors")
    all_modules = dict(modules, **({"ema": ema.shadow} if ema else {}))
    step = 0
    if os.path.exists(state_path):
        step, _ = load_state(state_path, all_modules, opt)
        if d.main:
            log.info("%s: resuming at step %d", stage, step)
    losses = LossLog(a.work, stage, enabled=d.main)
    bar = tqdm(total=steps, initial=step, desc=stage, disable=not (d.main and a.progress))
    t_start, running = time.time(), []
    while step < steps:
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, steps, lr, warmup)
        loss, extra = step_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if ema:
            ema.update(next(iter(modules.values())), step)
        step += 1
        running.append(loss.item())
        if step % 10 == 0 or step == steps:
            losses.write(step, loss=np.mean(running), lr=opt.param_groups[0]["lr"], **extra)
            bar.set_postfix(loss=f"{np.mean(running):.4f}")
            running = []
        bar.update(1)
        out_of_time = (minutes and time.time() - t_start > minutes * 60) or step == a.stop_after
        if d.main and (step % a.save_every == 0 or step == steps or out_of_time):
            save_state(state_path, all_modules, opt, step)
        if out_of_time:
            if d.main and step != a.stop_after:
                log.info("%s: time budget of %.0f min reached at step %d", stage, minutes, step)
            break
    bar.close()
    d.barrier()
    if step == a.stop_after and step < steps:
        raise Interrupted(f"{stage}: stopped at step {step} of {steps} (--stop-after); run again to resume")
    return step


def _finish(a, d: Dist, stage: str, module: nn.Module, name: str, extra: dict) -> None:
    if d.main:
        save_state(_path(a, f"{stage}.done.safetensors"), {name: module}, None, 0, extra)
    d.barrier()


# --- stages -------------------------------------------------------------------------------

def stage_prepare(a, d: Dist) -> None:
    if d.main:
        from patchscaler.grm import RealESRGANGRM
        cfg = train_config(a.tiny)
        grm = RealESRGANGRM(cfg.latent_channels, cfg.grm).eval().to(memory_format=torch.channels_last)
        train, held = _photos(a)
        prepare(grm, train, a.work, a.crop, a.crops_per_photo, a.seed, a.progress)
        Path(_path(a, "prepare.done.json")).write_text(json.dumps(
            {"train": [p.name for p in train], "held_out": [p.name for p in held], "crop": a.crop,
             "crops_per_photo": a.crops_per_photo, "seed": a.seed}, indent=1))
    d.barrier()


def _texture_views(images: list[torch.Tensor], rng: np.random.Generator, which: np.ndarray, px: int,
                   degrade_prob: float = 0.5) -> torch.Tensor:
    """One random view per chosen texture: a crop at a random place, random rotation/flip,
    brightness/contrast jitter and, with `degrade_prob`, a blur + down/up resize, because T
    sees coarse GRM patches as queries and clean HR patches as keys."""
    out = []
    for i in which:
        img = images[i]
        H, W = img.shape[-2:]
        y, x = rng.integers(0, H - px + 1), rng.integers(0, W - px + 1)
        c = torch.rot90(img[:, y:y + px, x:x + px], int(rng.integers(4)), (1, 2))
        if rng.integers(2):
            c = c.flip(2)
        c = ((c - c.mean()) * rng.uniform(0.8, 1.2) + c.mean() * rng.uniform(0.85, 1.15)).clamp(0, 1)
        if rng.random() < degrade_prob:
            f = rng.uniform(1.5, 3.0)
            small = F.interpolate(c[None], scale_factor=1 / f, mode="area")
            c = F.interpolate(small, size=(px, px), mode="bicubic", align_corners=False)[0].clamp(0, 1)
        out.append(c)
    return torch.stack(out)


def _texture_images(files: list[Path], px: int) -> list[torch.Tensor]:
    imgs = [load_rgb(f) for f in files]
    return [i for i in imgs if min(i.shape[-2:]) >= px]


@torch.no_grad()
def texture_top1(T, codec, images: list[torch.Tensor], px: int, seed: int, rounds: int = 8) -> float:
    """Top-1 retrieval accuracy: each texture has one gallery crop; a query is another,
    augmented crop of one of them; a hit when its nearest gallery key is its own texture."""
    T.eval()
    hits = total = 0
    n = len(images)
    for r in range(rounds):
        rng = np.random.default_rng([seed, 999, r])
        gallery = T(codec.encode(_texture_views(images, rng, np.arange(n), px, degrade_prob=0.0)))
        query = T(codec.encode(_texture_views(images, rng, np.arange(n), px, degrade_prob=0.5)))
        hits += int(((query @ gallery.T).argmax(1) == torch.arange(n)).sum())
        total += n
    return hits / total


def stage_texture(a, d: Dist) -> dict:
    from patchscaler.texture import info_nce
    model = _model(a)
    T, codec = model.texture, model.codec
    px = model.cfg.pgs.patch_size * codec.factor
    train_files, held_files = _textures(a)
    train_imgs, held_imgs = _texture_images(train_files, px), _texture_images(held_files, px)
    batch = min(a.batch * 2, len(train_imgs))
    net = d.wrap(T)

    def step_fn(step):
        rng = np.random.default_rng([a.seed, 1, step])
        which = rng.choice(len(train_imgs), batch, replace=False)
        va, vb = _texture_views(train_imgs, rng, which, px, 0.0), _texture_views(train_imgs, rng, which, px, 0.7)
        va, vb = va.to(d.device), vb.to(d.device)
        # InfoNCE needs the whole batch for negatives: every rank computes it on all rows
        # (T is tiny); DDP still averages the identical gradients.
        T.train()
        return info_nce(net(codec.encode(va)), net(codec.encode(vb))), {}

    before = texture_top1(T, codec, held_imgs, px, a.seed)
    _loop(a, d, "texture", {"texture": T}, list(T.parameters()), a.texture_steps, 1e-3, step_fn)
    result = {"top1_heldout_before": before,
              "top1_heldout": texture_top1(T, codec, held_imgs, px, a.seed),
              "top1_train": texture_top1(T, codec, train_imgs, px, a.seed),
              "heldout_textures": len(held_imgs), "train_textures": len(train_imgs)}
    version = "T-" + hashlib.sha256(b"".join(v.numpy().tobytes() for v in T.state_dict().values())).hexdigest()[:10]
    if d.main:
        print(f"texture extractor T: top-1 retrieval accuracy on {len(held_imgs)} held-out textures "
              f"{result['top1_heldout']:.3f} (untrained {before:.3f}, chance {1 / max(1, len(held_imgs)):.3f}); "
              f"on {len(train_imgs)} training textures {result['top1_train']:.3f}")
        Path(_path(a, "texture.version.json")).write_text(json.dumps({"version": version, **result}, indent=1))
    _finish(a, d, "texture", T, "texture", result)
    return result


def stage_confidence(a, d: Dist) -> dict:
    from patchscaler import pgs
    from patchscaler.grm import confidence_input, confidence_loss
    model = _model(a)
    codec, head = model.codec, model.grm.conf_head
    train, _ = _photos(a)
    data = Pairs(a.work, train)
    lat = min(32, data.size // codec.factor)
    # eta sets where C saturates at 1 (C* = min(1, eta / err)); chosen from the data so that C
    # spreads over most patches instead of sitting at 1 (the paper's eta is for SD-VAE latents)
    with torch.no_grad():
        err = (codec.encode(data.sr[:256].float() / 255) - codec.encode(data.hr[:256].float() / 255)).pow(2).mean(1)
    eta = float(torch.quantile(err.flatten()[::7], a.eta_quantile))
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

    _loop(a, d, "confidence", {"conf_head": head}, list(head.parameters()), a.confidence_steps, 1e-3, step_fn)
    # calibration: thresholds at Qmap quantiles over all training crops
    head.eval()
    q_all = []
    with torch.no_grad():
        for i in range(0, len(data), 32):
            y = codec.encode(data.sr[i:i + 32].float().to(d.device) / 255)
            conf = head(confidence_input(y, data.lr[i:i + 32].float().to(d.device) / 255)).cpu()
            for k in range(y.shape[0]):
                grid = pgs.make_grid(y.shape[-2], y.shape[-1], model.cfg.pgs.patch_size, model.cfg.pgs.overlap)
                q_all.append(pgs.qmap(conf[k, 0], grid))
    q = torch.cat(q_all)
    thresholds = (float(torch.quantile(q, 1 - a.simple_fraction)), float(torch.quantile(q, a.hard_fraction)))
    result = {"eta": eta, "thresholds": thresholds, "qmap_quantiles": [float(torch.quantile(q, t)) for t in (0.1, 0.5, 0.9)]}
    if d.main:
        Path(_path(a, "calibration.json")).write_text(json.dumps(result, indent=1))
        print(f"confidence head: eta {eta:.5f}, thresholds {thresholds[0]:.3f} / {thresholds[1]:.3f}")
    _finish(a, d, "confidence", head, "conf_head", result)
    return result


def _checkpoint_so_far(a, stages: tuple[str, ...], path: str) -> str:
    from patchscaler.checkpoint import save
    save(_model(a, stages), path, half=False)
    return path


def stage_rtm(a, d: Dist) -> dict:
    """RTM candidates from the training photos and all textures (held-out photos never)."""
    if not d.main:
        d.barrier()
        return {}
    import shutil
    from jobs import build_rtm
    src = _path(a, "rtm_src")
    os.makedirs(src, exist_ok=True)
    train, _ = _photos(a)
    for f in train + list_photos(Path(a.data) / "textures"):
        if not os.path.exists(os.path.join(src, f.name)):
            shutil.copyfile(f, os.path.join(src, f.name))
    ckpt = _checkpoint_so_far(a, ("texture",), _path(a, "texture-stage.safetensors"))
    n_images = len(os.listdir(src))
    ns = argparse.Namespace(src=src, dst=_path(a, "rtm"), checkpoint=ckpt,
                            crops_per_image=max(1, -(-a.rtm_candidates // n_images)),
                            candidates=a.rtm_candidates, size=a.rtm_size, shards=1, index="flat",
                            seed=a.seed, version=None, feature_actors=2, actor_cpus=0.5, gpus=0.0,
                            address=None, engine=a.rtm_engine, s3_endpoint=None, storage_options={})
    s = build_rtm.build(ns)
    Path(_path(a, "rtm.done.json")).write_text(json.dumps(s, indent=1))
    print(f"RTM: {s['candidates']} candidates -> {s['size']} entries by FPS, {s['uri']}")
    d.barrier()
    return s


class _PromptedDiT(nn.Module):
    """Patch-DiT plus its texture encoder in one forward, so DDP sees both."""

    def __init__(self, dit):
        super().__init__()
        self.dit = dit

    def forward(self, x_t, t, y0, priors, sims):
        return self.dit(x_t, t, y0, self.dit.encode_texture(priors, sims))


def _retrieve_excluding(T, rtm_keys, rtm_values, rtm_source, y0, source, k):
    """Top-k texture priors for y0, never from the photo the training crop came from: the RTM
    holds crops of the training photos, and a prior that overlaps the target would teach the
    DiT to copy rather than to use similar texture."""
    with torch.no_grad():
        sims = T(y0) @ rtm_keys.T
        sims = sims.masked_fill(rtm_source[None, :] == source[:, None], -2.0)
        s, i = sims.topk(k, dim=-1)
    return rtm_values[i].float(), s


def load_training_rtm(a, model):
    """The built RTM with each entry's source photo index (-1 for textures / unknown)."""
    from rtm_index.store import expectations, load_rtm
    info = json.loads(Path(_path(a, "rtm.done.json")).read_text())
    rtm = load_rtm(info["uri"], expect=expectations(model))
    train, _ = _photos(a)
    names = {p.name: i for i, p in enumerate(train)}
    src = torch.tensor([names.get(n, -1) for n in rtm.meta.get("entry_sources", [])] or [-1] * rtm.size)
    return rtm, src


def stage_dit(a, d: Dist) -> dict:
    model = _model(a, ("texture",))
    cfg, codec, diffusion, dit = model.cfg, model.codec, model.diffusion, model.dit
    T = model.texture.eval().requires_grad_(False)
    rtm, rtm_source = load_training_rtm(a, model)
    dev = d.device
    keys, values = torch.as_tensor(rtm.keys).float().to(dev), rtm.values.float().to(dev)
    rtm_source = rtm_source.to(dev)
    train, _ = _photos(a)
    data = Pairs(a.work, train)
    V, K = cfg.pgs.patch_size, cfg.texture.top_k
    net = d.wrap(_PromptedDiT(dit))
    ema = EMA(dit, 0.999 if not a.tiny else 0.9)
    # a fixed monitoring batch: how far the one-step x0 estimate is from the truth, relative
    # to the GRM's own error, at three noise levels (< 1 means the DiT improves on the GRM)
    mon_rng = np.random.default_rng([a.seed, 4])
    mon, mon_src = data.crops(mon_rng, 32, V, codec.factor)
    mon_y0, mon_x0, mon_src = codec.encode(mon["sr"]).to(dev), codec.encode(mon["hr"]).to(dev), mon_src.to(dev)
    mon_noise = torch.randn(mon_y0.shape, generator=torch.Generator().manual_seed(a.seed)).to(dev)
    mon_priors, mon_sims = _retrieve_excluding(T, keys, values, rtm_source, mon_y0, mon_src, K)

    @torch.no_grad()
    def monitor(module) -> dict:
        out = {}
        grm_err = float((mon_y0 - mon_x0).pow(2).mean())
        for tv in (150, 450, 950):
            t = torch.full((mon_y0.shape[0],), tv, device=dev)
            x_t = diffusion.q_sample(mon_x0, t, mon_noise)
            o = module(x_t, t, mon_y0, module.encode_texture(mon_priors, mon_sims))
            x0_hat, _ = diffusion.to_x0_eps(o, x_t, t, mon_y0)
            out[f"x0_err_ratio_t{tv}"] = float((x0_hat - mon_x0).pow(2).mean()) / grm_err
        return out

    def step_fn(step):
        rng = np.random.default_rng([a.seed, 3, step])
        c, src = data.crops(rng, a.batch, V, codec.factor)
        g = torch.Generator().manual_seed(a.seed * 1_000_003 + step)
        t = torch.randint(0, diffusion.num_timesteps, (a.batch,), generator=g)
        noise = torch.randn((a.batch, cfg.latent_channels, V, V), generator=g)
        hr, sr, src, t, noise = (d.shard(x).to(dev) for x in (c["hr"], c["sr"], src, t, noise))
        x0, y0 = codec.encode(hr), codec.encode(sr)
        priors, sims = _retrieve_excluding(T, keys, values, rtm_source, y0, src, K)
        x_t = diffusion.q_sample(x0, t, noise)
        dit.train()
        out = net(x_t, t, y0, priors, sims)
        loss = F.mse_loss(out, diffusion.target(x0, noise, t, y0))
        extra = monitor(ema.shadow) if (step + 1) % 100 == 0 and d.main else {}
        return loss, extra

    steps = _loop(a, d, "dit", {"dit": dit}, list(dit.parameters()), a.dit_steps, a.lr, step_fn,
                  warmup=100, ema=ema, minutes=a.dit_minutes)
    result = {"steps": steps, "prediction": cfg.diffusion.prediction, **monitor(ema.shadow)}
    if d.main:
        print("Patch-DiT (EMA) x0 error / GRM error on the monitoring batch: " +
              ", ".join(f"{k[-4:]} {v:.3f}" for k, v in result.items() if k.startswith("x0_err")))
    _finish(a, d, "dit", ema.shadow, "dit", result)
    return result


def stage_shortcut(a, d: Dist) -> dict:
    """Fine-tune the Patch-DiT on the paths PGS actually samples. The dit stage draws t from all
    of 0..999, but the sampler visits only its groups' few timesteps (stride 50), and it starts a
    group at tau from the *coarse* patch (y_tau = sqrt(abar) y0 + sqrt(1 - abar) eps, Eq. 4), not
    from the true x0: at tau = 100 the net has never seen an input whose signal is y0 itself, and
    reads part of the noise as detail to add. Here each training patch is grouped by the trained
    confidence head and thresholds, as at inference; t is one of its group's timesteps (a quarter
    of the patches take the full 20-step path, so uniform sampling is not left untrained); at a
    path's first timestep the input is built from y0 as the sampler builds it; and for a share of
    the patches (--shortcut-on-policy) the input at a later step is the one the sampler itself
    reaches with the current network. Starts from the dit stage's EMA weights; a lower LR."""
    from patchscaler import pgs
    from patchscaler.diffusion import shortcut_timesteps
    from patchscaler.grm import confidence_input
    model = _model(a, ("texture", "confidence", "dit"))
    cfg, codec, diffusion, dit = model.cfg, model.codec, model.diffusion, model.dit
    if a.shortcut_steps <= 0:
        _finish(a, d, "shortcut", dit, "dit", {"steps": 0})
        return {"steps": 0}
    T = model.texture.eval().requires_grad_(False)
    head = model.grm.conf_head.eval().requires_grad_(False)
    rtm, rtm_source = load_training_rtm(a, model)
    dev = d.device
    keys, values, rtm_source = torch.as_tensor(rtm.keys).float().to(dev), rtm.values.float().to(dev), rtm_source.to(dev)
    train, _ = _photos(a)
    data = Pairs(a.work, train)
    V, K, p = cfg.pgs.patch_size, cfg.texture.top_k, cfg.pgs
    paths = [shortcut_timesteps(tau, n, diffusion.num_timesteps) for tau, n in zip(p.taus, p.steps)]
    full = shortcut_timesteps(diffusion.num_timesteps, max(p.steps), diffusion.num_timesteps)
    net = d.wrap(_PromptedDiT(dit))
    ema = EMA(dit, 0.999 if not a.tiny else 0.9)

    def batch(rng, n):
        """Patches, their groups, and for each a timestep t of its path, whether t is the path's
        start, its step index j on the path, and the path (timesteps, padded with -1)."""
        c, src = data.crops(rng, n, V, codec.factor)
        x0, y0 = codec.encode(c["hr"].to(dev)), codec.encode(c["sr"].to(dev))
        with torch.no_grad():
            q = head(confidence_input(y0, c["lr"].to(dev))).mean((1, 2, 3)).cpu()
        groups = pgs.assign_groups(q, p.thresholds)
        t, start, js, rows = [], [], [], []
        for g in groups.tolist():
            path = full if rng.random() < 0.25 else paths[g]
            j = int(rng.integers(len(path)))
            t.append(path[j])
            start.append(j == 0)
            js.append(j)
            rows.append(path + [-1] * (len(full) - len(path)))
        return (x0, y0, src.to(dev), torch.tensor(t, device=dev), torch.tensor(start, device=dev), groups,
                torch.tensor(js, device=dev), torch.tensor(rows, device=dev))

    # monitoring: every patch of a fixed batch sampled along its own group's path, error
    # relative to the GRM's (< 1: PGS output closer to the truth than the GRM's), per group
    mon_x0, mon_y0, mon_src, _, _, mon_groups, _, _ = batch(np.random.default_rng([a.seed, 6]), 48)
    mon_noise = torch.randn(mon_y0.shape, generator=torch.Generator().manual_seed(a.seed + 6)).to(dev)
    mon_priors, mon_sims = _retrieve_excluding(T, keys, values, rtm_source, mon_y0, mon_src, K)

    @torch.no_grad()
    def monitor(module) -> dict:
        out = {}
        tokens = module.encode_texture(mon_priors, mon_sims)
        for g in range(p.num_groups):
            m = (mon_groups == g).to(dev)
            if not m.any():
                continue
            y0, x0 = mon_y0[m], mon_x0[m]
            x = diffusion.sample(lambda x_t, t: module(x_t, t, y0, tokens[m]), y0, p.taus[g], p.steps[g], mon_noise[m])
            out[f"sampled_err_ratio_g{g}"] = float((x - x0).pow(2).mean() / (y0 - x0).pow(2).mean().clamp_min(1e-12))
        return out

    @torch.no_grad()
    def on_policy(y0, j, path, priors, sims, noise):
        """x_t as the sampler reaches it: from y_tau (built from y0) through j DDIM steps of
        the current network along the patch's path (rows of `path`, timesteps padded with -1),
        so that training sees, and learns to correct, the drift of its own earlier steps
        rather than only the forward process's x_t."""
        dit.eval()
        tokens = dit.encode_texture(priors, sims)
        x = diffusion.q_sample(y0, path[:, 0], noise)
        for k in range(int(j.max())):
            m = j > k
            tk = path[m, k]
            x0_hat, eps = diffusion.to_x0_eps(dit(x[m], tk, y0[m], tokens[m]), x[m], tk, y0[m])
            x[m] = diffusion.ddim_step(x0_hat, eps, path[m, k + 1])
        return x

    def step_fn(step):
        rng = np.random.default_rng([a.seed, 5, step])
        x0, y0, src, t, start, _, j, path = batch(rng, a.batch)
        g = torch.Generator().manual_seed(a.seed * 1_000_003 + 7 * step)
        noise = torch.randn(x0.shape, generator=g).to(dev)
        own = torch.tensor(rng.random(a.batch) < a.shortcut_on_policy, device=dev) & (j > 0)
        x0, y0, src, t, start, noise, j, path, own = (
            d.shard(v) for v in (x0, y0, src, t, start, noise, j, path, own))
        priors, sims = _retrieve_excluding(T, keys, values, rtm_source, y0, src, K)
        x_t = diffusion.q_sample(torch.where(start.view(-1, 1, 1, 1), y0, x0), t, noise)
        if own.any():
            x_t[own] = on_policy(y0[own], j[own], path[own], priors[own], sims[own], noise[own])
        # the noise that x_t holds relative to the truth (not the one drawn: path starts and
        # on-policy inputs are not q_sample(x0)), so that eps/v targets are right too
        a_t = diffusion.abar(t, x0)
        implied = (x_t - a_t.sqrt() * x0) / (1 - a_t).sqrt()
        dit.train()
        out = net(x_t, t, y0, priors, sims)
        loss = F.mse_loss(out, diffusion.target(x0, implied, t, y0))
        extra = monitor(ema.shadow) if (step + 1) % 100 == 0 and d.main else {}
        return loss, extra

    before = monitor(dit) if d.main else {}
    steps = _loop(a, d, "shortcut", {"dit": dit}, list(dit.parameters()), a.shortcut_steps, a.shortcut_lr,
                  step_fn, warmup=50, ema=ema)
    result = {"steps": steps, **monitor(ema.shadow), **{f"before_{k}": v for k, v in before.items()}}
    if d.main:
        print("Patch-DiT sampled along its group's path, error / GRM error, before -> after: " +
              ", ".join(f"{k[-2:]} {before.get(k, float('nan')):.3f} -> {v:.3f}"
                        for k, v in result.items() if k.startswith("sampled")))
    _finish(a, d, "shortcut", ema.shadow, "dit", result)
    return result


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=os.path.dirname(__file__)).stdout.strip()
    except OSError:
        return ""


def model_version(model) -> str:
    """ps-DATE-HASH, the hash over the config (sampling settings included) and every weight, so
    that two checkpoints that can give different pixels never share a version (the manifest
    records it per image)."""
    h = hashlib.sha256(json.dumps({k: v for k, v in model.cfg.to_dict().items() if k != "version"},
                                  sort_keys=True).encode())
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode() + v.detach().cpu().contiguous().numpy().tobytes())
    h.update(model.rtm.values.numpy().tobytes() if model.rtm is not None else b"")
    return "ps-" + time.strftime("%Y%m%d") + "-" + h.hexdigest()[:8]


def stage_assemble(a, d: Dist) -> dict:
    if not d.main:
        return {}
    from patchscaler.checkpoint import save
    from patchscaler.rtm import RTM
    model = _model(a, ("texture", "confidence", "dit", "shortcut"))
    rtm, _ = load_training_rtm(a, model)
    model.rtm = RTM(torch.as_tensor(rtm.keys), rtm.values, {k: v for k, v in rtm.meta.items() if k not in ("entry_sources", "skipped")})
    model.cfg.version = model_version(model)
    record = {"command": ("patchscaler " if sys.argv[1:2] == ["train"] else "python -m jobs.train ") + " ".join(sys.argv[1:]),
              "commit": _git_commit(), "seed": a.seed, "data": os.path.abspath(a.data),
              "prepare": json.loads(Path(_path(a, "prepare.done.json")).read_text()),
              "texture": json.loads(Path(_path(a, "texture.version.json")).read_text()),
              "calibration": json.loads(Path(_path(a, "calibration.json")).read_text()),
              "rtm": {k: v for k, v in json.loads(Path(_path(a, "rtm.done.json")).read_text()).items() if k != "skipped"},
              "dit": load_state(_path(a, "dit.done.safetensors"), {}, None)[1],
              "shortcut": load_state(_path(a, "shortcut.done.safetensors"), {}, None)[1] if _done(a, "shortcut") else None,
              "minutes": json.loads(Path(_path(a, "timing.json")).read_text()) if os.path.exists(_path(a, "timing.json")) else {}}
    save(model, a.out, half=True, extra={"training": record})
    Path(a.out).with_suffix(".training.json").write_text(json.dumps(record, indent=1))
    size = os.path.getsize(a.out) / 2 ** 20
    print(f"checkpoint {a.out}: {size:.1f} MiB, version {model.cfg.version}")
    return {"path": a.out, "mib": size}


def run(a) -> int:
    torch.manual_seed(a.seed)
    d = Dist.from_env(a.device)
    a.device = d.device
    if d.world > 1 and d.main:
        log.info("DDP: %d workers, this is rank %d on %s", d.world, d.rank, d.device)
    os.makedirs(a.work, exist_ok=True)
    stages = STAGES if a.stage == "all" else (a.stage,)
    fns = {"prepare": stage_prepare, "texture": stage_texture, "confidence": stage_confidence,
           "rtm": stage_rtm, "dit": stage_dit, "shortcut": stage_shortcut, "assemble": stage_assemble}
    timing_path = _path(a, "timing.json")
    timing = json.loads(Path(timing_path).read_text()) if os.path.exists(timing_path) else {}
    for s in stages:
        if a.stage == "all" and s != "assemble" and _done(a, s):
            if d.main:
                log.info("%s: done already, skipped", s)
            continue
        t0 = time.time()
        if d.main:
            log.info("stage %s", s)
        fns[s](a, d)
        if d.main:
            timing[s] = round(timing.get(s, 0) + (time.time() - t0) / 60, 2)
            Path(timing_path).write_text(json.dumps(timing, indent=1))
    return 0


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(prog="patchscaler train")
    add_args(p)
    try:
        return run(p.parse_args(argv))
    except Interrupted as e:
        log.info("%s", e)
        return 0


if __name__ == "__main__":
    sys.exit(main())
