"""`patchscaler evaluate HR_FOLDER OUT`: an honest quality evaluation on HR photos.

Each photo is centre-cropped and degraded to LR with a fixed seed per photo, by one of two
families (`--degradation`): `training` (the Real-ESRGAN second-order degradations the model
was trained on) or `classical` (Gaussian blur sigma 0.8-3.0, bicubic x4 down, JPEG quality
50-95: a family the model never saw). From the same LR it is upscaled six ways:
    bicubic              plain bicubic x4
    grm                  the GRM alone (Real-ESRGAN x4plus pixels), no colour fix
    grm_colorfix         every patch handed back to the GRM, then the same stitch, decode and
                         colour fix as PatchScaler: what the Patch-DiT must beat
    patchscaler_nofusion the PGS result as v0.3.0 made it: the Patch-DiT's pixels with the plain
                         colour fix (no fusion with the GRM, patchscaler/fusion.py): before/after
    patchscaler_pgs      the full method: confidence -> groups -> Patch-DiT from each group's tau
    patchscaler_uniform  the same Patch-DiT on every patch from tau = T with the hard group's steps
and the HR crop itself is scored with NIQE as a reference.

Numbers (per photo and method in OUT/metrics.parquet; means in OUT/table.md):
    PSNR / SSIM on Y; NIQE (lower is better)
    LPIPS-Alex / -VGG    LPIPS v0.1 (Zhang et al. 2018), the SR field's perceptual distance to the
                         HR, lower is better (jobs/perceptual.py; scripts/install.sh eval fetches it)
    sharpness            mean |gradient of Y| of the output / of the HR
    blockiness 4 / 8     neighbour differences across 4 / 8 px grid borders / elsewhere (~1.0)
    tiles worse          % of non-overlapping 32 px tiles whose local PSNR-Y is more than 4 dB
                         below the GRM-only output's, and the worst tile's difference (dB)
    clipped              pixels at 0 or 255 in any channel, output / HR (pooled)
    guarded              share of the Patch-DiT's low-band correction that the input-
                         consistency box removed (patchscaler/fusion.py)
    flat guarded         share of its detail band scaled down in flat areas (no specks)
    specks               per mille of pixels where the truth is flat but the output has 2.5-8 px
                         detail of more than 6 levels (metrics.specks)
and, for NIQE against the GRM, the mean per-photo difference with its 95 % interval (t), since
NIQE moves by about one point per photo with the sampling alone,
and the Spearman correlation between each patch's Qmap and its true GRM error.
Pictures, to look at: OUT/side_by_side.png (LR, GRM, PatchScaler, HR, group map),
OUT/worst_tiles.png (the 12 tiles where PatchScaler loses most to the GRM: GRM | PatchScaler |
HR, with context) and OUT/drop_maps.png (each photo's PatchScaler output, tiles tinted red
where it is worse than the GRM, green where better)."""
from __future__ import annotations

import argparse

import fnmatch
import io
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .eval_pictures import drop_map, group_map, sheet, side_by_side, worst_tiles
from .metrics import TILE

METHODS = ("bicubic", "grm", "grm_colorfix", "patchscaler_nofusion", "patchscaler_pgs", "patchscaler_uniform")
REFERENCE = "hr"   # NIQE of the ground truth, no PSNR/SSIM
DEGRADATIONS = ("training", "classical")
WORSE_DB = 4.0       # a tile this much below the GRM counts as a regression


def seed_list(text: str) -> list[int]:
    """--seeds: distinct integers, comma-separated."""
    try:
        seeds = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected seeds like 0,1,2") from None
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"{text!r}: a seed given twice would count its LR images twice")
    return seeds


