"""Stage `rtm`: the RTM, built by the build-rtm job (Ray Data) and keyed by the trained T, from
the training photos and all textures (held-out photos never); and the texture priors the
later stages retrieve from it."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from jobs.rtm_job import BuildRTMOptions
from jobs.train_data import list_photos
from jobs.trainstate import Dist
from patchscaler.rtm import RTM

from .train_options import TrainOptions
from .work import model_so_far, photos, work_path


def checkpoint_so_far(a: TrainOptions, stages: tuple[str, ...], path: str) -> str:
    from patchscaler.checkpoint import save
    save(model_so_far(a, stages), path, half=False)
    return path


def rtm_options(a: TrainOptions, src: str, n_images: int, checkpoint: str) -> BuildRTMOptions:
    """build-rtm's options for the training RTM: enough crops per image for --rtm-candidates,
    FPS down to --rtm-size, two light feature actors."""
    return BuildRTMOptions(src=src, dst=work_path(a, "rtm"), checkpoint=checkpoint,
                           crops_per_image=max(1, -(-a.rtm_candidates // n_images)),
                           candidates=a.rtm_candidates, size=a.rtm_size, seed=a.seed,
                           feature_actors=2, engine=a.rtm_engine)


def stage_rtm(a: TrainOptions, d: Dist) -> dict:
    if not d.main:
        d.barrier()
        return {}
    from jobs import rtm_job
    src = work_path(a, "rtm_src")
    os.makedirs(src, exist_ok=True)
    train, _ = photos(a)
    for f in train + list_photos(Path(a.data) / "textures"):
        if not os.path.exists(os.path.join(src, f.name)):
            shutil.copyfile(f, os.path.join(src, f.name))
    ckpt = checkpoint_so_far(a, ("texture",), work_path(a, "texture-stage.safetensors"))
    s = rtm_job.build(rtm_options(a, src, len(os.listdir(src)), ckpt).namespace())
    Path(work_path(a, "rtm.done.json")).write_text(json.dumps(s, indent=1))
    print(f"RTM: {s['candidates']} candidates -> {s['size']} entries by FPS, {s['uri']}")
    d.barrier()
    return s


def load_training_rtm(a: TrainOptions, model):
    """The built RTM with each entry's source photo index (-1 for textures / unknown)."""
    from rtm_index.format import expectations, load_rtm
    info = json.loads(Path(work_path(a, "rtm.done.json")).read_text())
    rtm = load_rtm(info["uri"], expect=expectations(model))
    train, _ = photos(a)
    names = {p.name: i for i, p in enumerate(train)}
    src = torch.tensor([names.get(n, -1) for n in rtm.meta.get("entry_sources", [])] or [-1] * rtm.size)
    return rtm, src


class TexturePriors:
    """Top-k texture priors for training patches from the training RTM, never from the photo the
    patch came from: the RTM holds crops of the training photos, and a prior that overlaps the
    target would teach the DiT to copy rather than to use similar texture."""

    def __init__(self, a: TrainOptions, model, device):
        rtm, source = load_training_rtm(a, model)
        self.rtm = RTM(torch.as_tensor(rtm.keys).float().to(device), rtm.values.float().to(device))
        self.source = source.to(device)
        self.T = model.texture.eval().requires_grad_(False)
        self.k = model.cfg.texture.top_k

    @torch.no_grad()
    def __call__(self, y0: torch.Tensor, photo: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """y0 (B, C, V, V) coarse patches, photo (B,) their photos -> priors (B, k, C, V, V), sims (B, k)."""
        return self.rtm.retrieve(self.T(y0), self.k, exclude=self.source[None, :] == photo[:, None])

