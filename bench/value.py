"""Value per cost: Real-ESRGAN x4plus alone (the fixed baseline: fp32, channels_last), the compact
GRM alone, and the whole method on each GRM, on held-out photos, both degradation families, one
run, interleaved per photo (each photo runs every variant, in an order that rotates photo by
photo). Model loads are excluded: each variant's model is loaded once before the first photo.

    OMP_WAIT_POLICY=PASSIVE python bench/value.py --data DATA [--n 24] [--lr-size 128] [--threads 2]
        [--checkpoint CKPT] [--x4plus-checkpoint CKPT] [--variant NAME=CKPT[@TAUS/STEPS|@SECTION.FIELD=V;...]]
        [--no-compact] [--x4plus-bf16]

DATA holds train/ (the held-out split of `patchscaler train`, 1 in 5 by file-name hash, is used:
photos no model here was trained on). Each photo: an HR centre crop of 4 x --lr-size px, made LR
by the family's seeded degradation (`patchscaler evaluate`'s), upscaled x4 by every variant.
Columns: seconds per photo and its ratio to x4plus alone (sums over photos), PSNR-Y, LPIPS-Alex and
LPIPS-VGG (lower is better; scripts/install.sh eval fetches their weights), sharpness
(mean |gradient of Y| / the HR's), NIQE (lower is better; not on MATLAB's scale), blockiness at
8 px (neighbour differences across 8 px borders / elsewhere, ~1.0 = none), the share of 32 px
tiles more than 4 dB below x4plus alone's local PSNR-Y, and the worst tile's difference (dB)."""
import argparse

import harness

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--data", required=True, help="data folder with train/ (the held-out split is used)")
ap.add_argument("--n", type=int, default=24, help="held-out photos (fewer if the split has fewer)")
ap.add_argument("--lr-size", type=int, default=128)
ap.add_argument("--families", default="training,classical")
ap.add_argument("--checkpoint", default="compact", help="the method on the compact GRM (default: the shipped "
                "model compact)")
ap.add_argument("--x4plus-checkpoint", default="default", help="the method on x4plus (default: the shipped default "
                "model; an earlier version's file compares versions)")
ap.add_argument("--variant", action="append", default=[], metavar="NAME=CKPT[@TAUS/STEPS|@SECTION.FIELD=V;...]",
                help="another variant of the method, e.g. fast=ckpt.safetensors@100,200,500/2,4,10 or "
                     "sharp=default@fusion.detail_sigma=1.0")
ap.add_argument("--x4plus-bf16", action="store_true", help="add x4plus alone in bf16 (where the CPU computes it natively)")
ap.add_argument("--no-compact", action="store_true", help="leave out the compact GRM and the method on it")
ap.add_argument("--out", help="folder for a side-by-side PNG per family (the first photos) and rows.json")
harness.add_args(ap, threads=2)
ap.set_defaults(repeats=1)
a = ap.parse_args()
torch = harness.start(a)

import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from jobs.evaluate import _u8  # noqa: E402
from jobs.metrics import blockiness, grid_peak, mean_gradient, niqe, psnr_y, tile_drop  # noqa: E402
from jobs.perceptual import lpips  # noqa: E402
from patchscaler.config import override  # noqa: E402
from patchscaler.model import Runtime  # noqa: E402
from patchscaler.realesrgan import load_backbone  # noqa: E402
from patchscaler.upscale import build_default, resolve_checkpoint, upscale_prepared  # noqa: E402


def method(ckpt, sampling=None):
    m = build_default(resolve_checkpoint(ckpt))
    runtime = {}
    if sampling and "=" in sampling:   # SECTION.FIELD=VALUE;...: fusion.detail_sigma=1.0, runtime.precision=bf16
        changes = {}
        for item in sampling.split(";"):
            key, value = item.split("=", 1)
            section, field = key.split(".")
            if section == "runtime":
                runtime[field] = value
                continue
            v = tuple(float(x) for x in value.split(",")) if "," in value else float(value)
            changes.setdefault(section, {})[field] = v
        m.cfg = override(m.cfg, **changes)
    elif sampling:
        taus, steps = sampling.split("/")
        m.cfg = override(m.cfg, pgs={"taus": tuple(int(t) for t in taus.split(",")),
                                     "steps": tuple(int(s) for s in steps.split(","))})
    m = m.configure(Runtime(**runtime))
    return m, (lambda prep: np.asarray(upscale_prepared(m, prep).image.convert("RGB")))


def alone(net, dtype=torch.float32):
    net = net.eval().to(dtype).to(memory_format=torch.channels_last)

    def run(prep):
        with torch.no_grad():
            return _u8(net(prep.rgb.to(dtype).contiguous(memory_format=torch.channels_last)).float().clamp(0, 1))
    return run


