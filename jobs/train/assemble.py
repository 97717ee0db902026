"""Stage `assemble`: one checkpoint (fp16 weights, uint8 RTM values) and its training record."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from jobs.trainstate import Dist, load_state

from .train_options import TrainOptions
from .rtm_stage import load_training_rtm
from .work import is_done, model_so_far, work_path


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False,
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


def init_record(texture: dict) -> dict:
    """Where a run that continued from a checkpoint (--init) started: that checkpoint's version
    and its own training record, so the chain back to the first run stays in the file."""
    if "init" not in texture:
        return {}
    from patchscaler.checkpoint import checkpoint_info
    try:
        earlier = checkpoint_info(texture["init"])["extra"].get("training")
    except OSError:  # moved or deleted since: keep what the working folder knows
        earlier = None
    return {"init": {"checkpoint": texture["init"], "version": texture["init_version"], "training": earlier}}


def training_record(a: TrainOptions) -> dict:
    """How the checkpoint was made: the command, commit, seed, data and every stage's result."""
    def read(name):
        return json.loads(Path(work_path(a, name)).read_text())
    return {"command": ("patchscaler " if sys.argv[1:2] == ["train"] else "python -m jobs.train ") + " ".join(sys.argv[1:]),
            "commit": git_commit(), "seed": a.seed, "data": os.path.abspath(a.data),
            "grm": (load_state(work_path(a, "grm.done.safetensors"), {}, None)[1]
                    if os.path.exists(work_path(a, "grm.done.safetensors")) else
                    read("grm.done.json") if os.path.exists(work_path(a, "grm.done.json")) else None),
            "prepare": read("prepare.done.json"),
            "texture": read("texture.version.json"),
            "calibration": read("calibration.json"),
            "rtm": {k: v for k, v in read("rtm.done.json").items() if k != "skipped"},
            "dit": load_state(work_path(a, "dit.done.safetensors"), {}, None)[1],
            "shortcut": load_state(work_path(a, "shortcut.done.safetensors"), {}, None)[1] if is_done(a, "shortcut") else None,
            "minutes": read("timing.json") if os.path.exists(work_path(a, "timing.json")) else {},
            **init_record(read("texture.version.json"))}


def stage_assemble(a: TrainOptions, d: Dist) -> dict:
    if not d.main:
        return {}
    from patchscaler.checkpoint import save
    from patchscaler.config import override
    from patchscaler.rtm import RTM
    model = model_so_far(a, ("texture", "confidence", "dit", "shortcut"))
    rtm, _ = load_training_rtm(a, model)
    model.rtm = RTM(torch.as_tensor(rtm.keys), rtm.values, {k: v for k, v in rtm.meta.items() if k not in ("entry_sources", "skipped")})
    model.cfg = override(model.cfg, version=model_version(model))
    record = training_record(a)
    save(model, a.out, half=True, extra={"training": record})
    Path(a.out).with_suffix(".training.json").write_text(json.dumps(record, indent=1))
    size = os.path.getsize(a.out) / 2 ** 20
    print(f"checkpoint {a.out}: {size:.1f} MiB, version {model.cfg.version}")
    return {"path": a.out, "mib": size}
