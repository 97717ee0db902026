"""Stage `grm`: the compact GRM, distilled from Real-ESRGAN x4plus.

x4plus (RRDBNet, ~18 M multiply-adds per LR pixel) was half of the method's time. The compact
GRM is SRVGGNetCompact (a plain stack of 3x3 convs of 64 channels with PReLU and a pixel
shuffle, ~0.6-1.2 M multiply-adds per LR pixel) trained to reproduce x4plus's pixels:

  teacher   x4plus's outputs on seeded LR crops of every training photo and texture, half of
            them degraded by the training family (Real-ESRGAN second order), half by the
            classical one (blur + bicubic + JPEG), so the student sees the inputs it will get;
            computed once and cached per image (WORK/grm_data/), like `prepare`'s.
  student   starts from realesr-animevideov3-x4 (same architecture; deeper students start
            from it too, the extra convs set to the identity so the start is the same function)
            and learns  L1(pixels) + w * L1(detail energy) + m * L1(cell edges)
            (+ p * VGG16 features, --grm-perceptual, against x4plus's output): x4plus
            invents texture that a student 30x smaller cannot reproduce pixel for pixel, and a
            pointwise loss (L1, or L1 on the high-pass band) then prefers smooth pictures:
            measured, its sharpness fell below its start's. The detail-energy term (the local
            mean of |high-pass|) asks for as much fine detail as x4plus has, wherever it is
            placed. Alone, that term is paid most cheaply by a blocky 4 px grid (the pixel
            shuffle draws each 4x4 cell from one LR pixel's channels), so a third term asks the
            steps across cell borders to be no steeper than x4plus's there. The weights were
            chosen by measurement (docs/experiments.md).

The stage is resumable (its state every --save-every steps) and ends in grm.done.safetensors,
which `prepare` then runs as the GRM: the rest of the model is fitted to the compact GRM."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

TEACHER = "rrdb"


def data_path(work: str, name: str) -> str:
    return os.path.join(work, "grm_data", f"{Path(name).stem}.safetensors")


@torch.no_grad()
def teacher_crops(teacher, path: Path, crop: int, count: int, seed: int, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """`count` seeded HR crops of one photo, degraded (even crops: training family, odd:
    classical), and the teacher's x4 output of each: uint8 lr (n, 3, c/4, c/4), sr (n, 3, c, c)."""
    from jobs.train_data import load_rgb, name_key
    from patchscaler.degrade import classical_degrade, degrade
    img = load_rgb(path)
    H, W = img.shape[-2:]
    key = name_key(path.name)
    rng = np.random.default_rng([seed, key, 17])
    g = torch.Generator().manual_seed(seed * 1_000_033 + key)
    c = min(crop, H, W) // 16 * 16
    ys, xs = rng.integers(0, H - c + 1, count), rng.integers(0, W - c + 1, count)
    lr = torch.cat([(degrade if i % 2 == 0 else classical_degrade)(img[None, :, y:y + c, x:x + c], g)
                    for i, (y, x) in enumerate(zip(ys, xs))])
    sr = torch.cat([teacher(lr[i:i + 8].to(dtype).contiguous(memory_format=torch.channels_last)).float()
                    for i in range(0, len(lr), 8)])
    u8 = lambda x: (x.clamp(0, 1) * 255).round().to(torch.uint8).contiguous()  # noqa: E731
    return {"lr": u8(lr), "sr": u8(sr)}


def make_teacher_data(images: list[tuple[Path, int]], work: str, crop: int, seed: int,
                      bf16: bool = False, progress: bool = True) -> None:
    """The teacher's outputs for every (image, number of crops), one file per image (resumable).
    bf16: run x4plus in bf16 (3x faster on a CPU with AMX; 53 dB from its fp32 output, far below
    what the student can reproduce)."""
    from tqdm import tqdm
    from patchscaler.realesrgan import load_backbone
    os.makedirs(os.path.join(work, "grm_data"), exist_ok=True)
    pending = [(p, n) for p, n in images if not os.path.exists(data_path(work, p.name))]
    if not pending:
        return
    dtype = torch.bfloat16 if bf16 else torch.float32
    teacher = load_backbone(TEACHER).to(dtype).to(memory_format=torch.channels_last)
    for p, count in tqdm(pending, desc="grm: x4plus on the crops", disable=not progress):
        t = teacher_crops(teacher, p, crop, count, seed, dtype)
        tmp = data_path(work, p.name) + ".part"
        save_file(t, tmp)
        os.replace(tmp, data_path(work, p.name))