def add_args(p) -> None:
    p.add_argument("src", help="folder of HR photos (e.g. DATA/train: the held-out split is chosen by file name)")
    p.add_argument("out", nargs="?", default="runs/eval", help="folder for the table, parquet and PNGs")
    p.add_argument("--split", choices=("held-out", "train", "all"), default="held-out",
                   help="which photos of SRC: those the training split holds out (default), the training "
                        "ones (to choose settings on), or all")
    p.add_argument("--all-photos", dest="split", action="store_const", const="all", help="= --split all")
    p.add_argument("--match", default="*", help="only photos whose file name matches one of these comma-separated globs")
    p.add_argument("--degradation", choices=DEGRADATIONS, default="training",
                   help="training: Real-ESRGAN second-order; classical: Gaussian blur + bicubic + JPEG")
    from jobs.args import add_fields
    from pipeline.options import UpscaleOptions
    add_fields(p, UpscaleOptions, only=("checkpoint",))
    p.add_argument("--crop", type=int, default=384, help="HR centre crop (NIQE needs > 192)")
    seed = p.add_mutually_exclusive_group()
    seed.add_argument("--seed", type=int, default=0, help="the seed of the degradation and the sampling (default 0)")
    seed.add_argument("--seeds", type=seed_list, help="several seeds, e.g. 0,1,2: each photo is degraded and sampled "
                      "once per seed (more power for small differences such as NIQE's; the intervals average each "
                      "photo's seeds first)")
    p.add_argument("--limit", type=int, default=0, help="evaluate at most this many photos")
    p.add_argument("--panels", type=int, default=4, help="photos in side_by_side.png")
    p.add_argument("--no-uniform", dest="uniform", action="store_false",
                   help="skip uniform sampling (the slowest row; PGS vs uniform is then not reported)")
    add_fields(p, UpscaleOptions, only=("taus", "steps"))


