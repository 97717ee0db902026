"""The training package's parts, without a training run: the shortcut stage's on-policy inputs
are the sampler's own, training retrieval never returns the patch's own photo, the shortcut
paths are checked; retune changes settings, not weights."""
import pytest
import torch


def test_on_policy_input_is_what_the_sampler_feeds_the_network():
    from jobs.train.shortcut import on_policy_input
    from patchscaler import PatchScaler, tiny_config
    from patchscaler.diffusion import shortcut_timesteps
    torch.manual_seed(0)
    model = PatchScaler(tiny_config()).eval()
    for p in model.dit.out.parameters():  # a DiT that says something
        p.data.normal_(0, 0.05)
    dit, diffusion = model.dit, model.diffusion
    C, V, K = model.cfg.latent_channels, model.cfg.pgs.patch_size, model.cfg.texture.top_k
    y0, noise = torch.randn(2, C, V, V), torch.randn(2, C, V, V)
    priors, sims = torch.randn(2, K, C, V, V), torch.rand(2, K)
    tokens = dit.encode_texture(priors, sims)
    seen = []
    diffusion.sample(lambda x, t: (seen.append(x.clone()), dit(x, t, y0, tokens))[1], y0, 400, 8, noise)
    path = torch.tensor([shortcut_timesteps(400, 8) + [-1] * 12] * 2)
    x = on_policy_input(diffusion, dit, y0, torch.tensor([3, 6]), path, priors, sims, noise)
    assert torch.allclose(x[0], seen[3][0], atol=1e-5) and torch.allclose(x[1], seen[6][1], atol=1e-5)


def test_rtm_retrieval_can_exclude_entries_per_query():
    from patchscaler.rtm import RTM
    keys = torch.eye(4)
    rtm = RTM(keys, torch.arange(4.0).view(4, 1, 1, 1))
    q = torch.tensor([[1.0, 0.5, 0.2, 0], [0, 0.2, 1.0, 0.5]])
    assert rtm.search(q, 2)[1].tolist() == [[0, 1], [2, 3]]
    exclude = torch.tensor([[True, False, False, False], [False, False, True, True]])
    assert rtm.search(q, 2, exclude=exclude)[1].tolist() == [[1, 2], [1, 0]]
    priors, _ = rtm.retrieve(q, 1, exclude=exclude)
    assert priors.flatten().tolist() == [1.0, 1.0]

def test_shortcut_paths_are_parsed_and_checked():
    from jobs.train.shortcut import training_pgs
    from patchscaler import PatchScaler, tiny_config
    model = PatchScaler(tiny_config())
    T = model.diffusion.num_timesteps
    assert training_pgs(model.cfg.pgs, T, "") is model.cfg.pgs
    p = training_pgs(model.cfg.pgs, T, "100/2,400/8,1000/20")
    assert p.taus == (100, 400, 1000) and p.steps == (2, 8, 20) and p.thresholds == model.cfg.pgs.thresholds
    assert model.cfg.pgs.taus == (100, 200, 300)  # the model's own settings are not changed
    for bad, says in [("100/2,400/8", "3 groups, got 2"), ("100-2,400/8,1000/20", "TAU/STEPS per group"),
                      ("100/2,400/8/1,1000/20", "TAU/STEPS per group"), ("", None),
                      ("100/2,400/8,2000/20", "each TAU in 1..1000"), ("100/200,400/8,1000/20", "each STEPS")]:
        if says is None:   # empty: the model's own
            assert training_pgs(model.cfg.pgs, T, bad) is model.cfg.pgs
            continue
        try:
            training_pgs(model.cfg.pgs, T, bad)
        except ValueError as e:
            assert says in str(e), (bad, e)
        else:
            raise AssertionError(f"{bad} accepted")


def test_retune_changes_settings_and_the_version_not_the_weights(checkpoint, tmp_path):
    import json
    import torch
    from jobs.train.retune import parse, retune
    from patchscaler.checkpoint import checkpoint_info, load
    out = str(tmp_path / "tuned.safetensors")
    version = retune(checkpoint, out, parse(["fusion.colorfix_levels=7", "pgs.steps=1,2,3"]))
    a, b = load(checkpoint), load(out)
    assert b.cfg.fusion.colorfix_levels == 7 and b.cfg.pgs.steps == (1, 2, 3) and version == b.cfg.version
    assert version != a.cfg.version
    assert all(torch.allclose(x.float(), y.float(), atol=1e-3) for x, y in zip(a.dit.parameters(), b.dit.parameters()))
    record = checkpoint_info(out)["extra"]["training"]
    assert record["retuned"] == [{"from": a.cfg.version, "changes": {"fusion": {"colorfix_levels": 7}, "pgs": {"steps": [1, 2, 3]}}}]
    assert json.loads((tmp_path / "tuned.training.json").read_text()) == record
    with pytest.raises(SystemExit, match="SECTION.FIELD=VALUE"):
        parse(["dit.hidden=64"])   # weights' shapes are not a setting
