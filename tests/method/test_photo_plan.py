"""The photo plan (patchscaler/photo.py): the pools' order, declared once, and the one
assembler, which puts a photo's pieces together the same way whichever engine hands them in."""
import numpy as np
import pytest
import torch
from helpers import encode, photo

from patchscaler import Runtime, config, flow, imageio, pieces
from patchscaler import photo as plan
from patchscaler.checkpoint import load

pytestmark = pytest.mark.fast


@pytest.fixture(scope="module")
def model(checkpoint):
    return load(checkpoint).configure(Runtime(precision="fp32", max_batch=8))


def test_pools_come_hard_first_and_hold_every_group_once(model):
    cfg = model.cfg
    names = [name for name, _ in flow.pools(cfg)]
    assert names == ["hard", "easy"]
    groups = [g for _, gs in flow.pools(cfg) for g in gs]
    assert sorted(groups) == list(range(cfg.pgs.num_groups))
    assert flow.pools(cfg)[0][1] == set(cfg.pgs.hard_groups)
    # another hard set: the same two pools, its groups first
    assert flow.pools(cfg, {0}) == [("hard", {0}), ("easy", set(range(1, cfg.pgs.num_groups)))]
    five = config.override(cfg, pgs={"thresholds": (0.9, 0.7, 0.5, 0.3), "taus": (100, 200, 300, 400, 500),
                                     "steps": (1, 2, 3, 4, 5), "hard_groups": (4,)})
    assert flow.pools(five) == [("hard", {4}), ("easy", {0, 1, 2, 3})]


def test_a_piece_goes_through_the_pools_in_their_order(model):
    prep = imageio.decode(encode(photo(48, 40, seed=1)))
    steps, seen = [], []
    state, image = plan.run_piece(model, prep, None, 0, on_step=lambda step, st: steps.append(step),
                                  on_batch=lambda g, n: seen.append(g))
    assert steps == ["grm", "hard", "easy", "finish"]
    hard = set(model.cfg.pgs.hard_groups)
    first_easy = next(i for i, g in enumerate(seen) if g not in hard)
    assert all(g in hard for g in seen[:first_easy]) and all(g not in hard for g in seen[first_easy:])
    assert bool(state.refined.all()) and image.size == (48 * 4, 40 * 4)


def test_the_assembler_gives_the_same_photo_whatever_order_its_pieces_come_in(model):
    """The Ray engine's stitcher of a photo's last piece fills the Photo from scratch in piece
    order; the in-process engine as it finishes each piece: the same output and counts."""
    prep = imageio.decode(encode(photo(72, 24, seed=2)))
    made = plan.run_image(model, prep, 3, piece_size=32)
    assert made.pieces > 2
    w, h = prep.size
    parts = pieces.split(h, w, model.cfg, 32, 4.0)
    done = []
    for part in parts:
        state, out = plan.run_piece(model, flow.crop(prep, part.crop), part, 3)
        done.append((part, out, plan.PieceDone.of(state, model.cfg.pgs.num_groups)))
    again = plan.Photo(plan.Header.of(prep), model.cfg.grm.scale, model.cfg.pgs.num_groups)
    for part, out, d in reversed(done):
        again.add(part, out, d)
    assert np.array_equal(np.asarray(again.image), np.asarray(made.image))
    assert again.group_counts == made.group_counts and again.pieces == made.pieces
    assert sum(made.group_counts) == sum(len(g[0]) for g in made.groups)
    assert torch.equal(torch.cat([g for g in reversed(again.groups)], 1), torch.cat(made.groups, 1))
