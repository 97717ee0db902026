"""`--init CHECKPOINT`: continue training from an assembled checkpoint instead of from scratch.

A checkpoint holds what the texture, confidence and dit stages (and shortcut, folded into the
Patch-DiT) produced, and the calibration in its config; here they become the working folder's
finished stages, so `train all` skips them and runs only what is left: the RTM (rebuilt, because
the checkpoint's RTM no longer records which photo each entry came from, which the later stages
need so that a patch never retrieves its own photo), the shortcut stage from the checkpoint's
Patch-DiT, and assemble. Stages already finished in the folder are never overwritten.

A checkpoint of another GRM (x4plus where the compact GRM is trained) gives its texture extractor
and Patch-DiT; the confidence head and the calibration are trained again for the new GRM.
Only the weights and the calibration carry over: the sampling settings (taus, steps) and the
output stage are this code's defaults, as in any training run (a difference is logged)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from jobs.trainstate import save_state

from .train_options import TrainOptions
from .work import is_done, model_config, work_path

log = logging.getLogger("patchscaler.train")

# the parts of the config the weights' shapes and meaning depend on
ARCHITECTURE = ("codec", "grm", "diffusion", "dit", "texture")
# the GRM's restoration network may differ (e.g. a checkpoint on x4plus continued on the compact
# GRM): the texture extractor and the Patch-DiT carry over, the confidence head does not (it
# predicts one network's errors) and is trained again
GRM_FREE = ("backbone", "compact_convs")


def check_architecture(trained, init, path: str) -> None:
    """The checkpoint must be of the architecture being trained (e.g. not a --tiny one)."""
    def arch(cfg):
        d = cfg.to_dict()
        return {k: {f: v for f, v in d[k].items() if f not in ("version", "loss_eta", "weights") + GRM_FREE}
                for k in ARCHITECTURE}
    want, have = arch(trained), arch(init)
    diff = [f"{k}.{f}: {have[k].get(f)!r} (training {want[k].get(f)!r})"
            for k in ARCHITECTURE for f in sorted(set(want[k]) | set(have[k])) if want[k].get(f) != have[k].get(f)]
    if diff:
        raise ValueError(f"--init {path}: the checkpoint's architecture is not the one being trained: " + "; ".join(diff[:6]))


def seed_from_checkpoint(a: TrainOptions) -> list[str]:
    """Write the finished stages that `a.work` lacks from the checkpoint `a.init`; returns them."""
    from patchscaler.checkpoint import load
    model = load(a.init, components=("texture", "grm", "dit"))
    cfg = model.cfg
    trained = model_config(a)
    check_architecture(trained, cfg, a.init)
    for part in ("pgs", "fusion"):
        now, then = getattr(trained, part).__dict__, getattr(cfg, part).__dict__
        changed = {k: (then[k], v) for k, v in now.items() if k != "thresholds" and then.get(k) != v}
        if changed:
            log.info("--init: the checkpoint's %s settings differ from the defaults trained here "
                     "(checkpoint, here): %s", part, changed)
    origin = {"init": a.init, "init_version": cfg.version}
    seeded = []
    if not is_done(a, "texture"):
        Path(work_path(a, "texture.version.json")).write_text(json.dumps({"version": cfg.texture.version, **origin}, indent=1))
        save_state(work_path(a, "texture.done.safetensors"), {"texture": model.texture.float()}, None, 0, origin)
        seeded.append("texture")
    same_grm = (cfg.grm.backbone, cfg.grm.compact_convs) == (trained.grm.backbone, trained.grm.compact_convs)
    if not same_grm:
        log.info("--init: the checkpoint's GRM is %s, the one trained here %s: the confidence head and the "
                 "thresholds are trained again", cfg.grm.backbone, trained.grm.backbone)
    if not is_done(a, "confidence") and same_grm:
        calibration = {"eta": cfg.grm.loss_eta, "thresholds": list(cfg.pgs.thresholds), **origin}
        Path(work_path(a, "calibration.json")).write_text(json.dumps(calibration, indent=1))
        save_state(work_path(a, "confidence.done.safetensors"), {"conf_head": model.grm.conf_head.float()}, None, 0, origin)
        seeded.append("confidence")
    if not is_done(a, "dit"):
        save_state(work_path(a, "dit.done.safetensors"), {"dit": model.dit.float()}, None, 0, origin)
        seeded.append("dit")
    return seeded
