"""Patch-DiT and the similarity-aware texture encoder (paper Sec. 3.4, appendix A.2).

Patch-DiT is DiT (Peebles & Xie) with the paper's changes:
  1. the input is the noisy latent y_t concatenated with the coarse HR patch y0;
  2. every block has a cross-attention layer to the texture-prompt tokens (after self-attention,
     before the MLP, as in PixArt), its output projection zero-initialised, and scaled per
     dimension by (1 + a linear map of the time embedding), also zero-initialised;
  3. no class embedding and no learned covariance (the output has C channels).
The similarity-aware texture encoder is a half-depth copy of the DiT trunk that embeds each
retrieved texture prior with its similarity s_k in place of the timestep. It does not depend
on t, so it runs once per patch, not once per step."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import DiTConfig
from .diffusion import timestep_embedding


def modulate(x, shift, scale):
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def sincos_pos_embed(dim: int, gh: int, gw: int) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding, (gh*gw, dim)."""
    ys, xs = torch.meshgrid(torch.arange(gh, dtype=torch.float32), torch.arange(gw, dtype=torch.float32), indexing="ij")
    half = dim // 2
    return torch.cat([timestep_embedding(ys.flatten(), half, 10000.0),
                      timestep_embedding(xs.flatten(), dim - half, 10000.0)], -1)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, cross: bool = False):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.cross = cross

    def keys_values(self, ctx: torch.Tensor) -> torch.Tensor:
        """(B, M, D) context -> (2, B, heads, M, D / heads) keys and values."""
        B, M, D = ctx.shape
        return self.kv(ctx).view(B, M, 2, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)

    def forward(self, x, context=None, kv=None):
        """Self-attention, or cross-attention to `context`; `kv`: its keys_values(), given when
        the same context is attended to many times (the texture prompt, at every step)."""
        B, N, D = x.shape
        q = self.q(x).view(B, N, self.heads, D // self.heads).transpose(1, 2)
        k, v = kv if kv is not None else self.keys_values(x if context is None else context)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(B, N, D))


