"""The options of `patchscaler train`, typed: `TrainOptions` is what every stage reads, and
`add_args` is its command line (same names, same defaults; tests/test_train_parts.py checks
that the two stay in step)."""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

STAGES = ("prepare", "texture", "confidence", "rtm", "dit", "shortcut", "assemble")


@dataclass
class TrainOptions:
    """One training run's options (their meaning: add_args' help)."""
    stage: str = "all"
    data: str = "../shared/data"
    work: str = "runs/default"
    out: str = "patchscaler/weights/default.safetensors"
    seed: int = 0
    device: str = "cpu"
    tiny: bool = False
    init: str = ""
    crop: int = 192
    crops_per_photo: int = 8
    texture_steps: int = 600
    confidence_steps: int = 3000
    dit_steps: int = 4500
    dit_minutes: float = 0
    shortcut_steps: int = 1500
    shortcut_lr: float = 1e-4
    shortcut_on_policy: float = 0.5
    shortcut_paths: str = ""
    batch: int = 32
    lr: float = 3e-4
    save_every: int = 100
    stop_after: int = 0
    rtm_size: int = 2000
    rtm_candidates: int = 20000
    rtm_engine: str = "ray"
    simple_fraction: float = 0.5
    hard_fraction: float = 0.2
    eta_quantile: float = 0.3
    progress: bool = True

    @classmethod
    def from_args(cls, a: argparse.Namespace) -> TrainOptions:
        """The options of a parsed command line (which may carry others, e.g. the CLI's `cmd`)."""
        return cls(**{f.name: getattr(a, f.name) for f in dataclasses.fields(cls)})


def add_args(p: argparse.ArgumentParser) -> None:
    d = TrainOptions()
    p.add_argument("stage", choices=STAGES + ("all",))
    p.add_argument("--data", default=d.data, help="folder with train/ (photos) and textures/")
    p.add_argument("--work", default=d.work, help="working folder: caches, states, logs")
    p.add_argument("--out", default=d.out, help="assembled checkpoint")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device)
    p.add_argument("--tiny", action="store_true", help="tiny model and budget (tests)")
    p.add_argument("--init", default=d.init, metavar="CHECKPOINT",
                   help="continue from this assembled checkpoint: its texture, confidence and Patch-DiT "
                        "weights and calibration become the finished stages (see jobs/train/init.py)")
    p.add_argument("--crop", type=int, default=d.crop, help="prepare: HR crop size")
    p.add_argument("--crops-per-photo", type=int, default=d.crops_per_photo)
    p.add_argument("--texture-steps", type=int, default=d.texture_steps)
    p.add_argument("--confidence-steps", type=int, default=d.confidence_steps)
    p.add_argument("--dit-steps", type=int, default=d.dit_steps)
    p.add_argument("--dit-minutes", type=float, default=d.dit_minutes,
                   help="stop the DiT stage after this long (0: no limit)")
    p.add_argument("--shortcut-steps", type=int, default=d.shortcut_steps,
                   help="Patch-DiT fine-tuning on the timesteps PGS visits (0: skip)")
    p.add_argument("--shortcut-lr", type=float, default=d.shortcut_lr)
    p.add_argument("--shortcut-on-policy", type=float, default=d.shortcut_on_policy,
                   help="share of shortcut patches whose noisy input is made by the sampler itself")
    p.add_argument("--shortcut-paths", default=d.shortcut_paths, metavar="TAU/STEPS,...",
                   help="the groups' sampling paths the shortcut stage trains on, e.g. 100/2,400/8,1000/20 "
                        "(v0.3.0-v0.5.0's weights); default: the model's own PGS paths. A quarter of the "
                        "patches take the full path instead (T with the largest STEPS given); paths off "
                        "the model's stride-50 grid are allowed")
    p.add_argument("--batch", type=int, default=d.batch, help="global batch (split over DDP workers)")
    p.add_argument("--lr", type=float, default=d.lr, help="Patch-DiT learning rate")
    p.add_argument("--save-every", type=int, default=d.save_every)
    p.add_argument("--stop-after", type=int, default=d.stop_after,
                   help="save and stop once a stage reaches this step (resume later with the same command)")
    p.add_argument("--rtm-size", type=int, default=d.rtm_size)
    p.add_argument("--rtm-candidates", type=int, default=d.rtm_candidates)
    p.add_argument("--rtm-engine", choices=["ray", "local"], default=d.rtm_engine)
    p.add_argument("--simple-fraction", type=float, default=d.simple_fraction,
                   help="calibration: share of simple patches")
    p.add_argument("--hard-fraction", type=float, default=d.hard_fraction, help="calibration: share of hard patches")
    p.add_argument("--eta-quantile", type=float, default=d.eta_quantile,
                   help="eta of the confidence loss = this quantile of the GRM's squared latent error")
    p.add_argument("--no-progress", dest="progress", action="store_false")
