"""Pictures to look at before choosing a model: for each photo, two 96 px tiles of the output
(its most detailed region and its centre) shown 3x, side by side: HR | Real-ESRGAN x4plus alone
| each variant. A perceptual loss can buy its number with a pattern or grain; this is where a
person sees it.

    OMP_WAIT_POLICY=PASSIVE python bench/look.py --data DATA --out runs/look \\
        --variant old=default --variant new=runs/p1/model.safetensors [--photos NAME,...] [--n 6]

Photos: the first --n of the held-out split (no model here trained on them), plus --photos by
name from DATA/train (e.g. faces: the held-out split has none; a training photo is then said so
in the sheet's file name). Both degradation families; one sheet per family and photo set."""
import argparse
from pathlib import Path

import harness

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--data", required=True)
ap.add_argument("--out", required=True)
ap.add_argument("--n", type=int, default=6)
ap.add_argument("--photos", default="", help="more photos of DATA/train by name, comma-separated")
ap.add_argument("--variant", action="append", default=[], metavar="NAME=CKPT")
ap.add_argument("--lr-size", type=int, default=128)
ap.add_argument("--tile", type=int, default=96)
ap.add_argument("--zoom", type=int, default=3)
ap.add_argument("--families", default="training,classical")
harness.add_args(ap, threads=2)
a = ap.parse_args()
torch = harness.start(a)

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from jobs.evaluate import _u8  # noqa: E402
from jobs.metrics import rgb_to_y  # noqa: E402
from patchscaler.model import Runtime  # noqa: E402
from patchscaler.realesrgan import load_backbone  # noqa: E402
from patchscaler.upscale import build_default, resolve_checkpoint, upscale_prepared  # noqa: E402

x4plus = load_backbone("rrdb").eval().to(memory_format=torch.channels_last)
models = {}
for v in a.variant:
    name, ckpt = v.split("=", 1)
    models[name] = build_default(resolve_checkpoint(ckpt)).configure(Runtime())


def outputs(prep) -> dict[str, np.ndarray]:
    with torch.no_grad():
        out = {"x4plus": _u8(x4plus(prep.rgb.contiguous(memory_format=torch.channels_last)).clamp(0, 1))}
    for name, m in models.items():
        out[name] = np.asarray(upscale_prepared(m, prep).image.convert("RGB"))
    return out


def tiles(hr: np.ndarray, size: int) -> list[tuple[int, int]]:
    """The most detailed tile (largest mean |gradient|) and the centre one."""
    y = rgb_to_y(hr)
    g = np.abs(np.diff(y, axis=0))[:, :-1] + np.abs(np.diff(y, axis=1))[:-1]
    best, at = -1.0, (0, 0)
    for i in range(0, g.shape[0] - size, size // 2):
        for j in range(0, g.shape[1] - size, size // 2):
            e = g[i:i + size, j:j + size].mean()
            if e > best:
                best, at = e, (i, j)
    h, w = hr.shape[:2]
    return [at, ((h - size) // 2, (w - size) // 2)]


names = [p for p in harness.held_out(a.data, a.n)]
extra = [Path(a.data) / "train" / n for n in a.photos.split(",") if n]
Path(a.out).mkdir(parents=True, exist_ok=True)
for family in a.families.split(","):
    for label, paths in (("held-out", names), ("training-photos", extra)):
        if not paths:
            continue
        rows = []
        for path in paths:
            prep, hr = harness.held_out_pair(path, a.lr_size, family)
            outs = outputs(prep)
            for y, x in tiles(hr, a.tile):
                cells = [hr[y:y + a.tile, x:x + a.tile]] + [o[y:y + a.tile, x:x + a.tile] for o in outs.values()]
                row = np.concatenate([np.pad(np.kron(c, np.ones((a.zoom, a.zoom, 1), np.uint8)),
                                             ((0, 0), (0, 4), (0, 0)), constant_values=255) for c in cells], 1)
                rows.append(row)
            print(f"  {family} {path.name}", flush=True)
        sheet = Image.fromarray(np.concatenate([np.pad(r, ((0, 4), (0, 0), (0, 0)), constant_values=255)
                                                for r in rows]))
        head = Image.new("RGB", (sheet.width, 20), "white")
        ImageDraw.Draw(head).text((4, 4), " | ".join(["HR"] + list(outs)) + f"   ({family} family, {label})", fill="black")
        full = Image.new("RGB", (sheet.width, sheet.height + 20), "white")
        full.paste(head, (0, 0))
        full.paste(sheet, (0, 20))
        full.save(Path(a.out) / f"look_{family}_{label}.png")
print("sheets in", a.out)
