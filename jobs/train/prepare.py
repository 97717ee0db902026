"""Stage `prepare`: seeded HR crops of the training photos -> Real-ESRGAN degradations -> the
frozen Real-ESRGAN GRM, run once and cached (jobs/train_data.py)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from jobs.train_data import prepare
from jobs.trainstate import Dist

from .train_options import TrainOptions
from .work import load_compact_grm, model_config, photos, work_path


def stage_prepare(a: TrainOptions, d: Dist) -> None:
    if d.main:
        from patchscaler.grm import RealESRGANGRM
        cfg = model_config(a)
        grm = RealESRGANGRM(cfg.latent_channels, cfg.grm)
        load_compact_grm(a, grm)
        grm = grm.eval().to(memory_format=torch.channels_last)
        train, held = photos(a)
        prepare(grm, train, a.work, a.crop, a.crops_per_photo, a.seed, a.progress)
        Path(work_path(a, "prepare.done.json")).write_text(json.dumps(
            {"train": [p.name for p in train], "held_out": [p.name for p in held], "crop": a.crop,
             "crops_per_photo": a.crops_per_photo, "seed": a.seed}, indent=1))
    d.barrier()
