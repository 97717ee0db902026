"""PatchScaler: the parts of the method put together (paper Fig. 2).

    LR --GRM--> coarse latent y_HR + confidence C --PGS--> grouped patches y0
       --texture prompt (T, RTM, texture encoder)--> Patch-DiT from each group's tau, N steps
       --stitch, decode, wavelet colour fix--> HR

The model knows nothing of images on disk or of Ray; `upscale.py` drives it per image and
`pipeline/` per archive, through the same stage functions."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .codec import make_codec
from .colorfix import wavelet_color_fix
from .fusion import fuse
from .config import PatchScalerConfig
from .diffusion import Diffusion
from .dit import PatchDiT
from .grm import make_grm
from .rtm import RTM
from .texture import TextureExtractor


def native_bf16(device: str) -> bool:
    """Whether `device` computes bf16 in hardware: a CUDA card with bf16, or a CPU with
    AVX512-BF16 or AMX. Elsewhere bf16 is emulated: on an AVX2 CPU a bf16 GRM measured 14x
    slower than fp32 (bench/precision.py), so "auto" keeps fp32 there."""
    dev = torch.device(device).type
    try:
        if dev == "cuda":
            return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        if dev == "cpu":
            return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):  # private probes: an older/newer torch may lack them
        return False  # unknown: fp32, which is always right
    return False


class NoCUDA(RuntimeError):
    """A stage was given GPUs but this process's torch sees no CUDA device."""


def resolve_device(requested: str | None = "auto", gpus: float | None = None,
                   cuda_available: bool | None = None) -> str:
    """The device a stage computes on, the one rule for every caller (the in-process engine,
    each Ray stage, `patchscaler plan`, bench/gpu.py).

    requested: "auto" (or None) or an explicit torch device (--device). gpus: what the stage
    reserved from Ray (None: not a Ray stage, the in-process engine). cuda_available: what
    torch sees (None: ask torch; tests pass it to check the rule where no CUDA exists).

    In-process: auto -> cuda if torch sees it, else cpu; an explicit device as given.
    A Ray stage that reserved GPUs: auto -> cuda (Ray makes its GPUs the visible ones); an
    explicit device overrides (e.g. cpu, to run GPU-reserving stages on the CPU). A Ray stage
    without GPUs runs on the CPU whatever was asked: Ray hides the GPUs from it.
    A cuda result where torch sees no CUDA raises NoCUDA (one line: the run stops at start)."""
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    auto = requested in (None, "", "auto")
    if gpus is None:
        device = ("cuda" if cuda_available else "cpu") if auto else requested
    elif gpus > 0:
        device = "cuda" if auto else requested
    else:
        device = "cpu"
    if torch.device(device).type == "cuda" and not cuda_available:
        why = f"it reserved {gpus:g} GPU(s)" if gpus else f"--device {requested}"
        raise NoCUDA(f"{why} but torch {torch.__version__} here sees no CUDA device: install a CUDA build "
                     "(scripts/install.sh gpu) or run without GPUs")
    return device


PRECISIONS = ("fp32", "bf16-dit", "bf16")   # Runtime.precision's values besides "auto"
MAX_BATCH = 64                              # patches per Patch-DiT call, by default


@dataclass
class Runtime:
    """How to run, not what to run: never saved in a checkpoint."""
    device: str = "cpu"
    # "bf16": autocast everywhere; "bf16-dit": the Patch-DiT and texture parts in bf16, the GRM
    # in fp32 (a bf16 Real-ESRGAN moved NIQE by +1.3 % on its own, +2.1 % for the whole
    # method: more than the 1 % noise we allow; bench/precision.py, docs/experiments.md). "auto": bf16-dit
    # where the device computes bf16 natively (native_bf16), else fp32; $PATCHSCALER_PRECISION
    # overrides "auto".
    precision: str = "auto"   # "auto" or one of PRECISIONS
    max_batch: int = MAX_BATCH   # patches per Patch-DiT call
    # torch.compile the Patch-DiT with this backend ("" = not compiled; "inductor": 0.87x the
    # Patch-DiT time on a 2-core CPU, bench/compile.py, after a one-time compile of 2-5 min per
    # process; needs a C++ compiler). Dynamic shapes: patch batches and the second token grid vary in size.
    compile: str = ""

    def __post_init__(self):
        if self.precision == "auto":
            self.precision = os.environ.get("PATCHSCALER_PRECISION") or (
                "bf16-dit" if native_bf16(self.device) else "fp32")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be auto, {', '.join(PRECISIONS)}, not {self.precision!r}")

    def autocast(self, component: str = "dit"):
        """bf16 autocast for `component` ("grm" or "dit") if the precision says so."""
        if self.precision == "fp32" or (self.precision == "bf16-dit" and component == "grm"):
            return contextlib.nullcontext()
        dev = torch.device(self.device).type
        return torch.autocast(dev, dtype=torch.bfloat16)