class TeacherPairs:
    """Every cached (LR, x4plus output) crop at least `patch` LR px wide, in memory, uint8, each
    at its own size. Crops of small images (a texture under 4 * patch px) are left out rather
    than cutting every crop down to theirs: a patch narrower than the student's receptive field
    (33 LR px) trains it on its zero padding."""

    def __init__(self, work: str, images: list[Path], patch: int):
        shards = [load_file(data_path(work, p.name)) for p in images]
        self.skipped = [p.name for p, t in zip(images, shards) if t["lr"].shape[-1] < patch]
        self.lr = [x for t in shards if t["lr"].shape[-1] >= patch for x in t["lr"]]
        self.sr = [x for t in shards if t["lr"].shape[-1] >= patch for x in t["sr"]]
        if not self.lr:
            raise ValueError(f"grm: no cached crop is {patch} LR px wide (--grm-patch)")

    def __len__(self) -> int:
        return len(self.lr)

    def batch(self, rng: np.random.Generator, n: int, size: int):
        """n random crops of `size` LR px with a random flip/rotation: float (lr, sr)."""
        lrs, srs = [], []
        for i in rng.integers(0, len(self), n):
            a, b = self.lr[i], self.sr[i]
            y, x = rng.integers(0, a.shape[-2] - size + 1), rng.integers(0, a.shape[-1] - size + 1)
            r, f = int(rng.integers(0, 4)), rng.integers(0, 2)
            a = torch.rot90(a[:, y:y + size, x:x + size], r, (1, 2))
            b = torch.rot90(b[:, 4 * y:4 * (y + size), 4 * x:4 * (x + size)], r, (1, 2))
            lrs.append(a.flip(2) if f else a)
            srs.append(b.flip(2) if f else b)
        return torch.stack(lrs).float() / 255, torch.stack(srs).float() / 255


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    k = int(2 * round(3 * sigma) + 1)
    r = torch.arange(k, dtype=x.dtype, device=x.device) - k // 2
    w = torch.exp(-0.5 * (r / sigma) ** 2)
    w = w / w.sum()
    c = x.shape[1]
    b = F.pad(x, (k // 2,) * 4, mode="reflect")
    b = F.conv2d(b, w.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(b, w.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


def high_pass(x: torch.Tensor, sigma: float = 1.5) -> torch.Tensor:
    """x minus its Gaussian blur: the detail band where x4plus's look lives."""
    return x - blur(x, sigma)


def detail_energy(x: torch.Tensor, sigma: float = 4.0) -> torch.Tensor:
    """How much fine detail there is around each pixel (the local mean of |high-pass|), whatever
    its exact phase: x4plus invents texture the student cannot place pixel for pixel, and a
    pointwise loss then prefers no texture at all; this term asks for as much of it."""
    return blur(high_pass(x).abs(), sigma)


def cell_edges(x: torch.Tensor, pool: int = 3) -> torch.Tensor:
    """How much steeper x is across the borders of the pixel shuffle's 4x4 cells than inside
    them, locally averaged over pool x pool cells (across columns and across rows): a compact
    GRM draws each cell from one LR pixel's channels, and unchecked the detail-energy term pays it
    for a blocky 4 px grid (measured: blockiness at 4 px 1.5, x4plus's 1.0)."""
    def excess(steps):                   # |steps| across the last axis, (b, c, h, w - 1); h, w multiples of 4
        s = F.pad(steps, (0, 1))                          # (b, c, h, w): the last column steps nowhere
        b, c, h, w = s.shape
        s = s.view(b, c, h, w // 4, 4)
        e = s[..., 3] - s[..., :3].mean(-1)               # the step across a cell border minus those inside
        return e.view(b, c, h // 4, 4, w // 4).mean(3)    # one value per cell
    dx = (x[..., 1:] - x[..., :-1]).abs()
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().transpose(-1, -2)
    e = torch.cat([excess(dx), excess(dy).transpose(-1, -2)], 1)
    return F.avg_pool2d(e, pool, 1, pool // 2, count_include_pad=False)


def distil_loss(out: torch.Tensor, target: torch.Tensor, hf_weight: float, energy_weight: float = 0.0,
                mosaic_weight: float = 0.0, perceptual=None, perceptual_weight: float = 0.0) -> torch.Tensor:
    loss = (out - target).abs().mean()
    if perceptual_weight:
        # VGG16 features of the student's output against x4plus's: detail in the right place,
        # which the energy terms (an amount of detail, anywhere) could not ask for
        loss = loss + perceptual_weight * perceptual(out.clamp(0, 1), target)
    if hf_weight:
        loss = loss + hf_weight * (high_pass(out) - high_pass(target)).abs().mean()
    if energy_weight:
        # per RGB channel; on luma alone (measured) the student met it with a fine cross-hatch grain
        loss = loss + energy_weight * (detail_energy(out) - detail_energy(target)).abs().mean()
    if mosaic_weight:
        loss = loss + mosaic_weight * (cell_edges(out) - cell_edges(target)).abs().mean()
    return loss


def student_from_animevideov3(convs: int):
    """SRVGGNetCompact with `convs` body convs, computing exactly what realesr-animevideov3-x4
    computes: its 16 convs, then (for a deeper student) identity convs with PReLU slope 1,
    so training starts from a working x4 model whatever the depth."""
    from patchscaler.realesrgan import SRVGGNetCompact, load_backbone
    base = load_backbone("srvgg")
    if convs == 16:
        return base
    if convs < 16:
        raise ValueError(f"grm.compact_convs {convs}: a student starts from animevideov3's 16 convs, so at least 16")
    net = SRVGGNetCompact(num_conv=convs)
    with torch.no_grad():
        head = len(base.body) - 1                     # every layer but the last conv
        for i in range(head):
            net.body[i].load_state_dict(base.body[i].state_dict())
        for i in range(head, len(net.body) - 1):
            m = net.body[i]
            if isinstance(m, torch.nn.Conv2d):
                m.weight.zero_()
                m.bias.zero_()
                m.weight[:, :, 1, 1] = torch.eye(m.weight.shape[0])
            else:
                m.weight.fill_(1.0)
        net.body[-1].load_state_dict(base.body[-1].state_dict())
    return net.eval()


def stage_grm(a, d) -> dict:
    """Distil the compact GRM (see the module's docstring); skipped for another backbone."""
    import json
    from patchscaler.model import native_bf16
    from .work import finish, log, model_config, photos, textures, train_loop, work_path
    cfg = model_config(a)
    if cfg.grm.backbone != "compact":
        log.info("grm: the model's GRM is %s, nothing to distil", cfg.grm.backbone)
        Path(work_path(a, "grm.done.json")).write_text(json.dumps({"backbone": cfg.grm.backbone}))
        return {}
    # textures are small (512 px): fewer crops, or they would repeat the same pixels
    counted = [(p, a.grm_crops_per_image) for p in photos(a)[0]] + [(p, a.grm_texture_crops) for p in textures(a)[0]]
    images = [p for p, _ in counted]
    if d.main:
        make_teacher_data(counted, a.work, a.grm_crop * 4, a.seed, bf16=native_bf16(a.device), progress=a.progress)
    d.barrier()
    data = TeacherPairs(a.work, images, a.grm_patch)
    if data.skipped:
        log.info("grm: %d small images have no %d px crop and are left out: %s", len(data.skipped), a.grm_patch,
                 ", ".join(data.skipped))
    student = student_from_animevideov3(cfg.grm.compact_convs)
    if a.grm_init:   # continue from an earlier student (a grm.done or grm.state file) instead
        from jobs.trainstate import load_state
        load_state(a.grm_init, {"student": student}, None)
    student = student.to(a.device).to(memory_format=torch.channels_last)
    student.train()
    net = d.wrap(student)
    size = a.grm_patch
    bf16 = native_bf16(a.device)
    perceptual = None
    if a.grm_perceptual:
        from jobs.perceptual import VGGFeatureLoss
        perceptual = VGGFeatureLoss().to(a.device)

    def step_fn(step):
        rng = np.random.default_rng([a.seed, 7, step])
        lr, sr = data.batch(rng, a.grm_batch, size)
        lr = d.shard(lr).to(a.device).contiguous(memory_format=torch.channels_last)
        sr = d.shard(sr).to(a.device)
        with torch.autocast(torch.device(a.device).type, dtype=torch.bfloat16, enabled=bf16):
            out = net(lr)
        return distil_loss(out.float(), sr, a.grm_hf_weight, a.grm_energy_weight, a.grm_mosaic_weight,
                           perceptual, a.grm_perceptual), {}

    settings = {"convs": cfg.grm.compact_convs, "hf_weight": a.grm_hf_weight, "energy_weight": a.grm_energy_weight,
                "mosaic_weight": a.grm_mosaic_weight, "patch": size, "perceptual": a.grm_perceptual,
                "init": os.path.basename(a.grm_init) if a.grm_init else "animevideov3"}
    done = train_loop(a, d, "grm", {"student": student}, list(student.parameters()), a.grm_steps, a.grm_lr, step_fn,
                      minutes=a.grm_minutes, settings=settings)
    # the steps run (--grm-minutes may end the stage early) and of how many the LR schedule was
    result = dict(settings, images=len(images), crops=len(data), steps=done, of_steps=a.grm_steps, teacher_bf16=bf16)
    finish(a, d, "grm", student.eval(), "student", result)
    return result
