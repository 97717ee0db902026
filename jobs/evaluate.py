"""`patchscaler evaluate HR_FOLDER OUT`: an honest quality evaluation on HR photos.

Each photo is centre-cropped, degraded to LR with the training degradations and a fixed seed
per photo, and upscaled four ways from the same LR:
    bicubic              plain bicubic x4
    grm                  the GRM alone (Real-ESRGAN x4plus pixels)
    patchscaler_pgs      the full method: confidence -> groups -> Patch-DiT from each group's tau
    patchscaler_uniform  the same Patch-DiT on every patch from tau = T with the hard group's steps
and the HR crop itself is scored with NIQE as a reference (what the ground truth scores on the
same no-reference metric). Metrics: PSNR / SSIM on Y, NIQE (lower is better), seconds per
stage, the Spearman correlation between each patch's Qmap and its true GRM error (pooled over
photos; positive = confident patches have low error), and the group fractions. Writes OUT/metrics.parquet (one row per photo
and method), OUT/summary.json, OUT/table.md and OUT/side_by_side.png."""
from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

METHODS = ("bicubic", "grm", "patchscaler_pgs", "patchscaler_uniform")
REFERENCE = "hr"   # NIQE of the ground truth, no PSNR/SSIM
GROUP_COLOURS = [(60, 200, 90), (240, 200, 40), (230, 60, 60), (80, 120, 240)]


