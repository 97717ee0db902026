import pytest
import torch

from patchscaler.config import DiffusionConfig
from patchscaler.diffusion import Diffusion, shortcut_timesteps

pytestmark = pytest.mark.fast


def test_paper_groups_visit_nested_trailing_grids():
    assert shortcut_timesteps(1000, 20) == list(range(999, 0, -50))       # plain uniform sampling
    assert shortcut_timesteps(700, 14) == list(range(699, 0, -50))
    assert shortcut_timesteps(400, 8) == [399, 349, 299, 249, 199, 149, 99, 49]
    full = set(shortcut_timesteps(1000, 20))
    assert set(shortcut_timesteps(400, 8)) <= full and set(shortcut_timesteps(700, 14)) <= full


def test_bad_tau_and_steps_rejected():
    with pytest.raises(ValueError):
        shortcut_timesteps(0, 1)
    with pytest.raises(ValueError):
        shortcut_timesteps(10, 20)


@pytest.mark.parametrize("pred", ["eps", "x0", "v", "x0_residual"])
def test_parametrisations_round_trip(pred):
    d = Diffusion(DiffusionConfig(prediction=pred))
    x0, y0, noise = torch.randn(3, 4, 8, 8).unbind(0)
    x0, y0, noise = x0[None], y0[None], noise[None]
    t = torch.tensor([437])
    xt = d.q_sample(x0, t, noise)
    x0_hat, eps_hat = d.to_x0_eps(d.target(x0, noise, t, y0), xt, t, y0)
    assert torch.allclose(x0_hat, x0, atol=1e-4) and torch.allclose(eps_hat, noise, atol=1e-4)


def test_oracle_denoiser_recovers_x0_from_any_shortcut():
    """A network that knows x0 must return it exactly, whatever (tau, N): the sampler's
    algebra (start point, DDIM steps, last x0 estimate) is right."""
    d = Diffusion(DiffusionConfig(prediction="eps"))
    x0 = torch.randn(2, 4, 8, 8)
    y0 = x0 + 0.1 * torch.randn_like(x0)
    for tau, n in [(400, 8), (700, 14), (1000, 20), (1000, 1)]:
        def denoise(x, t):
            a = d.abar(t, x)
            return (x - a.sqrt() * x0) / (1 - a).sqrt()
        out = d.sample(denoise, y0, tau, n, torch.randn_like(x0))
        assert torch.allclose(out, x0, atol=1e-4)


def test_sampler_calls_the_network_at_the_documented_timesteps():
    d = Diffusion(DiffusionConfig(prediction="x0"))
    seen = []
    y0 = torch.zeros(1, 4, 8, 8)
    d.sample(lambda x, t: (seen.append(int(t[0])), torch.zeros_like(x))[1], y0, 400, 8, torch.randn_like(y0))
    assert seen == shortcut_timesteps(400, 8)


def test_start_point_is_q_of_y0_at_tau():
    d = Diffusion(DiffusionConfig(prediction="x0"))
    y0, noise = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    first = []
    d.sample(lambda x, t: (first.append(x.clone()), torch.zeros_like(x))[1], y0, 700, 14, noise)
    a = d.alphas_cumprod[699].float()
    assert torch.allclose(first[0], a.sqrt() * y0 + (1 - a).sqrt() * noise, atol=1e-6)


def test_no_clamping_in_latent_space():
    d = Diffusion(DiffusionConfig(prediction="x0"))
    y0 = torch.full((1, 4, 8, 8), 5.0)
    out = d.sample(lambda x, t: torch.full_like(x, 7.0), y0, 400, 8, torch.randn_like(y0))
    assert torch.allclose(out, torch.full_like(out, 7.0))


