import pytest
import torch

from patchscaler import pgs

pytestmark = pytest.mark.fast


def _whole_image_state(z: torch.Tensor, grid):
    """A whole image's state as flow.begin leaves it: every patch of the grid, nothing refined."""
    from patchscaler import flow
    n = len(grid)
    coarse = flow.Coarse(grid, (0, 0), grid.pad(z).half(), torch.arange(n),
                         torch.tensor(grid.positions, dtype=torch.long).reshape(-1, 2), torch.zeros(n),
                         torch.zeros(n, dtype=torch.long), torch.ones(n, dtype=torch.bool))
    return flow.InFlight(None, None, (0, 0, 0, 0), coarse)


@pytest.mark.parametrize("hw", [(37, 53), (16, 16), (5, 3), (1, 1), (16, 40)])
def test_identity_model_reproduces_input(hw):
    # the blend the method runs (flow's refined detail, then flow.latents): patches refined to
    # themselves give back the coarse latent, and a change shared by every patch comes through
    # whole at every pixel (the weights sum to one)
    from patchscaler import flow
    z = torch.randn(12, *hw)
    grid = pgs.make_grid(*hw, 16, 4)
    for change in (0.0, 0.25):
        state = _whole_image_state(z, grid)
        detail = flow._Detail(state)
        for i in range(len(grid)):
            detail.add(i, torch.full((12, 16, 16), change))
        detail.close()
        coarse, out = flow.latents(state)
        assert out.shape == z.shape and out.dtype == torch.float32
        assert torch.allclose(coarse, z.half().float())
        assert torch.allclose(out, coarse + change, atol=1e-6 if change == 0 else 2 / flow.DETAIL_SCALE)


def test_grid_covers_every_pixel_with_overlap():
    grid = pgs.make_grid(37, 53, 16, 4)
    cover = torch.zeros(37, 53)
    for y, x in grid.positions:
        cover[y:y + 16, x:x + 16] += 1
    assert (cover >= 1).all() and (cover >= 2).any()


@pytest.mark.parametrize("patch,overlap", [(16, 4), (8, 2), (16, 1)])
def test_blend_weights_symmetric_positive_and_partition_of_unity(patch, overlap):
    w = pgs.blend_weights(patch, overlap)
    assert torch.equal(w, w.T) and torch.equal(w, w.flip(0)) and (w > 0).all()
    # the 1-D profile (a middle row): neighbours at stride V - o sum to one over their overlap
    one = w[patch // 2]
    assert one.max() == 1
    s = one[patch - overlap:] + one[:overlap]
    assert torch.allclose(s, torch.ones(overlap), atol=1e-6), s
    # 2-D: on a grid of whole strides the raw weights already sum to one at every pixel away
    # from the image border, so the blend's normalisation (flow.latents) changes only the border and the last,
    # edge-aligned patches
    side = patch + 3 * (patch - overlap)
    grid = pgs.make_grid(side, side, patch, overlap)
    assert len(grid) == 16
    total = torch.zeros(side, side)
    for y, x in grid.positions:
        total[y:y + patch, x:x + patch] += w
    inner = total[overlap:side - overlap, overlap:side - overlap]
    assert torch.allclose(inner, torch.ones_like(inner), atol=1e-6), (inner.min(), inner.max())


def test_qmap_is_patch_mean_and_groups_follow_thresholds():
    conf = torch.zeros(32, 32)
    conf[:16, :16] = 0.99   # simple
    conf[:16, 16:] = 0.80   # medium
    grid = pgs.make_grid(32, 32, 16, 0)
    q = pgs.qmap(conf, grid)
    assert torch.allclose(q, torch.tensor([0.99, 0.80, 0.0, 0.0]))
    assert pgs.assign_groups(q, (0.95, 0.75)).tolist() == [0, 1, 2, 2]
    # boundaries as in paper Eq. 5: (g1, 1] simple, (g2, g1] medium, [0, g2] hard
    assert pgs.assign_groups(torch.tensor([0.95, 0.75, 0.951]), (0.95, 0.75)).tolist() == [1, 2, 0]
    # any number of groups
    assert pgs.assign_groups(torch.tensor([0.9, 0.7, 0.5, 0.1]), (0.8, 0.6, 0.4)).tolist() == [0, 1, 2, 3]


def test_pgs_config_validates_group_lists():
    from patchscaler.config import PGSConfig
    with pytest.raises(ValueError):
        PGSConfig(thresholds=(0.9,), taus=(400, 700, 1000), steps=(8, 14, 20))
    with pytest.raises(ValueError):
        PGSConfig(thresholds=(0.5, 0.9), taus=(1, 2, 3), steps=(1, 1, 1))