def _u8(x: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) in [0, 1] -> (H, W, 3) uint8."""
    return (x[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def synthetic_lr(hr: torch.Tensor, name: str, seed: int, family: str = "training") -> torch.Tensor:
    from patchscaler.degrade import classical_degrade, degrade
    from .train_data import name_key
    g = torch.Generator().manual_seed(seed * 7919 + name_key(name))
    if family == "classical":
        return classical_degrade(hr, g)
    return degrade(hr, g)


def _without_fusion(model, state, prep) -> np.ndarray:
    """v0.3.0's output stage on the same patches: the Patch-DiT's pixels, plain colour fix."""
    from patchscaler import flow
    from patchscaler.config import FusionConfig
    plain = FusionConfig(detail_sigma=0, band_sigma=0, lr_tolerance=0, clip_radius=0)
    with torch.no_grad():
        return _u8(model.finish(*flow.latents(state), prep.rgb, fusion=plain))


def image_measures(out: np.ndarray, hr: np.ndarray, grm: np.ndarray) -> tuple[dict, np.ndarray]:
    """The per-photo numbers of one output, and its tile drop map against the GRM-only output."""
    from .metrics import blockiness, clipped_pixels, mean_gradient, niqe, psnr_y, specks, ssim_y, tile_drop
    from .perceptual import lpips
    drop = tile_drop(out, grm, hr, TILE)
    return {"psnr_y": psnr_y(out, hr), "ssim_y": ssim_y(out, hr), "niqe": niqe(out),
            "lpips_alex": lpips(out, hr, "alex"), "lpips_vgg": lpips(out, hr, "vgg"),
            "sharpness": mean_gradient(out) / max(mean_gradient(hr), 1e-9),
            "blockiness4": blockiness(out, 4), "blockiness8": blockiness(out, 8),
            "clipped": clipped_pixels(out), "clipped_hr": clipped_pixels(hr), "specks": specks(out, hr),
            "tiles": int(drop.size), "tiles_worse": int((drop < -WORSE_DB).sum()),
            "worst_tile_db": float(drop.min())}, drop


def evaluate_photo(model, path: Path, crop: int, seed: int, family: str = "training",
                   uniform: bool = True) -> tuple[list[dict], dict, dict]:
    from patchscaler import flow, imageio, pgs
    from .metrics import niqe
    from .train_data import load_rgb
    img = load_rgb(path)
    H, W = img.shape[-2:]
    c = min(crop, H, W) // 16 * 16
    y0, x0 = (H - c) // 2, (W - c) // 2
    hr = img[None, :, y0:y0 + c, x0:x0 + c]
    lr = synthetic_lr(hr, path.name, seed, family)
    buf = io.BytesIO()
    Image.fromarray(_u8(lr)).save(buf, format="PNG")
    prep = imageio.decode(buf.getvalue())
    hr8 = _u8(hr)
    outs, secs, back, flat = {}, {}, {}, {}
    t = time.perf_counter()
    outs["bicubic"] = _u8(F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False))
    secs["bicubic"] = {"total": time.perf_counter() - t}
    state = flow.begin(model, prep)
    coarse, t_grm = state.coarse, state.seconds["grm"]
    # GRM only = the coarse latent decoded as it is (pixel-unshuffle is lossless: these are
    # Real-ESRGAN's pixels), without the Patch-DiT and without the colour fix
    with torch.no_grad():
        outs["grm"] = _u8(model.codec.decode(flow.latents(state)[0][None].to(model.device)).cpu())
    secs["grm"] = {"grm": t_grm, "total": t_grm}
    # every patch handed back to the GRM: nothing refined
    outs["grm_colorfix"] = np.asarray(flow.finish(model, state).convert("RGB"))
    t_stitch = state.seconds["stitch"]
    secs["grm_colorfix"] = {"grm": t_grm, "stitch": t_stitch, "total": t_grm + t_stitch}
    last = model.cfg.pgs.num_groups - 1
    runs = [("patchscaler_pgs", coarse.groups)] + [("patchscaler_uniform", torch.full_like(coarse.groups, last))] * uniform
    for method, groups in runs:
        done = flow.refine(model, state.regrouped(groups), seed)
        stats = {}
        outs[method] = np.asarray(flow.finish(model, done, stats).convert("RGB"))
        back[method] = stats.get("guarded", float("nan"))
        flat[method] = stats.get("flat_guarded", float("nan"))
        ts = done.seconds
        secs[method] = {"grm": t_grm, "dit": ts["dit"], "stitch": ts["stitch"], "total": t_grm + ts["dit"] + ts["stitch"]}
        if method == "patchscaler_pgs":   # the same refined patches, v0.3.0's output stage
            outs["patchscaler_nofusion"] = _without_fusion(model, done, prep)
            secs["patchscaler_nofusion"] = secs[method]
    # the confidence map against the true error of each coarse patch
    true = pgs.cut(model.codec.encode(hr.to(model.device)).cpu()[0], coarse.grid)
    patch_err = (coarse.patches() - true[coarse.index]).pow(2).mean((1, 2, 3))
    counts = torch.bincount(coarse.groups, minlength=model.cfg.pgs.num_groups).tolist()
    common = {"image": path.name, "degradation": family, "patches": len(coarse.groups),
              **{f"group{g}": n for g, n in enumerate(counts)}}
    rows, drops = [], {}
    for m in (m for m in METHODS if m in outs):
        meas, drops[m] = image_measures(outs[m], hr8, outs["grm"])
        rows.append({**common, "method": m, **meas, "guarded": back.get(m, float("nan")),
                     "flat_guarded": flat.get(m, float("nan")),
                     "seconds": secs[m]["total"], "seconds_grm": secs[m].get("grm", 0.0),
                     "seconds_dit": secs[m].get("dit", 0.0), "seconds_stitch": secs[m].get("stitch", 0.0)})
    rows.append({**common, "method": REFERENCE, "niqe": niqe(hr8), "clipped": 0, "clipped_hr": 0,
                 "tiles": 0, "tiles_worse": 0, "seconds": 0.0})
    extra = {"qmap": coarse.qmap.numpy(), "patch_err": patch_err.numpy(), "groups": coarse.groups,
             "grid": coarse.grid, "drop": drops["patchscaler_pgs"]}
    panels = {"lr": _u8(lr), "hr": hr8, **outs}
    return rows, extra, panels


# --- tables ---------------------------------------------------------------------------------

def summarise(df, qmaps, errs) -> dict:
    from .metrics import spearman
    agg = dict(psnr_y=("psnr_y", "mean"), ssim_y=("ssim_y", "mean"), niqe=("niqe", "mean"),
               lpips_alex=("lpips_alex", "mean"), lpips_vgg=("lpips_vgg", "mean"),
               sharpness=("sharpness", "mean"), blockiness4=("blockiness4", "mean"),
               blockiness8=("blockiness8", "mean"), clipped=("clipped", "sum"), clipped_hr=("clipped_hr", "sum"),
               tiles=("tiles", "sum"), tiles_worse=("tiles_worse", "sum"), worst_tile_db=("worst_tile_db", "min"),
               guarded=("guarded", "mean"), flat_guarded=("flat_guarded", "mean"),
               specks=("specks", "mean"), seconds=("seconds", "mean"), seconds_dit=("seconds_dit", "mean"))
    per = df.groupby("method").agg(**agg).reindex(METHODS + (REFERENCE,))
    per["tiles_worse_pct"] = 100 * per.tiles_worse / per.tiles.where(per.tiles > 0)
    hr_clipped = int(df[df.method == "grm"].clipped_hr.sum())
    per["clipped_ratio"] = per.clipped / hr_clipped if hr_clipped else float("nan")
    pgs, uni = per.loc["patchscaler_pgs"], per.loc["patchscaler_uniform"]   # uni: NaN without uniform
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
                                   "niqe": float(pgs.niqe - per.loc["grm"].niqe),
                                   "niqe_ci95": paired_interval(df, "niqe", "patchscaler_pgs", "grm"),
                                   "sharpness": float(pgs.sharpness - per.loc["grm"].sharpness)},
            "patchscaler_vs_grm_colorfix": {"psnr_db": float(pgs.psnr_y - per.loc["grm_colorfix"].psnr_y),
                                            "niqe": float(pgs.niqe - per.loc["grm_colorfix"].niqe),
                                            "niqe_ci95": paired_interval(df, "niqe", "patchscaler_pgs", "grm_colorfix")},
            "photos": int(df.image.nunique()),
            "images": int((df.method == "grm").sum())}


def paired_interval(df, column: str, a: str, b: str) -> list[float]:
    """95 % interval (Student's t) of the mean per-photo difference a - b in `column`; with
    several seeds each photo's difference is the mean over the seeds both methods have."""
    import scipy.stats
    keys = ["image", "seed"] if "seed" in df.columns else ["image"]
    x = df[df.method == a].set_index(keys)[column]
    pairs = (x - df[df.method == b].set_index(keys)[column].reindex(x.index)).dropna()
    d = pairs.groupby(level="image").mean().to_numpy()
    if len(d) < 2:
        return [float("nan"), float("nan")]
    half = float(scipy.stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
    return [float(d.mean() - half), float(d.mean() + half)]


def _f(v, fmt):
    return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, fmt)


def markdown(s: dict) -> str:
    lines = ["| method | PSNR-Y (dB) | SSIM-Y | LPIPS-Alex | LPIPS-VGG | NIQE | sharpness | blockiness 4 / 8 | tiles worse > 4 dB (%) "
             "| worst tile (dB) | specks (per mille) | clipped / HR | guarded | flat guarded | s / photo | Patch-DiT s / photo |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in s["methods"]:
        if m["method"] == REFERENCE:
            lines.append(f"| hr (ground truth, reference) | - | - | 0 | 0 | {m['niqe']:.3f} | 1 | - | - | - | 0 | 1 | - | - | - | - |")
            continue
        if m["psnr_y"] is None:   # not run (--no-uniform)
            continue
        lines.append(f"| {m['method']} | {m['psnr_y']:.2f} | {m['ssim_y']:.4f} | {m['lpips_alex']:.4f} "
                     f"| {m['lpips_vgg']:.4f} | {m['niqe']:.3f} | {m['sharpness']:.3f} "
                     f"| {m['blockiness4']:.3f} / {m['blockiness8']:.3f} | {_f(m['tiles_worse_pct'], '.2f')} "
                     f"| {_f(m['worst_tile_db'], '+.1f')} | {_f(m['specks'], '.3f')} | {_f(m['clipped_ratio'], '.2f')} "
                     f"| {_f(m['guarded'], '.3f')} | {_f(m['flat_guarded'], '.4f')} "
                     f"| {m['seconds']:.2f} | {m['seconds_dit']:.2f} |")
    p, g, c = s["pgs_vs_uniform"], s["patchscaler_vs_grm"], s["patchscaler_vs_grm_colorfix"]
    seeds = s.get("seeds", [s.get("seed", 0)])
    each = f" x {len(seeds)} seeds ({', '.join(map(str, seeds))}): {s.get('images')} LR images" if len(seeds) > 1 else ""
    lines += ["", f"- photos: {s['photos']}{each}, degradation: {s.get('degradation', 'training')}",
              "- lower is better for LPIPS and NIQE; sharpness and clipped are output / HR (1 = as the truth); tiles: "
              f"{TILE} px, local PSNR-Y against the GRM-only output's",
              f"- confidence vs true per-patch error, Spearman rho (pooled): {s['confidence_spearman_pooled']:.3f}; "
              f"per-photo mean {s['confidence_spearman_per_image_mean']:.3f}",
              f"- group fractions (simple ... hard): {s['group_fractions']}",
              (f"- PGS vs uniform: {p['psnr_db']:+.3f} dB PSNR, NIQE {100 * p['niqe_relative']:+.2f} %, "
               f"diffusion time ratio {p['diffusion_time_ratio']:.3f}" if p['psnr_db'] == p['psnr_db']   # not NaN
               else "- PGS vs uniform: not measured (--no-uniform)"),
              f"- PatchScaler (PGS) vs GRM only: {g['psnr_db']:+.3f} dB PSNR, NIQE {g['niqe']:+.3f} "
              f"(95 % interval {g['niqe_ci95'][0]:+.2f} .. {g['niqe_ci95'][1]:+.2f}), sharpness {g['sharpness']:+.3f}",
              f"- PatchScaler (PGS) vs GRM + colour fix: {c['psnr_db']:+.3f} dB PSNR, NIQE {c['niqe']:+.3f} "
              f"(95 % interval {c['niqe_ci95'][0]:+.2f} .. {c['niqe_ci95'][1]:+.2f})"]
    return "\n".join(lines) + "\n"


def run(a) -> int:
    import pandas as pd
    from tqdm import tqdm
    from patchscaler.model import Runtime
    from patchscaler.upscale import build_default
    from .train_data import list_photos, split
    seeds = getattr(a, "seeds", None) or [a.seed]
    torch.manual_seed(seeds[0])
    photos = list_photos(a.src)
    if a.split != "all":
        photos = split(photos)[1 if a.split == "held-out" else 0]
    photos = [p for p in photos if any(fnmatch.fnmatch(p.name, m) for m in a.match.split(","))]
    if a.limit:
        photos = photos[:a.limit]
    if not photos:
        raise SystemExit(f"no photos to evaluate in {a.src}")
    model = build_default(a.checkpoint)
    if a.taus:
        model.cfg.pgs.taus = tuple(a.taus)
    if a.steps:
        model.cfg.pgs.steps = tuple(a.steps)
    model.configure(Runtime())
    os.makedirs(a.out, exist_ok=True)
    rows, qmaps, errs, panels, tiles, drops = [], [], [], [], [], []
    runs = [(seed, p) for seed in seeds for p in photos]
    for seed, p in tqdm(runs, desc=f"evaluate ({a.degradation})"):
        r, extra, pan = evaluate_photo(model, p, a.crop, seed, a.degradation, a.uniform)
        rows += [{**row, "seed": seed} for row in r]
        qmaps.append(extra["qmap"])
        errs.append(extra["patch_err"])
        name = p.name if len(seeds) == 1 else f"{p.name} (seed {seed})"
        if len(panels) < a.panels:
            panels.append((name, pan, group_map(pan["patchscaler_pgs"], extra["groups"], extra["grid"], model.codec.factor)))
        worst = sorted(np.ndenumerate(extra["drop"]), key=lambda kv: kv[1])[:12]
        small = {k: pan[k] for k in ("grm", "patchscaler_pgs", "hr")}
        tiles += [(float(v), name, small, i, j) for (i, j), v in worst]
        drops.append(drop_map(pan["patchscaler_pgs"], extra["drop"]).resize((192, 192)))
    df = pd.DataFrame(rows)
    df.to_parquet(os.path.join(a.out, "metrics.parquet"))
    s = summarise(df, qmaps, errs)
    s["checkpoint"] = a.checkpoint or "default"
    s["model_version"] = model.cfg.version
    s["crop"], s["seed"], s["seeds"], s["degradation"] = a.crop, seeds[0], seeds, a.degradation
    s["taus"], s["steps"] = list(model.cfg.pgs.taus), list(model.cfg.pgs.steps)
    Path(a.out, "summary.json").write_text(json.dumps(s, indent=1))
    md = markdown(s)
    Path(a.out, "table.md").write_text(md)
    side_by_side(panels, os.path.join(a.out, "side_by_side.png"))
    worst_tiles(tiles, os.path.join(a.out, "worst_tiles.png"))
    sheet([drops[i:i + 6] for i in range(0, len(drops), 6)], ["PatchScaler - GRM per 32 px tile: red worse, green better (full at 8 dB)"],
          os.path.join(a.out, "drop_maps.png"))
    print(md)
    print(f"wrote {a.out}/table.md, metrics.parquet, summary.json, side_by_side.png, worst_tiles.png, drop_maps.png")
    return 0