class Mlp(nn.Module):
    def __init__(self, dim: int, ratio: float):
        super().__init__()
        h = int(dim * ratio)
        self.fc1, self.fc2 = nn.Linear(dim, h), nn.Linear(h, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class DiTBlock(nn.Module):
    """adaLN-Zero block; with `cross`, a time-scaled, zero-initialised cross-attention."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, cross: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, mlp_ratio)
        self.adaLN = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        nn.init.zeros_(self.adaLN[-1].weight)
        nn.init.zeros_(self.adaLN[-1].bias)
        self.cross = cross
        if cross:
            self.norm_x = nn.LayerNorm(dim, eps=1e-6)
            self.cross_attn = Attention(dim, heads, cross=True)
            nn.init.zeros_(self.cross_attn.proj.weight)
            nn.init.zeros_(self.cross_attn.proj.bias)
            self.cross_scale = nn.Linear(dim, dim)  # dimension-wise scaling from the time embedding
            nn.init.zeros_(self.cross_scale.weight)
            nn.init.zeros_(self.cross_scale.bias)

    def forward(self, x, c, context=None):
        """context: texture tokens (B, M, D), or their precomputed cross-attention keys and
        values (a tensor of shape (2, B, heads, M, D / heads)) from `TexturePrompt`."""
        sh1, sc1, g1, sh2, sc2, g2 = self.adaLN(c).chunk(6, -1)
        x = x + g1.unsqueeze(1) * self.attn(modulate(self.norm1(x), sh1, sc1))
        if self.cross and context is not None:
            kv = context if context.dim() == 5 else None
            x = x + (1 + self.cross_scale(c)).unsqueeze(1) * self.cross_attn(self.norm_x(x), context, kv)
        return x + g2.unsqueeze(1) * self.mlp(modulate(self.norm2(x), sh2, sc2))


class Embedder(nn.Module):
    """Scalar (timestep or similarity) -> sinusoid -> MLP."""

    def __init__(self, dim: int, freq_dim: int = 256, scale: float = 1.0):
        super().__init__()
        self.freq_dim, self.scale = freq_dim, scale
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t):
        return self.mlp(timestep_embedding(t * self.scale, self.freq_dim))


class PatchEmbed(nn.Module):
    def __init__(self, cin: int, dim: int, patch: int):
        super().__init__()
        self.proj = nn.Conv2d(cin, dim, patch, patch)
        self.dim = dim

    def forward(self, x):
        h = self.proj(x)
        gh, gw = h.shape[-2:]
        pos = sincos_pos_embed(self.dim, gh, gw).to(h.dtype).to(h.device)
        return h.flatten(2).transpose(1, 2) + pos, (gh, gw)


class TextureEncoder(nn.Module):
    """Encodes K texture priors (B, K, C, V, V) with similarities (B, K) into tokens (B, K*L, D)."""

    def __init__(self, channels: int, cfg: DiTConfig):
        super().__init__()
        self.embed = PatchEmbed(channels, cfg.hidden, cfg.patch)
        self.sim_embed = Embedder(cfg.hidden, scale=1000.0)  # s in [-1, 1] spread like timesteps
        self.blocks = nn.ModuleList([DiTBlock(cfg.hidden, cfg.heads, cfg.mlp_ratio, cross=False)
                                     for _ in range(cfg.encoder_depth)])
        self.norm = nn.LayerNorm(cfg.hidden, eps=1e-6)

    def forward(self, priors: torch.Tensor, sims: torch.Tensor) -> torch.Tensor:
        B, K = priors.shape[:2]
        h, _ = self.embed(priors.flatten(0, 1))
        c = self.sim_embed(sims.flatten())
        for blk in self.blocks:
            h = blk(h, c)
        return self.norm(h).reshape(B, K * h.shape[1], -1)


class PatchDiT(nn.Module):
    def __init__(self, channels: int, cfg: DiTConfig):
        super().__init__()
        self.channels, self.patch = channels, cfg.patch
        self.embed = PatchEmbed(2 * channels, cfg.hidden, cfg.patch)
        self.t_embed = Embedder(cfg.hidden)
        self.blocks = nn.ModuleList([DiTBlock(cfg.hidden, cfg.heads, cfg.mlp_ratio, cross=True)
                                     for _ in range(cfg.depth)])
        self.norm_out = nn.LayerNorm(cfg.hidden, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Sequential(nn.SiLU(), nn.Linear(cfg.hidden, 2 * cfg.hidden))
        self.out = nn.Linear(cfg.hidden, cfg.patch * cfg.patch * channels)
        for m in (self.ada_out[-1], self.out):  # adaLN-Zero: the untrained net outputs 0
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)
        self.texture_encoder = TextureEncoder(channels, cfg)
        self._init_texture_encoder_from_trunk()

    def _init_texture_encoder_from_trunk(self):
        """The paper copies the first half of the DiT into the encoder."""
        for enc_blk, blk in zip(self.texture_encoder.blocks, self.blocks):
            enc_blk.load_state_dict({k: v for k, v in blk.state_dict().items()
                                     if not k.startswith(("cross_attn", "cross_scale", "norm_x"))})

    def encode_texture(self, priors: torch.Tensor, sims: torch.Tensor) -> torch.Tensor:
        return self.texture_encoder(priors, sims)

    def texture_prompt(self, tokens: torch.Tensor | None) -> list | None:
        """Each block's cross-attention keys and values of the texture tokens. They do not
        depend on t, so the sampler computes them once per patch instead of at every step
        (the same numbers as passing the tokens)."""
        if tokens is None:
            return None
        return [blk.cross_attn.keys_values(tokens) for blk in self.blocks]

    def forward(self, x_t, t, y0, texture_tokens=None):
        """texture_tokens: (B, M, D) tokens, or the list `texture_prompt` made of them."""
        h, (gh, gw) = self.embed(torch.cat([x_t, y0], 1))
        c = self.t_embed(t.float())
        per_block = texture_tokens if isinstance(texture_tokens, list) else [texture_tokens] * len(self.blocks)
        for blk, ctx in zip(self.blocks, per_block):
            h = blk(h, c, ctx)
        shift, scale = self.ada_out(c).chunk(2, -1)
        h = self.out(modulate(self.norm_out(h), shift, scale))
        p, C = self.patch, self.channels
        h = h.view(-1, gh, gw, p, p, C).permute(0, 5, 1, 3, 2, 4)
        return h.reshape(-1, C, gh * p, gw * p)
