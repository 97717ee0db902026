"""The README's picture: a bundled photo upscaled x4 three ways, side by side (bicubic |
Real-ESRGAN alone | PatchScaler, the shipped model, seed 0), and below each the same region
(the red box, a quarter of each side) shown 4x, so that the difference shows.

    python scripts/make_picture.py [--photo skimage__coffee.jpg] [--out docs/comparison.jpg]

"Real-ESRGAN alone" is the model's GRM output as it is: Real-ESRGAN x4plus's pixels (its latent
is a lossless pixel-unshuffle), without the Patch-DiT and without the colour fix."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from actors.runtime import passive_openmp  # noqa: E402

passive_openmp()   # before torch loads


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photo", default="skimage__coffee.jpg", help="a bundled sample (patchscaler/samples)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "comparison.jpg"))
    ap.add_argument("--zoom-at", default="0.55,0.58", help="zoomed region's top-left corner (fractions of the "
                    "width and height); the region is a quarter of each side, shown 4x")
    a = ap.parse_args()

    import numpy as np
    import torch
    from PIL import Image, ImageDraw

    from patchscaler import flow, imageio, photo
    from patchscaler.upscale import SAMPLES, load_default
    torch.set_num_threads(2)
    data = (SAMPLES / a.photo).read_bytes()
    lr = Image.open(SAMPLES / a.photo).convert("RGB")
    model = load_default()
    prep = imageio.decode(data)
    state = flow.begin(model, prep)
    with torch.no_grad():
        grm = model.codec.decode(flow.latents(state)[0][None].to(model.device)).cpu()[0]
    grm = Image.fromarray((grm.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())
    ours = photo.run_image(model, prep, seed=0).image.convert("RGB")
    W, H = ours.size
    bicubic = lr.resize((W, H), Image.BICUBIC)
    panels = [("bicubic", bicubic), ("Real-ESRGAN x4plus alone", grm), ("PatchScaler, shipped model", ours)]

    fx, fy = (float(v) for v in a.zoom_at.split(","))
    bw, bh = W // 4, H // 4
    box = (int(fx * W), int(fy * H), int(fx * W) + bw, int(fy * H) + bh)
    zoom = 4
    gap, label = 8, 22
    tile_w = W
    sheet = Image.new("RGB", (len(panels) * tile_w + (len(panels) - 1) * gap, label + H + gap + bh * zoom),
                      "white")
    d = ImageDraw.Draw(sheet)
    for i, (name, im) in enumerate(panels):
        x = i * (tile_w + gap)
        d.text((x + 4, 5), name, fill="black")
        sheet.paste(im, (x, label))
        d.rectangle([x + box[0], label + box[1], x + box[2], label + box[3]], outline=(230, 40, 40), width=2)
        sheet.paste(im.crop(box).resize((bw * zoom, bh * zoom), Image.NEAREST), (x, label + H + gap))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(a.out, quality=90)
    print(f"{a.out}: {sheet.size[0]}x{sheet.size[1]}, input {lr.size[0]}x{lr.size[1]} -> {W}x{H}; "
          f"mean |ours - Real-ESRGAN| {np.abs(np.asarray(ours, float) - np.asarray(grm, float)).mean():.2f}/255")


if __name__ == "__main__":
    main()
