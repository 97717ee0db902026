"""Noise schedule, forward process and the shortcut sampler of PGS (paper Sec. 3.3).

Timestep convention (tested in tests/method/test_diffusion.py):
  * Timesteps are 0-indexed, t in {0, ..., T-1}; alphas_cumprod[t] is abar_t.
  * A group's shortcut point tau counts steps, 1 <= tau <= T. Sampling a group (tau, N) starts
    from y_tau = sqrt(abar[tau-1]) * y0 + sqrt(1 - abar[tau-1]) * eps  (paper Eq. 4 at t = tau)
    and visits the N "trailing" timesteps  tau-1, tau-1-s, ..., tau-1-(N-1)s  with stride
    s = tau / N, then returns the x0 estimate of the last step.
  * With the shipped model's groups (100/2, 200/4, 300/6), as with the paper's (400/8, 700/14,
    1000/20), the stride is 50 for all of them, so the grids nest: every group visits a suffix
    of {999, 949, ..., 49}. tau = T with N = 20 is plain uniform (trailing) DDIM sampling.
  * The sampler is deterministic DDIM (eta = 0). Latents are never clamped.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .config import DiffusionConfig


def make_betas(cfg: DiffusionConfig) -> torch.Tensor:
    T = cfg.num_timesteps
    if cfg.beta_schedule == "linear":
        return torch.linspace(cfg.beta_start, cfg.beta_end, T, dtype=torch.float64)
    if cfg.beta_schedule == "scaled_linear":
        return torch.linspace(cfg.beta_start ** 0.5, cfg.beta_end ** 0.5, T, dtype=torch.float64) ** 2
    raise ValueError(f"unknown beta schedule {cfg.beta_schedule!r}")


def shortcut_timesteps(tau: int, steps: int, num_timesteps: int = 1000) -> list[int]:
    """The 0-indexed timesteps a group (tau, N) visits, in order."""
    if not 1 <= tau <= num_timesteps:
        raise ValueError(f"tau must be in [1, {num_timesteps}], got {tau}")
    if not 1 <= steps <= tau:
        raise ValueError(f"steps must be in [1, tau], got {steps}")
    stride = tau / steps
    return [int(round(tau - 1 - i * stride)) for i in range(steps)]


class Diffusion(nn.Module):
    """Owns the schedule buffers (float64 for accuracy, cast per call)."""

    def __init__(self, cfg: DiffusionConfig):
        super().__init__()
        self.cfg = cfg
        betas = make_betas(cfg)
        self.register_buffer("alphas_cumprod", torch.cumprod(1 - betas, 0), persistent=False)

    @property
    def num_timesteps(self) -> int:
        return self.cfg.num_timesteps

    def abar(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """abar_t for integer t (B,), shaped to broadcast against `like`; t = -1 means abar = 1."""
        a = torch.where(t >= 0, self.alphas_cumprod[t.clamp_min(0)], torch.ones_like(self.alphas_cumprod[:1]))
        return a.to(like.dtype).view(-1, *([1] * (like.dim() - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        a = self.abar(t, x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    # --- parametrisations -------------------------------------------------------------
    def target(self, x0, noise, t, y0):
        """What the network is trained to output."""
        p, a = self.cfg.prediction, self.abar(t, x0)
        if p == "eps":
            return noise
        if p == "x0":
            return x0
        if p == "x0_residual":
            return x0 - y0
        if p == "v":
            return a.sqrt() * noise - (1 - a).sqrt() * x0
        raise ValueError(f"unknown prediction {p!r}")

    def to_x0_eps(self, out, x_t, t, y0):
        """Network output -> (x0 estimate, eps estimate)."""
        p, a = self.cfg.prediction, self.abar(t, x_t)
        sa, s1a = a.sqrt(), (1 - a).sqrt()
        if p == "eps":
            eps = out
            x0 = (x_t - s1a * eps) / sa
        elif p in ("x0", "x0_residual"):
            x0 = out + y0 if p == "x0_residual" else out
            eps = (x_t - sa * x0) / s1a
        elif p == "v":
            x0 = sa * x_t - s1a * out
            eps = s1a * x_t + sa * out
        else:
            raise ValueError(f"unknown prediction {p!r}")
        return x0, eps

    # --- the shortcut sampler -----------------------------------------------------------
    def ddim_step(self, x0: torch.Tensor, eps: torch.Tensor, t_next: torch.Tensor) -> torch.Tensor:
        """Deterministic DDIM (eta = 0): the latent at t_next (B,) from the x0 and eps estimates."""
        a = self.abar(t_next, x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * eps


    @torch.no_grad()
    def sample(self, denoise, y0: torch.Tensor, tau: int, steps: int, noise: torch.Tensor,
               last_denoise=None) -> torch.Tensor:
        """Deterministic DDIM from the shortcut point tau in `steps` steps.

        denoise(x_t, t) -> network output, for a batch; last_denoise: the same for the last step
        only, if given (its x0 estimate is the result); y0: coarse patches (B, C, V, V);
        noise: the starting Gaussian noise (B, C, V, V), drawn by the caller per patch so that
        results do not depend on how patches are batched."""
        ts = shortcut_timesteps(tau, steps, self.num_timesteps)
        path = torch.tensor([ts] * y0.shape[0], dtype=torch.long, device=y0.device)
        last = None if last_denoise is None else (lambda x, t, rows: last_denoise(x, t))
        _, x0 = self.ddim(lambda x, t, rows: denoise(x, t), y0, path, noise, last_denoise=last)
        return x0

    @torch.no_grad()
    def ddim(self, denoise, y0: torch.Tensor, path: torch.Tensor, noise: torch.Tensor,
             steps: torch.Tensor | None = None, last_denoise=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The DDIM loop (eta = 0) along each patch's own path: row b of `path` (B, L) holds the
        timesteps patch b visits, in order (pad a shorter path with -1 past its end). Patch b
        starts at y_{path[b, 0]}, built from y0 and noise (Eq. 4), and takes steps[b] steps
        (default: all L; never more than its path's length).

        denoise(x_t, t, rows) -> network output for the patches selected by the bool mask `rows`
        (B,) (x_t and t are already those patches'); last_denoise: the same for the step at the
        path's last column, if given. Returns (x, x0): each patch's latent after its steps (the
        input its next step would see; after the path's last step, the input of that step) and
        the x0 estimate of its last step (y0 if it took none)."""
        B, L = path.shape
        steps = torch.full((B,), L, device=path.device) if steps is None else steps
        x = self.q_sample(y0, path[:, 0], noise)
        x0 = y0
        for k in range(int(steps.max()) if B else 0):
            rows = steps > k
            fn = last_denoise if last_denoise is not None and k + 1 == L else denoise
            if bool(rows.all()):  # the whole batch: no copies
                t = path[:, k]
                x0, eps = self.to_x0_eps(fn(x, t, rows).to(x.dtype), x, t, y0)
                if k + 1 < L:
                    x = self.ddim_step(x0, eps, path[:, k + 1])
                continue
            t = path[rows, k]
            x0_k, eps = self.to_x0_eps(fn(x[rows], t, rows).to(x.dtype), x[rows], t, y0[rows])
            x0 = x0.clone()
            x0[rows] = x0_k
            if k + 1 < L:
                x[rows] = self.ddim_step(x0_k, eps, path[rows, k + 1])
        return x, x0


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) positions t (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], -1)
    return torch.nn.functional.pad(emb, (0, dim % 2))
