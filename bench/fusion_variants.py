"""The output stage's settings against LPIPS and PSNR, cheaply: one GRM + Patch-DiT run per photo,
then the output stage (patchscaler/fusion.py) with each variant of its settings on the same
latents, beside Real-ESRGAN x4plus alone and the GRM with the colour fix but no Patch-DiT.

    OMP_WAIT_POLICY=PASSIVE python bench/fusion_variants.py --data DATA [--n 6] [--train]
        [--checkpoint default] [--variant NAME=FIELD=V;FIELD=V ...]

--train takes every tenth training photo (choices are made on those), else the held-out split
(to check a choice). Default variants: the checkpoint's settings, the colour fix at 5, 6, 7
levels, and none."""
import argparse
import dataclasses

import harness

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--data", required=True)
ap.add_argument("--n", type=int, default=6)
ap.add_argument("--train", action="store_true", help="training photos (every tenth) instead of held-out ones")
ap.add_argument("--checkpoint", default="default")
ap.add_argument("--lr-size", type=int, default=128)
ap.add_argument("--variant", action="append", default=[], metavar="NAME=FIELD=V;...")
harness.add_args(ap, threads=2)
a = ap.parse_args()
torch = harness.start(a)

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

import patchscaler.fusion as fusion  # noqa: E402
from jobs.evaluate import _u8  # noqa: E402
from jobs.metrics import psnr_y  # noqa: E402
from jobs.perceptual import lpips  # noqa: E402
from jobs.train_data import list_photos, split  # noqa: E402
from patchscaler import flow  # noqa: E402
from patchscaler.model import Runtime  # noqa: E402
from patchscaler.realesrgan import load_backbone  # noqa: E402
from patchscaler.upscale import build_default, resolve_checkpoint  # noqa: E402

m = build_default(resolve_checkpoint(a.checkpoint)).configure(Runtime())
x4plus = load_backbone("rrdb").eval()
F = m.cfg.fusion
NO_FIX = object()
variants = {"the checkpoint's": F, "colour fix 5 levels": dataclasses.replace(F, colorfix_levels=5),
            "colour fix 6 levels": dataclasses.replace(F, colorfix_levels=6),
            "colour fix 7 levels": dataclasses.replace(F, colorfix_levels=7), "no colour fix": NO_FIX}
for v in a.variant:
    name, spec = v.split("=", 1)
    changes = {k: float(x) for k, x in (item.split("=") for item in spec.split(";"))}
    variants[name] = dataclasses.replace(F, **{k: (int(x) if k == "colorfix_levels" else x) for k, x in changes.items()})


def fused(coarse, refined, lr, cfg):
    dec = lambda z: m.codec.decode(z[None].float()).float()  # noqa: E731
    if cfg is NO_FIX:   # the colour fix's low band made zero: nothing to move towards
        real = fusion.wavelet_decompose
        fusion.wavelet_decompose = lambda x, levels=5: (x, torch.zeros_like(x))
        try:
            return fusion.fuse(dec(coarse), dec(refined), lr, F)
        finally:
            fusion.wavelet_decompose = real
    return fusion.fuse(dec(coarse), dec(refined), lr, cfg)


photos = split(list_photos(Path(a.data) / "train"))[0][::10][:a.n] if a.train else harness.held_out(a.data, a.n)
rows: dict = {}
for family in ("training", "classical"):
    for path in photos:
        prep, hr = harness.held_out_pair(path, a.lr_size, family)
        h, w = hr.shape[:2]
        with torch.no_grad():
            outs = {"x4plus alone": _u8(x4plus(prep.rgb).clamp(0, 1))}
        state = flow.begin(m, prep)
        flow.refine(m, state, 0)
        coarse, refined = flow.latents(state)
        for name, cfg in variants.items():
            outs[name] = _u8(fused(coarse, refined, prep.rgb, cfg)[..., :h, :w])
        outs["GRM + colour fix, no Patch-DiT"] = _u8(fused(coarse, coarse, prep.rgb, F)[..., :h, :w])
        for name, o in outs.items():
            rows.setdefault((family, name), []).append((lpips(o, hr, "alex"), lpips(o, hr, "vgg"), psnr_y(o, hr)))
        print(f"  {family} {path.name}", flush=True)
print(f"\n# {len(photos)} {'training' if a.train else 'held-out'} photos per family, {a.lr_size} px LR; "
      f"checkpoint {m.cfg.version}")
print("| family | output stage | LPIPS-Alex | LPIPS-VGG | PSNR-Y |")
print("|---|---|---|---|---|")
for (family, name), v in rows.items():
    v = np.array(v)
    print(f"| {family} | {name} | {v[:, 0].mean():.4f} | {v[:, 1].mean():.4f} | {v[:, 2].mean():.2f} |")
