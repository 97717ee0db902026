"""What every stage shares: the working folder (paths, finished stages, the photos), the model
as far as it is trained, and the training loop (resume, cosine LR, AdamW, logs, states)."""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from jobs.train_data import list_photos, split
from jobs.trainstate import EMA, Dist, LossLog, cosine_lr, load_state, save_state

from .train_options import TrainOptions

log = logging.getLogger("patchscaler.train")


class Interrupted(Exception):
    """A stage stopped early on request; its state is saved and the same command resumes it."""


def work_path(a: TrainOptions, name: str) -> str:
    return os.path.join(a.work, name)


def is_done(a: TrainOptions, stage: str) -> bool:
    return os.path.exists(work_path(a, f"{stage}.done.safetensors")) or (
        stage in ("grm", "prepare", "rtm") and os.path.exists(work_path(a, f"{stage}.done.json")))


def photos(a: TrainOptions):
    """(training photos, held-out photos) of --data/train."""
    return split(list_photos(Path(a.data) / "train"))


def textures(a: TrainOptions):
    """(training textures, held-out textures) of --data/textures."""
    return split(list_photos(Path(a.data) / "textures"))


def model_config(a: TrainOptions):
    """The config being trained: the default (shipped) architecture, or the tiny one with --tiny
    (on the frozen Real-ESRGAN that `prepare` runs), plus what the finished stages calibrated."""
    from patchscaler.config import PatchScalerConfig, override, tiny_config
    cfg = tiny_config(grm={"backbone": a.grm}) if a.tiny else override(PatchScalerConfig(), grm={"backbone": a.grm})
    calib = work_path(a, "calibration.json")
    if os.path.exists(calib):
        c = json.loads(Path(calib).read_text())
        cfg = override(cfg, grm={"loss_eta": c["eta"]}, pgs={"thresholds": tuple(c["thresholds"])})
    return cfg


def model_so_far(a: TrainOptions, stages: tuple[str, ...] = ()):
    """The model as far as it is trained: the config (with calibration) and finished stages."""
    from patchscaler.config import override
    from patchscaler.model import PatchScaler
    cfg = model_config(a)
    if "texture" in stages:
        version = json.loads(Path(work_path(a, "texture.version.json")).read_text())["version"]
        cfg = override(cfg, texture={"version": version})
    model = PatchScaler(cfg)
    load_compact_grm(a, model.grm)
    for stage, name in (("texture", "texture"), ("confidence", "conf_head"), ("dit", "dit"), ("shortcut", "dit")):
        if stage in stages and (stage != "shortcut" or is_done(a, stage)):
            module = model.grm.conf_head if name == "conf_head" else getattr(model, name)
            load_state(work_path(a, f"{stage}.done.safetensors"), {name: module}, None)
    return model.to(a.device)


def load_compact_grm(a: TrainOptions, grm) -> None:
    """The distilled GRM's weights (stage grm) into a compact GRM; other backbones have theirs."""
    if getattr(grm, "backbone", None) is not None and model_config(a).grm.backbone == "compact":
        if not os.path.exists(work_path(a, "grm.done.safetensors")):
            raise FileNotFoundError(f"the compact GRM is not trained yet: run `patchscaler train grm` first ({a.work})")
        load_state(work_path(a, "grm.done.safetensors"), {"student": grm.backbone}, None)


def train_loop(a: TrainOptions, d: Dist, stage: str, modules: dict[str, nn.Module], params, steps: int, lr: float,
               step_fn, warmup: int = 50, ema: EMA | None = None, minutes: float = 0.0,
               settings: dict | None = None) -> int:
    """The shared training loop: resume, cosine LR, AdamW, logs, periodic state, progress.
    step_fn(step) -> (loss, extra values to log). `settings` are saved with the state, and a
    state saved with other settings is not resumed (it would mix two trainings silently)."""
    from tqdm import tqdm
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    state_path = work_path(a, f"{stage}.state.safetensors")
    all_modules = dict(modules, **({"ema": ema.shadow} if ema else {}))
    step = 0
    if os.path.exists(state_path):
        step, saved = load_state(state_path, all_modules, opt)
        differ = {k: (saved[k], v) for k, v in (settings or {}).items() if k in saved and saved[k] != v}
        if differ:
            raise ValueError(f"{stage}: {state_path} was saved at step {step} with other settings "
                             + "; ".join(f"{k} {old!r} (now {new!r})" for k, (old, new) in differ.items())
                             + ": run with those, or delete it to start the stage again")
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
            save_state(state_path, all_modules, opt, step, settings)
        if out_of_time:
            if d.main and step != a.stop_after:
                log.info("%s: time budget of %.0f min reached at step %d", stage, minutes, step)
            break
    bar.close()
    d.barrier()
    if step == a.stop_after and step < steps:
        raise Interrupted(f"{stage}: stopped at step {step} of {steps} (--stop-after); run again to resume")
    return step


def finish(a: TrainOptions, d: Dist, stage: str, module: nn.Module, name: str, extra: dict) -> None:
    """The stage's result: WORK/STAGE.done.safetensors (weights and what the stage measured)."""
    if d.main:
        save_state(work_path(a, f"{stage}.done.safetensors"), {name: module}, None, 0, extra)
    d.barrier()
