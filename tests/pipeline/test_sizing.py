"""Pool sizes from measured work: the split follows the work per image, and on a skewed archive
(most patches hard) it beats an even split of the same workers."""
import pytest
import torch
from helpers import encode, photo

from patchscaler import PatchScaler, Runtime, flow, imageio, tiny_config
from patchscaler.config import override
from patchscaler.rtm import RTM
from pipeline import sizing

pytestmark = pytest.mark.fast


def test_split_follows_the_work_and_staffs_every_pool():
    work = {"grm": 1.0, "hard": 6.0, "easy": 3.0, "stitch": 0.1}
    sizes = sizing.split(work, 13)
    assert sum(sizes.values()) == 13 and min(sizes.values()) >= 1
    assert sizes["hard"] > sizes["easy"] > sizes["grm"]
    assert sizing.split(work, 3) == {"grm": 1, "hard": 1, "easy": 1}
    with pytest.raises(ValueError, match="at least one each"):
        sizing.split(work, 2)
    # the slowest pool sets the pace
    assert sizing.images_per_hour(work, {"grm": 1, "hard": 2, "easy": 1}) == pytest.approx(3600 / 3.0)


def test_measured_split_beats_an_even_one_on_a_skewed_archive():
    torch.manual_seed(0)
    model = PatchScaler(tiny_config())
    model.rtm = RTM(torch.randn(16, model.cfg.texture.feature_dim), torch.randn(16, model.cfg.latent_channels, 8, 8))
    model.configure(Runtime(precision="fp32", max_batch=8))
    preps = [imageio.decode(encode(photo(48, 40, seed=s))) for s in range(2)]
    # a skewed archive: thresholds at the Qmap's 90th and 80th percentiles leave ~80 % hard
    q = torch.cat([flow.begin(model, p).coarse.qmap for p in preps])
    model.cfg = override(model.cfg, pgs={"thresholds": (float(q.quantile(0.9)), float(q.quantile(0.8)))})
    profile = sizing.measure(model, preps)
    assert profile.images == 2 and sum(profile.patches) == pytest.approx(len(q) / 2)
    assert profile.patches[2] > profile.patches[0] + profile.patches[1]
    pools = flow.pools(model.cfg, {model.cfg.pgs.num_groups - 1})
    work = profile.pool_work(pools)
    assert work["hard"] > work["easy"] > 0 and work["grm"] > 0
    auto = sizing.split(work, 6)
    assert auto["hard"] > auto["easy"]
    assert sizing.images_per_hour(work, auto) > sizing.images_per_hour(work, {"grm": 2, "hard": 2, "easy": 2})
    text = sizing.pool_split_text(profile, pools, 6)
    assert "measured split" in text and "even split" in text and "images/hour" in text
