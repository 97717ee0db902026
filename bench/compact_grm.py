"""GRM candidates side by side: Real-ESRGAN x4plus (the teacher), realesr-animevideov3-x4 as
shipped (the compact GRM's starting point), and distilled students, on held-out photos of both
degradation families. The GRMs alone: no confidence head, no Patch-DiT, no colour fix. Each photo
runs every candidate in turn (interleaved); model loads excluded.

    OMP_WAIT_POLICY=PASSIVE python bench/compact_grm.py --data DATA [--n 12] [--lr-size 96] [--threads 2]
        [--student NAME=WORK/grm.done.safetensors[:CONVS]] ... [--checkpoint NAME=CKPT] ...

Columns: seconds per photo and the ratio to x4plus (fp32, channels_last, the same threads),
PSNR-Y against the HR photo, PSNR-Y against x4plus's own output (how well it is reproduced),
sharpness (mean |gradient of Y| / the HR's: x4plus's crisp look is ~0.8, a smooth result lower),
blockiness at a 4 px grid (the pixel-shuffle mosaic of a compact GRM) and at 32 px (the input's
8 px JPEG blocks, upscaled): about 1.0 when there is none."""
import argparse

import harness

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--data", required=True, help="data folder with train/ (its held-out split is used)")
ap.add_argument("--n", type=int, default=12)
ap.add_argument("--lr-size", type=int, default=96)
ap.add_argument("--student", action="append", default=[], metavar="NAME=STATE[:CONVS]",
                help="a grm stage's result (WORK/grm.done.safetensors or a state file), 16 convs unless given")
ap.add_argument("--checkpoint", action="append", default=[], metavar="NAME=CKPT",
                help="the GRM of an assembled checkpoint")
ap.add_argument("--no-anime", action="store_true", help="leave out animevideov3 as shipped")
harness.add_args(ap, threads=2)
a = ap.parse_args()
torch = harness.start(a)

import time  # noqa: E402

import numpy as np  # noqa: E402

from jobs.evaluate import _u8  # noqa: E402
from jobs.metrics import blockiness, mean_gradient, psnr_y  # noqa: E402
from jobs.trainstate import load_state  # noqa: E402
from patchscaler.realesrgan import SRVGGNetCompact, load_backbone  # noqa: E402

nets = {"x4plus": load_backbone("rrdb")}
if not a.no_anime:
    nets["animevideov3 as shipped"] = load_backbone("srvgg")
for spec in a.student:
    name, path = spec.split("=", 1)
    path, _, convs = path.partition(":")
    net = SRVGGNetCompact(num_conv=int(convs or 16))
    load_state(path, {"student": net}, None)
    nets[name] = net
for spec in a.checkpoint:
    from patchscaler.upscale import build_default, resolve_checkpoint
    name, path = spec.split("=", 1)
    nets[name] = build_default(resolve_checkpoint(path), components=("grm",)).grm.backbone
nets = {k: v.eval().float().to(memory_format=torch.channels_last) for k, v in nets.items()}
names = list(nets)

held = harness.held_out(a.data, a.n)
rows = []
for family in ("training", "classical"):
    for k, path in enumerate(held):
        prep, hr8 = harness.held_out_pair(path, a.lr_size, family)
        lr = prep.rgb.contiguous(memory_format=torch.channels_last)
        outs, secs = {}, {}
        for name in names[k % len(names):] + names[:k % len(names)]:
            t = time.perf_counter()
            with torch.no_grad():
                outs[name] = _u8(nets[name](lr).clamp(0, 1))
            secs[name] = time.perf_counter() - t
        for name in names:
            rows.append({"family": family, "name": name, "s": secs[name], "psnr": psnr_y(outs[name], hr8),
                         "psnr_teacher": psnr_y(outs[name], outs["x4plus"]) if name != "x4plus" else float("nan"),
                         "sharp": mean_gradient(outs[name]) / max(mean_gradient(hr8), 1e-9),
                         "block4": blockiness(outs[name], 4), "block32": blockiness(outs[name], 32)})

print(f"\n# {len(held)} held-out photos per family, {a.lr_size} -> {4 * a.lr_size} px, fp32, channels_last")
print("| GRM | family | s / photo | x x4plus | PSNR-Y vs HR | PSNR-Y vs x4plus | sharpness | blockiness 4 | blockiness 32 |")
print("|---|---|---|---|---|---|---|---|---|")
for name in names:
    for family in ("training", "classical"):
        rs = [r for r in rows if r["name"] == name and r["family"] == family]
        base = sum(r["s"] for r in rows if r["name"] == "x4plus" and r["family"] == family)
        s = sum(r["s"] for r in rs)
        pt = np.mean([r["psnr_teacher"] for r in rs])
        print(f"| {name} | {family} | {s / len(rs):.3f} | {s / base:.3f}x | {np.mean([r['psnr'] for r in rs]):.2f} | "
              f"{'-' if np.isnan(pt) else f'{pt:.2f}'} | {np.mean([r['sharp'] for r in rs]):.3f} | "
              f"{np.mean([r['block4'] for r in rs]):.3f} | {np.mean([r['block32'] for r in rs]):.3f} |")
