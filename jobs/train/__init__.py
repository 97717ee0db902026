"""`patchscaler train STAGE`: train the default model's learned parts on CPU (or GPUs).

    grm         the compact GRM distilled from Real-ESRGAN x4plus (its outputs cached once);
                nothing for another backbone
    prepare     seeded HR crops -> Real-ESRGAN degradations -> the frozen GRM, cached
    texture     T, self-supervised on the texture images (InfoNCE between two augmented crops
                of one texture); prints top-1 retrieval accuracy on held-out textures
    confidence  the GRM's confidence head with the paper's loss (Eq. 6); then eta-independent
                calibration of the PGS thresholds on the training crops
    rtm         the RTM, by the build-rtm job (Ray Data), keyed by the trained T
    dit         the Patch-DiT (x0-residual parametrisation, see below) with texture prompts
    shortcut    fine-tunes the Patch-DiT on the timesteps PGS visits, each patch on its own
                group's path (see shortcut.py)
    assemble    one checkpoint (fp16 weights, uint8 RTM values) + its training record
    all         everything in order; finished stages are skipped, unfinished ones resume

One module per stage; work.py holds what they share (the working folder, the model as far as
it is trained, the training loop). Every stage writes WORK/STAGE.state.safetensors every
--save-every steps and resumes from it; loss curves go to WORK/logs/STAGE.jsonl. Run under
`torchrun --nproc_per_node N` to train texture/confidence/dit/shortcut with DDP (see
jobs/trainstate.py).

Why x0-residual for the Patch-DiT (the paper predicts eps): the network outputs x0 - y0, the
correction to the GRM's patch. Its output layer starts at zero (adaLN-Zero), so the untrained
and the barely trained model return the GRM result instead of noise, and every step of a
short CPU budget moves the output from the GRM result towards the truth. eps-prediction needs
the net to recover y0 through the noise first; at the small t of the simple group its x0 error
is amplified by sqrt(1 - abar) / sqrt(abar). `bench/parametrisation.py` measures both."""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import time
from pathlib import Path

import torch

from jobs.trainstate import Dist, load_state

from .assemble import model_version, stage_assemble
from .confidence import stage_confidence
from .dit_stage import stage_dit
from .grm_distill import stage_grm
from .init import seed_from_checkpoint
from .train_options import STAGES, TrainOptions, add_args
from .prepare import stage_prepare
from .rtm_stage import stage_rtm
from .shortcut import paths_spec, stage_shortcut, training_pgs
from .texture_stage import stage_texture
from .work import Interrupted, is_done, log, model_config, work_path

RUN = {"grm": stage_grm, "prepare": stage_prepare, "texture": stage_texture, "confidence": stage_confidence,
       "rtm": stage_rtm, "dit": stage_dit, "shortcut": stage_shortcut, "assemble": stage_assemble}
__all__ = ["STAGES", "DataError", "Interrupted", "TrainOptions", "add_args", "main", "model_version", "run"]


class DataError(ValueError):
    """--data is missing or (with --check-data) not the listed files."""


def run(a: TrainOptions | argparse.Namespace) -> int:
    """Run a stage, or all of them in order (finished ones skipped); a parsed command line
    is taken as its TrainOptions."""
    a = a if isinstance(a, TrainOptions) else TrainOptions.from_args(a)
    if not a.data or not os.path.isdir(a.data):
        raise DataError(f"--data {a.data or '(none)'}: not a folder; it must hold train/ (photos) and textures/")
    if a.check_data:
        from .data_check import LIST, check_data
        problems = check_data(a.data)
        if problems:
            kinds = {}
            for p in problems:
                kinds.setdefault(p.split(":")[0], []).append(p.split(": ", 1)[1])
            raise DataError(f"--check-data: {a.data} is not the files {LIST.name} lists: " + "; ".join(
                f"{k} {len(v)} ({', '.join(v[:3])}{', ...' if len(v) > 3 else ''})" for k, v in kinds.items()))
        log.info("--check-data: %s holds exactly the %s files listed", a.data, LIST.name)
    d = Dist.from_env(a.device)
    a = dataclasses.replace(a, device=d.device)
    if d.world > 1 and d.main:
        log.info("DDP: %d workers, this is rank %d on %s", d.world, d.rank, d.device)
    cfg = model_config(a)
    paths = paths_spec(training_pgs(cfg.pgs, cfg.diffusion.num_timesteps, a.shortcut_paths))  # refused now, not hours later
    os.makedirs(a.work, exist_ok=True)
    if a.init and d.main:
        seeded = seed_from_checkpoint(a)
        log.info("--init %s: %s taken from the checkpoint", a.init, ", ".join(seeded) or "nothing (all finished already)")
    d.barrier()
    stages = STAGES if a.stage == "all" else (a.stage,)
    timing_path = work_path(a, "timing.json")
    timing = json.loads(Path(timing_path).read_text()) if os.path.exists(timing_path) else {}
    for s in stages:
        if a.stage == "all" and s != "assemble" and is_done(a, s):
            if d.main:
                log.info("%s: done already, skipped", s)
                if s == "shortcut" and a.shortcut_paths:
                    trained = load_state(work_path(a, "shortcut.done.safetensors"), {}, None)[1].get("paths")
                    if trained != paths:
                        log.warning("shortcut: it was trained on paths %s, not the --shortcut-paths asked for; "
                                    "delete %s to train it again", trained, work_path(a, "shortcut.done.safetensors"))
            continue
        t0 = time.time()
        if d.main:
            log.info("stage %s", s)
        # each stage from the seed alone (its fresh weights are drawn from torch's generator):
        # the same result whether it runs after other stages in this process or on its own
        torch.manual_seed(a.seed)
        RUN[s](a, d)
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
