"""Memory and state size against a photo's size: the in-process engine's peak RSS, the Ray
actors' peak RSS and the bytes handed between stages, for inputs 256 to 4096 px wide (4:3).

    python bench/big_photos.py                      # stand-in model, 256 / 1024 / 2048 / 4096 px
    python bench/big_photos.py --model shipped --widths 1024
    python bench/big_photos.py --ray --widths 1024  # also the Ray engine: 1 then 2 actors per pool
    python bench/big_photos.py --sixteen tif --widths 4000   # a 12 MP 16-bit RGB scan (TIFF or png)

Each size runs in a fresh process (peak RSS is a process's lifetime maximum). The stand-in model
(`--model standin`, the default) has the shipped model's geometry (pixel-unshuffle latent of
48 channels, 16 px patches, the Real-ESRGAN GRM class with its tiling, the same fusion) but a
bicubic backbone and a one-block Patch-DiT with one step per group, so a 4096 px photo takes
minutes, not hours: memory comes from the latent and the output sizes, not from the network's
weights (the shipped networks add their weights, ~0.1 GiB, and activations bounded by the GRM
tile and the Patch-DiT batch). The output in 8 bits (what a stage holding it must hold) is
printed beside each peak (in 16 bits with --sixteen: the input is then a 16-bit RGB TIFF or PNG,
read and written with all 16 bits).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402


def standin_checkpoint(path: str) -> str:
    import torch

    from patchscaler import PatchScaler
    from patchscaler.checkpoint import save
    from patchscaler.config import PatchScalerConfig, override
    from patchscaler.rtm import RTM
    torch.manual_seed(0)
    cfg = override(PatchScalerConfig(), dit={"hidden": 32, "depth": 1, "heads": 1, "encoder_depth": 0},
                   texture={"feature_dim": 16, "hidden": 8}, pgs={"steps": (1, 1, 1)}, grm={"backbone": "bicubic"},
                   version="bench-standin")
    m = PatchScaler(cfg)
    m.rtm = RTM(torch.randn(64, 16), torch.randn(64, 48, 16, 16))
    for p in m.grm.conf_head.parameters():
        p.data.normal_(0, 0.3)
    save(m, path, half=False)
    return path


def one(a) -> dict:
    """One size in this process: the local engine on one synthetic photo; peak RSS and state bytes."""
    import pickle
    import resource

    import numpy as np
    from PIL import Image

    from patchscaler import flow, imageio
    from patchscaler.upscale import build_default
    from pipeline.local import run_local
    from pipeline.options import UpscaleOptions
    w, h = a.one, a.one * 3 // 4
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    img = Image.fromarray(base).resize((w, h), Image.Resampling.BICUBIC)
    tmp = tempfile.mkdtemp(prefix="bigphoto")
    os.makedirs(f"{tmp}/in")
    name = "photo.png"
    if a.sixteen:   # 16 bits: the 8-bit picture times 257 plus noise in the low byte
        deep = np.asarray(img).astype(np.uint16) * 257 + rng.integers(0, 256, (h, w, 3), dtype=np.uint16)
        name = f"photo.{a.sixteen}"
        if a.sixteen == "tif":
            import tifffile
            tifffile.imwrite(f"{tmp}/in/{name}", deep, photometric="rgb")
        else:
            import imagecodecs
            open(f"{tmp}/in/{name}", "wb").write(imagecodecs.png_encode(deep))
        del deep
    else:
        img.save(f"{tmp}/in/{name}")
    del img
    ckpt = a.checkpoint
    opts = dict(checkpoint=ckpt, precision="fp32", report=False, piece_size=a.piece_size)
    if a.state_bytes:   # bytes handed between stages, piece by piece (not timed)
        model = build_default(ckpt).configure(__import__("patchscaler").Runtime(precision="fp32"))
        prep = imageio.decode(open(f"{tmp}/in/{name}", "rb").read())
        from patchscaler import pieces
        sizes = [0, 0, 0]
        for part in pieces.split(h, w, model.cfg, a.piece_size):
            st = flow.begin(model, prep if part.whole else flow.crop(prep, part.crop), part)
            sizes[0] += len(pickle.dumps(st, protocol=5))
            flow.refine(model, st, 0, {2})
            sizes[1] += len(pickle.dumps(st, protocol=5))
            flow.refine(model, st, 0, {0, 1})
            sizes[2] += len(pickle.dumps(st, protocol=5))
        return {"width": w, "height": h, "state_bytes_per_px": [s / (w * h) for s in sizes]}
    t = time.perf_counter()
    s = run_local(UpscaleOptions(f"{tmp}/in", f"{tmp}/out", **opts))
    dt = time.perf_counter() - t
    assert s["ok"] == 1, s["errors"]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    return {"width": w, "height": h, "peak_gib": peak, "output_gib": 16 * w * h * 3 * (2 if a.sixteen else 1) / 2 ** 30,
            "seconds": dt,
            "pieces": s["rows"][0]["pieces"]}


def ray_run(a) -> dict:
    """The Ray engine on one photo, 2 actors per pool: each stage's actors' peak RSS (from the trace)."""
    import numpy as np
    from PIL import Image

    import ray
    from pipeline.graph import run_pipeline
    from pipeline.options import UpscaleOptions
    w, h = a.one, a.one * 3 // 4
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)).resize((w, h))
    tmp = tempfile.mkdtemp(prefix="bigphoto")
    os.makedirs(f"{tmp}/in")
    img.save(f"{tmp}/in/photo.png")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    t = time.perf_counter()
    n = a.actors
    s = run_pipeline(UpscaleOptions(f"{tmp}/in", f"{tmp}/out", checkpoint=a.checkpoint or None, precision="fp32",
                                    report=False, piece_size=a.piece_size, grm_actors=n, hard_actors=n,
                                    easy_actors=n, stitch_actors=1, actor_cpus=0.2))
    dt = time.perf_counter() - t
    import resource
    driver = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    peaks = s.get("actor_peaks", {})
    return {"width": w, "height": h, "ray_seconds": dt, "driver_gib": driver, "actor_peak_gib": peaks,
            "pieces": s["rows"][0]["pieces"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    harness.add_args(ap, threads=2)
    ap.add_argument("--widths", default="256,1024,2048,4096")
    ap.add_argument("--model", choices=["standin", "shipped"], default="standin")
    ap.add_argument("--piece-size", type=int, help="default: patchscaler.pieces.DEFAULT_PIECE")
    ap.add_argument("--sixteen", choices=["tif", "png"], help="the input a 16-bit RGB TIFF or PNG (an archive scan)")
    ap.add_argument("--ray", action="store_true",
                    help="instead: one photo through the Ray engine with 1 and with 2 actors per pool")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--checkpoint", help=argparse.SUPPRESS)
    ap.add_argument("--state-bytes", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--ray-one", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--actors", type=int, default=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if "torch" not in sys.modules:
        harness.start(a)
    from patchscaler.pieces import DEFAULT_PIECE
    a.piece_size = a.piece_size or DEFAULT_PIECE
    if a.one:
        print("RESULT " + json.dumps(ray_run(a) if a.ray_one else one(a)))
        return
    ckpt = ""
    if a.model == "standin":
        ckpt = standin_checkpoint(os.path.join(tempfile.mkdtemp(), "standin.safetensors"))
    print(f"# model: {a.model}; pieces of {a.piece_size} px; each size in a fresh process")

    def child(w, *extra):
        cmd = [sys.executable, __file__, "--one", str(w), "--piece-size", str(a.piece_size), "--threads",
               str(a.threads), "--wait-policy", a.wait_policy, *(["--checkpoint", ckpt] if ckpt else []),
               *(["--sixteen", a.sixteen] if a.sixteen else []), *extra]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=harness.ROOT)
        line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
        if not line:
            raise SystemExit(out.stdout[-2000:] + out.stderr[-3000:])
        return json.loads(line[0][7:])

    if a.ray:   # one photo through the Ray engine, 1 and 2 actors per pool, interleaved
        for w in (int(x) for x in a.widths.split(",")):
            secs = {1: [], 2: []}
            for _ in range(a.repeats):
                for n in (1, 2):
                    rr = child(w, "--ray-one", "--actors", str(n))
                    secs[n].append(rr["ray_seconds"])
                    print(f"{rr['width']}x{rr['height']}, {rr['pieces']} pieces, {n} actor(s) per pool: "
                          f"{rr['ray_seconds']:.0f} s; driver {rr['driver_gib']:.2f} GiB; actors' peak RSS (GiB): "
                          + ", ".join(f"{k} {v:.2f}" for k, v in rr["actor_peak_gib"].items()), flush=True)
            print(f"{w} px: 2 actors per pool / 1 = {harness.med(secs[2]) / harness.med(secs[1]):.2f} "
                  f"(median of {a.repeats})", flush=True)
        return
    print(f"{'input':>11} {'pieces':>6} {'peak RSS':>9} {'output u16' if a.sixteen else 'output u8':>9} {'peak - output':>13} {'seconds':>8}  "
          "state B/px (GRM->hard, hard->easy, easy->stitch; v0.6.1: ~690)")
    for w in (int(x) for x in a.widths.split(",")):
        r = child(w)
        sb = [] if a.sixteen else child(w, "--state-bytes")["state_bytes_per_px"]
        print(f"{r['width']:>5}x{r['height']:<5} {r['pieces']:>6} {r['peak_gib']:>7.2f} G {r['output_gib']:>7.2f} G "
              f"{r['peak_gib'] - r['output_gib']:>11.2f} G {r['seconds']:>8.0f}  " + " / ".join(f"{x:.0f}" for x in sb),
              flush=True)


if __name__ == "__main__":
    main()