x4plus = load_backbone("rrdb")
variants = {"x4plus alone": alone(x4plus)}
if a.x4plus_bf16:   # what a bf16 build of Real-ESRGAN would cost and give (a second, honest baseline)
    variants["x4plus alone bf16"] = alone(load_backbone("rrdb"), torch.bfloat16)
x4plus_model, variants["method on x4plus"] = method(a.x4plus_checkpoint)
compact_model = x4plus_model
if not a.no_compact:
    compact_model, compact_method = method(a.checkpoint)
    if compact_model.cfg.grm.backbone == "compact":
        variants["compact GRM alone"] = alone(compact_model.grm.backbone)
    variants[f"method on {compact_model.cfg.grm.backbone}"] = compact_method
for v in a.variant:
    name, spec = v.split("=", 1)
    ckpt, _, sampling = spec.partition("@")
    variants[name] = method(ckpt, sampling or None)[1]
names = list(variants)
print(f"# variants: {', '.join(names)}; precision of the methods: {compact_model.runtime.precision} "
      f"(x4plus alone and GRMs alone: fp32); model loads excluded")

held = harness.held_out(a.data, a.n)
rows = []
for family in a.families.split(","):
    sheet = []
    for k, path in enumerate(held):
        prep, hr8 = harness.held_out_pair(path, a.lr_size, family)
        outs, secs = {}, {}
        order = names[k % len(names):] + names[:k % len(names)]   # rotate: no variant always first
        for name in order:
            t = time.perf_counter()
            outs[name] = variants[name](prep)
            secs[name] = time.perf_counter() - t
        base = outs["x4plus alone"]
        for name in names:
            drop = tile_drop(outs[name], base, hr8, 32)
            rows.append({"family": family, "photo": path.name, "variant": name, "seconds": secs[name],
                         "psnr_y": psnr_y(outs[name], hr8), "lpips_alex": lpips(outs[name], hr8, "alex"),
                         "lpips_vgg": lpips(outs[name], hr8, "vgg"),
                         "grid": grid_peak(outs[name], 4) / max(grid_peak(base, 4), 1e-9),
                         "sharpness": mean_gradient(outs[name]) / max(mean_gradient(hr8), 1e-9),
                         "niqe": niqe(outs[name]), "blockiness8": blockiness(outs[name], 8),
                         "tiles": int(drop.size), "tiles_worse": int((drop < -4).sum()),
                         "worst_tile": float(drop.min())})
        if len(sheet) < 3:
            sheet.append(np.concatenate([np.asarray(Image.fromarray(_u8(prep.rgb)).resize(base.shape[1::-1], Image.NEAREST))]
                                        + [outs[n] for n in names] + [hr8], 1))
        print(f"  {family:<9} {path.name:<44} " + "  ".join(f"{n} {secs[n]:.2f}s" for n in names), flush=True)
    if a.out and sheet:
        Path(a.out).mkdir(parents=True, exist_ok=True)
        w = max(s.shape[1] for s in sheet)
        Image.fromarray(np.concatenate([np.pad(s, ((0, 4), (0, w - s.shape[1]), (0, 0)), constant_values=255)
                                        for s in sheet])).save(Path(a.out) / f"side_by_side_{family}.png")

if a.out:
    (Path(a.out) / "rows.json").write_text(json.dumps(rows, indent=0))
print(f"\n# {len(held)} held-out photos per family, {a.lr_size} -> {4 * a.lr_size} px; side by side: LR | "
      + " | ".join(names) + " | HR")
print("| family | variant | s/photo | x x4plus | PSNR-Y | LPIPS-Alex | LPIPS-VGG | sharpness | NIQE | blockiness 8 "
      "| 4 px grid / x4plus's | tiles > 4 dB worse | worst tile |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for family in a.families.split(","):
    base_s = sum(r["seconds"] for r in rows if r["family"] == family and r["variant"] == "x4plus alone")
    for name in names:
        rs = [r for r in rows if r["family"] == family and r["variant"] == name]
        s = sum(r["seconds"] for r in rs)
        print(f"| {family} | {name} | {s / len(rs):.2f} | {s / base_s:.2f}x | "
              f"{np.mean([r['psnr_y'] for r in rs]):.2f} | {np.mean([r['lpips_alex'] for r in rs]):.4f} | "
              f"{np.mean([r['lpips_vgg'] for r in rs]):.4f} | {np.mean([r['sharpness'] for r in rs]):.3f} | "
              f"{np.mean([r['niqe'] for r in rs]):.2f} | {np.mean([r['blockiness8'] for r in rs]):.3f} | "
              f"{np.mean([r['grid'] for r in rs]):.2f} | "
              f"{100 * sum(r['tiles_worse'] for r in rs) / sum(r['tiles'] for r in rs):.2f} % | "
              f"{min(r['worst_tile'] for r in rs):.1f} dB |")