def add_args(p) -> None:
    p.add_argument("src", nargs="?", default="../shared/data/train", help="folder of HR photos")
    p.add_argument("out", nargs="?", default="runs/eval", help="folder for the table, parquet and PNG")
    p.add_argument("--all-photos", dest="held_out", action="store_false",
                   help="every photo in SRC (default: only those the training split holds out)")
    p.add_argument("--checkpoint", help="default: the shipped checkpoint")
    p.add_argument("--crop", type=int, default=384, help="HR centre crop (NIQE needs > 192)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=0, help="evaluate at most this many photos")
    p.add_argument("--panels", type=int, default=4, help="photos in side_by_side.png")
    p.add_argument("--taus", help="override the checkpoint's shortcut points, e.g. 100,250,500")
    p.add_argument("--steps", help="override the checkpoint's steps per group, e.g. 2,5,10")


def _u8(x: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) in [0, 1] -> (H, W, 3) uint8."""
    return (x[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def synthetic_lr(hr: torch.Tensor, name: str, seed: int) -> torch.Tensor:
    from patchscaler.degrade import degrade
    from .train_data import name_key
    return degrade(hr, torch.Generator().manual_seed(seed * 7919 + name_key(name)))


def evaluate_photo(model, path: Path, crop: int, seed: int) -> tuple[list[dict], dict, dict]:
    from patchscaler import imageio, pgs
    from patchscaler.upscale import grm_stage, group_batches, refine_stage, stitch_stage
    from .metrics import niqe, psnr_y, ssim_y
    from .train_data import load_rgb
    img = load_rgb(path)
    H, W = img.shape[-2:]
    c = min(crop, H, W) // 16 * 16
    y0, x0 = (H - c) // 2, (W - c) // 2
    hr = img[None, :, y0:y0 + c, x0:x0 + c]
    lr = synthetic_lr(hr, path.name, seed)
    buf = io.BytesIO()
    Image.fromarray(_u8(lr)).save(buf, format="PNG")
    prep = imageio.decode(buf.getvalue())
    hr8 = _u8(hr)
    outs, secs = {}, {}
    t = time.perf_counter()
    outs["bicubic"] = _u8(torch.nn.functional.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False))
    secs["bicubic"] = {"total": time.perf_counter() - t}
    coarse = grm_stage(model, prep)
    # GRM only = the coarse latent decoded as it is (pixel-unshuffle is lossless: these are
    # Real-ESRGAN's pixels), without the Patch-DiT and without the colour fix
    with torch.no_grad():
        outs["grm"] = _u8(model.codec.decode(pgs.stitch(coarse.patches, coarse.grid)[None].to(model.device)).cpu())
    secs["grm"] = {"grm": coarse.seconds, "total": coarse.seconds}
    last = model.cfg.pgs.num_groups - 1
    for method, groups in (("patchscaler_pgs", coarse.groups), ("patchscaler_uniform", torch.full_like(coarse.groups, last))):
        t = time.perf_counter()
        refined = coarse.patches.clone()
        for g, idx in group_batches(model, groups):
            refined[idx] = refine_stage(model, coarse.patches[idx], idx, g, seed)
        t_dit = time.perf_counter() - t
        t = time.perf_counter()
        outs[method] = np.asarray(stitch_stage(model, coarse.grid, refined, prep).convert("RGB"))
        secs[method] = {"grm": coarse.seconds, "dit": t_dit, "stitch": time.perf_counter() - t,
                        "total": coarse.seconds + t_dit + time.perf_counter() - t}
    # the confidence map against the true error of each coarse patch
    true = pgs.cut(model.codec.encode(hr.to(model.device)).cpu()[0], coarse.grid)
    patch_err = (coarse.patches - true).pow(2).mean((1, 2, 3))
    counts = torch.bincount(coarse.groups, minlength=model.cfg.pgs.num_groups).tolist()
    rows = []
    for m in METHODS:
        rows.append({"image": path.name, "method": m, "psnr_y": psnr_y(outs[m], hr8), "ssim_y": ssim_y(outs[m], hr8),
                     "niqe": niqe(outs[m]), "seconds": secs[m]["total"], "seconds_grm": secs[m].get("grm", 0.0),
                     "seconds_dit": secs[m].get("dit", 0.0), "seconds_stitch": secs[m].get("stitch", 0.0),
                     "patches": len(coarse.groups), **{f"group{g}": n for g, n in enumerate(counts)}})
    rows.append({"image": path.name, "method": REFERENCE, "psnr_y": float("nan"), "ssim_y": float("nan"),
                 "niqe": niqe(hr8), "seconds": 0.0, "seconds_grm": 0.0, "seconds_dit": 0.0, "seconds_stitch": 0.0,
                 "patches": len(coarse.groups), **{f"group{g}": n for g, n in enumerate(counts)}})
    extra = {"qmap": coarse.qmap.numpy(), "patch_err": patch_err.numpy(), "groups": coarse.groups,
             "grid": coarse.grid}
    panels = {"lr": _u8(lr), "hr": hr8, **outs}
    return rows, extra, panels


def group_map(image: np.ndarray, groups: torch.Tensor, grid, factor: int) -> Image.Image:
    """The output with each patch tinted by its group (green simple, yellow medium, red hard)."""
    im = Image.fromarray(image).convert("RGBA")
    over = Image.new("RGBA", im.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(over)
    step = grid.patch - grid.overlap
    for (y, x), g in zip(grid.positions, groups.tolist()):
        cy, cx = (y + grid.overlap // 2) * factor, (x + grid.overlap // 2) * factor
        d.rectangle([cx, cy, cx + step * factor - 1, cy + step * factor - 1], fill=GROUP_COLOURS[g % 4] + (90,))
    return Image.alpha_composite(im, over).convert("RGB")


def side_by_side(panels: list[tuple[str, dict, Image.Image]], path: str) -> None:
    """Rows: photos. Columns: LR (nearest x4), GRM, PatchScaler (PGS), HR, group map."""
    cols = ("lr", "grm", "patchscaler_pgs", "hr", "map")
    s = max(p["hr"].shape[0] for _, p, _ in panels)
    sheet = Image.new("RGB", (len(cols) * (s + 4), len(panels) * (s + 4) + 20), "white")
    d = ImageDraw.Draw(sheet)
    for j, c in enumerate(cols):
        d.text((j * (s + 4) + 4, 4), {"lr": "LR (x4 nearest)", "grm": "GRM only", "patchscaler_pgs": "PatchScaler (PGS)",
                                       "hr": "HR", "map": "groups (g/y/r)"}[c], fill="black")
    for i, (_, p, gm) in enumerate(panels):
        for j, c in enumerate(cols):
            im = gm if c == "map" else Image.fromarray(p[c])
            if c == "lr":
                im = im.resize((im.width * 4, im.height * 4), Image.NEAREST)
            sheet.paste(im, (j * (s + 4), 20 + i * (s + 4)))
    sheet.save(path)


def summarise(df, qmaps, errs, diffusion_ratio_key="seconds_dit") -> dict:
    from .metrics import spearman
    per = df.groupby("method").agg(psnr_y=("psnr_y", "mean"), ssim_y=("ssim_y", "mean"), niqe=("niqe", "mean"),
                                   seconds=("seconds", "mean"), seconds_dit=("seconds_dit", "mean")).reindex(METHODS + (REFERENCE,))
    pgs, uni = per.loc["patchscaler_pgs"], per.loc["patchscaler_uniform"]
    g = df[df.method == "patchscaler_pgs"]
    groups = sorted(c for c in df.columns if c.startswith("group"))
    fractions = (g[groups].sum() / g["patches"].sum()).round(4).to_dict()
    q, e = np.concatenate(qmaps), np.concatenate(errs)
    per_image = [spearman(a, -b) for a, b in zip(qmaps, errs) if len(a) > 2]
    records = [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
               for r in per.round(4).reset_index().to_dict("records")]   # JSON has no NaN
    return {"methods": records,
            "confidence_spearman_pooled": spearman(q, -e),
            "confidence_spearman_per_image_mean": float(np.nanmean(per_image)),
            "group_fractions": fractions,
            "pgs_vs_uniform": {"psnr_db": float(pgs.psnr_y - uni.psnr_y),
                               "niqe_relative": float(pgs.niqe / uni.niqe - 1),
                               "diffusion_time_ratio": float(pgs.seconds_dit / uni.seconds_dit)},
            "patchscaler_vs_grm": {"psnr_db": float(pgs.psnr_y - per.loc["grm"].psnr_y),
                                   "niqe": float(pgs.niqe - per.loc["grm"].niqe)},
            "photos": int(df.image.nunique())}


def markdown(s: dict) -> str:
    lines = ["| method | PSNR-Y (dB) | SSIM-Y | NIQE (lower better) | s / photo | Patch-DiT s / photo |",
             "|---|---|---|---|---|---|"]
    for m in s["methods"]:
        if m["method"] == REFERENCE:
            lines.append(f"| hr (ground truth, reference) | - | - | {m['niqe']:.3f} | - | - |")
            continue
        lines.append(f"| {m['method']} | {m['psnr_y']:.2f} | {m['ssim_y']:.4f} | {m['niqe']:.3f} | "
                     f"{m['seconds']:.2f} | {m['seconds_dit']:.2f} |")
    p, g = s["pgs_vs_uniform"], s["patchscaler_vs_grm"]
    lines += ["", f"- photos: {s['photos']}",
              f"- confidence vs true per-patch error, Spearman rho (pooled): {s['confidence_spearman_pooled']:.3f}; "
              f"per-photo mean {s['confidence_spearman_per_image_mean']:.3f}",
              f"- group fractions (simple/medium/hard): {s['group_fractions']}",
              f"- PGS vs uniform: {p['psnr_db']:+.3f} dB PSNR, NIQE {100 * p['niqe_relative']:+.2f} %, "
              f"diffusion time ratio {p['diffusion_time_ratio']:.3f}",
              f"- PatchScaler (PGS) vs GRM only: {g['psnr_db']:+.3f} dB PSNR, NIQE {g['niqe']:+.3f}"]
    return "\n".join(lines) + "\n"


def run(a) -> int:
    import pandas as pd
    from tqdm import tqdm
    from patchscaler.model import Runtime
    from patchscaler.upscale import build_default
    from .train_data import list_photos, split
    torch.manual_seed(a.seed)
    photos = list_photos(a.src)
    if a.held_out:
        photos = split(photos)[1]
    if a.limit:
        photos = photos[:a.limit]
    if not photos:
        raise SystemExit(f"no photos to evaluate in {a.src}")
    model = build_default(a.checkpoint)
    if a.taus:
        model.cfg.pgs.taus = tuple(int(x) for x in a.taus.split(","))
    if a.steps:
        model.cfg.pgs.steps = tuple(int(x) for x in a.steps.split(","))
    model.configure(Runtime())
    os.makedirs(a.out, exist_ok=True)
    rows, qmaps, errs, panels = [], [], [], []
    for p in tqdm(photos, desc="evaluate"):
        r, extra, pan = evaluate_photo(model, p, a.crop, a.seed)
        rows += r
        qmaps.append(extra["qmap"])
        errs.append(extra["patch_err"])
        if len(panels) < a.panels:
            panels.append((p.name, pan, group_map(pan["patchscaler_pgs"], extra["groups"], extra["grid"], model.codec.factor)))
    df = pd.DataFrame(rows)
    df.to_parquet(os.path.join(a.out, "metrics.parquet"))
    s = summarise(df, qmaps, errs)
    s["checkpoint"] = a.checkpoint or "default"
    s["model_version"] = model.cfg.version
    s["crop"], s["seed"] = a.crop, a.seed
    s["taus"], s["steps"] = list(model.cfg.pgs.taus), list(model.cfg.pgs.steps)
    Path(a.out, "summary.json").write_text(json.dumps(s, indent=1))
    md = markdown(s)
    Path(a.out, "table.md").write_text(md)
    side_by_side(panels, os.path.join(a.out, "side_by_side.png"))
    print(md)
    print(f"wrote {a.out}/table.md, metrics.parquet, summary.json, side_by_side.png")
    return 0