class PatchScaler(nn.Module):
    def __init__(self, cfg: PatchScalerConfig, rtm: RTM | None = None, grm: nn.Module | None = None):
        super().__init__()
        self.cfg = cfg
        C = cfg.latent_channels
        self.codec = make_codec(cfg.codec)
        self.grm = grm if grm is not None else make_grm(C, cfg.grm)
        self.texture = TextureExtractor(C, cfg.texture)
        self.dit = PatchDiT(C, cfg.dit)
        self.diffusion = Diffusion(cfg.diffusion)
        self.rtm = rtm
        self.runtime = Runtime()

    def configure(self, runtime: Runtime) -> "PatchScaler":
        self.runtime = runtime
        self.to(runtime.device).eval()
        self.grm.to(memory_format=torch.channels_last)  # measured 15% faster convs on CPU
        # kept outside the module tree, so state_dict, saving and the version see the plain DiT
        self.__dict__["_dit_call"] = (torch.compile(self.dit, dynamic=True, backend=runtime.compile)
                                      if runtime.compile else None)
        return self

    @property
    def dit_call(self):
        """The Patch-DiT as the sampler calls it: compiled if the runtime says so."""
        compiled = self.__dict__.get("_dit_call")
        return self.dit if compiled is None else compiled

    @property
    def device(self) -> torch.device:
        return torch.device(self.runtime.device)

    # --- stage 1: GRM -------------------------------------------------------------------
    @torch.no_grad()
    def restore(self, lr: torch.Tensor, origin: tuple[int, int] = (0, 0),
                on_tile=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, 3, h, w) LR in [0, 1] -> coarse latent (C, H', W'), confidence (H', W').
        `origin`: where `lr` lies in its whole image (a piece's crop), so the GRM tiles it as
        it tiles the whole image; `on_tile(done, total)` after each GRM tile."""
        lr = lr.to(self.device)
        lr = lr.contiguous(memory_format=torch.channels_last)
        with self.runtime.autocast("grm"):
            y, c = self.grm(lr, self.codec, origin=origin, on_tile=on_tile)
        return y[0].float().cpu().contiguous(), c[0, 0].float().cpu().contiguous()

    # --- stage 2: Patch-DiT ---------------------------------------------------------------
    @torch.no_grad()
    def texture_prompt(self, y0: torch.Tensor) -> torch.Tensor | None:
        """Retrieve top-K texture priors for each patch and encode them once (not per step)."""
        if self.rtm is None:
            return None
        with self.runtime.autocast():
            query = self.texture(y0).float()
        priors, sims = self.rtm.retrieve(query.cpu(), self.cfg.texture.top_k)
        with self.runtime.autocast():
            return self.dit.encode_texture(priors.to(y0.device), sims.to(y0.device))

    @torch.no_grad()
    def refine(self, y0: torch.Tensor, group: int, noise: torch.Tensor) -> torch.Tensor:
        """Refine a batch of coarse patches of one group from its shortcut point."""
        p = self.cfg.pgs
        y0, noise = y0.to(self.device).float(), noise.to(self.device).float()
        tokens = self.texture_prompt(y0)
        with self.runtime.autocast():
            tokens = self.dit.texture_prompt(tokens)   # cross-attention keys/values, once per patch

        def denoise(x, t):
            with self.runtime.autocast():
                return self.dit_call(x, t, y0, tokens)

        def denoise_two_grids(x, t):
            # the second grid covers the patch minus a half-token border: one token per side
            # fewer (49 instead of 64 tokens for V = 16), and the border pixels keep the first
            # grid's output; they lie in the overlap where the stitch weights are smallest
            s, k = self.dit.patch // 2, self.dit.patch   # half a token, in latent pixels
            out = denoise(x, t)
            inner = (..., slice(s, x.shape[-2] - (k - s)), slice(s, x.shape[-1] - (k - s)))
            with self.runtime.autocast():
                shifted = self.dit_call(x[inner], t, y0[inner], tokens)
            out = out.clone()
            out[inner] = (out[inner] + shifted.to(out.dtype)) / 2
            return out

        last = denoise_two_grids if p.seam_shift and self.dit.patch > 1 else None
        out = self.diffusion.sample(denoise, y0, p.taus[group], p.steps[group], noise, last_denoise=last)
        return out.float().cpu()

    # --- stage 3: stitch ------------------------------------------------------------------
    @torch.no_grad()
    def finish(self, coarse: torch.Tensor, refined: torch.Tensor, lr: torch.Tensor,
               stats: dict | None = None, fusion=None) -> torch.Tensor:
        """The coarse and the refined latent (C, H', W', patches already blended: flow.py) of
        one region, and the region's LR input -> the output (1, 3, H, W) in [0, 1], fused with
        the LR (fusion.py). refined == coarse gives the GRM's result with the colour fix.
        `fusion`: other settings than the config's (the evaluation's comparisons)."""
        decode = lambda z: self.codec.decode(z[None].float().to(self.device)).float().cpu()  # noqa: E731
        if self.cfg.codec.kind == "pixel_unshuffle":
            return fuse(decode(coarse), decode(refined), lr, fusion or self.cfg.fusion, stats)
        # a learned codec's latent is not pixels: the refined image with the plain colour fix
        with self.runtime.autocast():
            img = decode(refined)
        up = F.interpolate(lr, size=img.shape[-2:], mode="bicubic", align_corners=False).clamp(0, 1)
        return wavelet_color_fix(img, up, clip_radius=self.cfg.fusion.clip_radius).clamp(0, 1)


def patch_noise(seed: int, indices: list[int], shape: tuple[int, ...]) -> torch.Tensor:
    """Starting noise of each patch from (seed, patch index) alone, so that results do not
    depend on batching, on which actor runs a patch, or on the order patches arrive in."""
    g = torch.Generator()
    out = []
    for i in indices:
        g.manual_seed((int(seed) * 1_000_003 + int(i)) % (2 ** 63))
        out.append(torch.randn(shape, generator=g))
    return torch.stack(out) if out else torch.empty(0, *shape)