def test_last_denoise_replaces_only_the_last_step():
    """seam_shift's two-grid call: used once, at the last timestep, and its x0 is the result."""
    d = Diffusion(DiffusionConfig(prediction="x0_residual"))
    y0, noise = torch.zeros(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    calls = []

    def denoise(x, t):
        calls.append(("plain", int(t[0])))
        return torch.zeros_like(x)

    def last(x, t):
        calls.append(("last", int(t[0])))
        return torch.full_like(x, 0.25)

    out = d.sample(denoise, y0, 400, 8, noise, last_denoise=last)
    assert calls == [("plain", t) for t in shortcut_timesteps(400, 8)[:-1]] + [("last", 49)]
    assert torch.allclose(out, torch.full_like(out, 0.25))


def test_seam_shift_averages_two_token_grids_on_the_interior():
    """The last step of PatchScaler.refine: border pixels keep the first grid's output, the
    interior is the mean of the two grids; with seam_shift off only one grid runs."""
    from patchscaler.config import override, tiny_config
    from patchscaler.model import PatchScaler
    torch.manual_seed(0)
    model = PatchScaler(tiny_config()).eval()
    for p in model.dit.out.parameters():  # a DiT that says something
        p.data.normal_(0, 0.05)
    V, C = model.cfg.pgs.patch_size, model.cfg.latent_channels
    y0, noise = torch.rand(3, C, V, V) * 2 - 1, torch.randn(3, C, V, V)
    on = model.refine(y0, 0, noise)
    model.cfg = override(model.cfg, pgs={"seam_shift": False})
    off = model.refine(y0, 0, noise)
    assert torch.equal(on[..., 0, :], off[..., 0, :]) and torch.equal(on[..., :, -1], off[..., :, -1])
    assert not torch.allclose(on[..., 1:-1, 1:-1], off[..., 1:-1, 1:-1])


def _net(d: Diffusion):
    """A deterministic stand-in network that depends on x, t and the patch: (x, t, rows) -> out."""
    w = torch.linspace(-1, 1, 4).view(1, 4, 1, 1)
    return lambda x, t, rows: torch.tanh(x * w + t.view(-1, 1, 1, 1) / 1000)


def test_ddim_stops_each_patch_where_the_sampler_would_be():
    """ddim(steps=j) gives, per patch, the input the full run's network sees at step j, and
    patches with different paths and step counts in one batch get what they get alone."""
    d = Diffusion(DiffusionConfig(prediction="x0_residual"))
    net = _net(d)
    y0, noise = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    full, short = shortcut_timesteps(1000, 20), shortcut_timesteps(400, 8)
    path = torch.tensor([full, short + [-1] * 12, full])
    seen = []
    d.ddim(lambda x, t, rows: (seen.append(x.clone()), net(x, t, rows))[1], y0[:1], path[:1], noise[:1])
    for j in (0, 1, 7, 19):
        x, _ = d.ddim(net, y0[:1], path[:1], noise[:1], steps=torch.tensor([j]))
        assert torch.equal(x, seen[j]), j
    steps = torch.tensor([5, 7, 0])
    x, x0 = d.ddim(net, y0, path, noise, steps=steps)
    for b in range(3):
        alone, alone_x0 = d.ddim(net, y0[b:b + 1], path[b:b + 1], noise[b:b + 1], steps=steps[b:b + 1])
        assert torch.equal(x[b:b + 1], alone) and torch.equal(x0[b:b + 1], alone_x0), b
    assert torch.equal(x[2:], d.q_sample(y0[2:], path[2:, 0], noise[2:])) and torch.equal(x0[2], y0[2])


def test_sample_equals_the_written_out_ddim_loop():
    """sample() (run through the shared per-patch loop) gives bit for bit what the plain DDIM
    loop over one group's timesteps gives: upscaled pixels do not move."""
    d = Diffusion(DiffusionConfig(prediction="x0_residual"))
    net = _net(d)
    y0, noise = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    ts = shortcut_timesteps(400, 8)
    x = d.q_sample(y0, torch.full((2,), ts[0]), noise)
    for i, t in enumerate(ts):
        tt = torch.full((2,), t)
        x0, eps = d.to_x0_eps(net(x, tt, None), x, tt, y0)
        if i + 1 < len(ts):
            x = d.ddim_step(x0, eps, torch.full((2,), ts[i + 1]))
    assert torch.equal(d.sample(lambda x, t: net(x, t, None), y0, 400, 8, noise), x0)
