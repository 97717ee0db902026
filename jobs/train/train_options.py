"""The options of `patchscaler train`, typed: `TrainOptions` is what every stage reads, and
its command line is built from it (jobs/args.py)."""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from jobs.args import add_fields, from_args
from pipeline.fields import opt

STAGES = ("grm", "prepare", "texture", "confidence", "rtm", "dit", "shortcut", "assemble")


@dataclass
class TrainOptions:
    """One training run's options; `patchscaler train`'s command line is built from them."""
    stage: str = opt("all", "a stage, or all of them in order (finished ones skipped)", positional=True,
                     choices=STAGES + ("all",))
    data: str = opt("", "folder with train/ (photos) and textures/ (texture photos); docs/training.md says "
                    "what fits", required=True)
    check_data: bool = opt(False, "first check DATA against the list of the shipped model's training files "
                           "(patchscaler/weights/training_data.csv: names, sizes, sha256) and stop on a "
                           "difference", action="store_true")
    work: str = opt("runs/default", "working folder: caches, states, logs")
    out: str = opt("patchscaler/weights/default.safetensors", "assembled checkpoint")
    seed: int = opt(0, "seed of every stage's crops, noise and fresh weights", type=int)
    device: str = opt("cpu", "torch device (under torchrun: cuda gives each worker its own GPU)")
    tiny: bool = opt(False, "tiny model and budget (tests)", action="store_true")
    init: str = opt("", "continue from this assembled checkpoint: its texture, confidence and Patch-DiT weights "
                    "and calibration become the finished stages (see jobs/train/init.py)", metavar="CHECKPOINT")
    grm: str = opt("rrdb", "the GRM trained around: compact (an SRVGGNetCompact distilled from Real-ESRGAN x4plus "
                   "by the grm stage) or rrdb (x4plus itself, frozen)", choices=["compact", "rrdb"])
    grm_crop: int = opt(64, "grm: LR crop size of the teacher's crops", type=int)
    grm_crops_per_image: int = opt(20, "grm: crops per training photo (half of each degradation family)", type=int)
    grm_texture_crops: int = opt(8, "grm: crops per training texture", type=int)
    grm_patch: int = opt(48, "grm: LR px per side of a training sample", type=int)
    grm_batch: int = opt(16, "grm: batch", type=int)
    grm_steps: int = opt(3000, "grm: steps", type=int)
    grm_minutes: float = opt(0, "stop the grm stage after this long (0: no limit)", type=float)
    grm_lr: float = opt(1e-4, "grm: learning rate", type=float)
    grm_hf_weight: float = opt(0.0, "grm: weight of the pointwise high-pass L1 term", type=float)
    grm_energy_weight: float = opt(20.0, "grm: weight of the detail-energy term (as much fine detail as x4plus, "
                                   "wherever it cannot be matched pixel for pixel)", type=float)
    grm_init: str = opt("", "grm: start from this student (an earlier grm.done.safetensors) instead of "
                        "realesr-animevideov3-x4")
    grm_mosaic_weight: float = opt(5.0, "grm: weight of the cell-edge term (steps across the pixel shuffle's 4x4 "
                                   "cell borders no steeper than x4plus's there: no 4 px grid)", type=float)
    grm_perceptual: float = opt(0.0, "grm: weight of the perceptual term, VGG16 features (before ReLU) of the "
                                "student's output against x4plus's (needs the LPIPS weights, scripts/install.sh "
                                "train)", type=float)
    crop: int = opt(192, "prepare: HR crop size", type=int)
    crops_per_photo: int = opt(8, "prepare: crops per training photo", type=int)
    texture_steps: int = opt(600, "texture: steps", type=int)
    confidence_steps: int = opt(3000, "confidence: steps", type=int)
    dit_steps: int = opt(4500, "dit: steps", type=int)
    dit_minutes: float = opt(0, "stop the DiT stage after this long (0: no limit)", type=float)
    shortcut_steps: int = opt(1500, "Patch-DiT fine-tuning on the timesteps PGS visits (0: skip)", type=int)
    shortcut_lr: float = opt(1e-4, "shortcut: learning rate", type=float)
    shortcut_on_policy: float = opt(0.5, "share of shortcut patches whose noisy input is made by the sampler "
                                    "itself", type=float)
    shortcut_paths: str = opt("", "the groups' sampling paths the shortcut stage trains on, e.g. "
                              "100/2,400/8,1000/20 (v0.3.0-v0.5.0's weights); default: the model's own PGS paths. "
                              "A quarter of the patches take the full path instead (T with the largest STEPS "
                              "given); paths off the model's stride-50 grid are allowed", metavar="TAU/STEPS,...")
    shortcut_perceptual: float = opt(0.0, "shortcut: weight of the perceptual term, VGG16 features (before ReLU, "
                                     "conv1_2..conv5_3) of the decoded x0 estimate against the HR, beside the "
                                     "diffusion loss (0: none; needs the LPIPS weights, scripts/install.sh train)",
                                     type=float)
    shortcut_perceptual_kind: str = opt("features", "shortcut: the perceptual term: features (L1 of VGG16 features "
                                         "before ReLU, weighed as Real-ESRGAN weighs VGG19's) or lpips-vgg (LPIPS "
                                         "with the VGG16 trunk; LPIPS-Alex stays the judge)",
                                         choices=["features", "lpips-vgg"])
    shortcut_minutes: float = opt(0, "stop the shortcut stage after this long (0: no limit)", type=float)
    batch: int = opt(32, "global batch (split over DDP workers)", type=int)
    lr: float = opt(3e-4, "Patch-DiT learning rate", type=float)
    save_every: int = opt(100, "save each stage's state every this many steps", type=int)
    stop_after: int = opt(0, "save and stop once a stage reaches this step (resume later with the same command)",
                          type=int)
    rtm_size: int = opt(2000, "rtm: entries after farthest point sampling", type=int)
    rtm_candidates: int = opt(20000, "rtm: candidate crops", type=int)
    rtm_engine: str = opt("ray", "rtm: the build-rtm engine", choices=["ray", "local"])
    simple_fraction: float = opt(0.5, "calibration: share of simple patches", type=float)
    hard_fraction: float = opt(0.2, "calibration: share of hard patches", type=float)
    eta_quantile: float = opt(0.3, "eta of the confidence loss = this quantile of the GRM's squared latent error",
                              type=float)
    progress: bool = opt(True, "no progress bars", flags=("--no-progress",), action="store_false")

    @classmethod
    def from_args(cls, a: argparse.Namespace) -> TrainOptions:
        """The options of a parsed command line (which may carry others, e.g. the CLI's `cmd`)."""
        return from_args(cls, a)


def add_args(p: argparse.ArgumentParser) -> None:
    add_fields(p, TrainOptions)
