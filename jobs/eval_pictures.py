"""The pictures of `patchscaler evaluate` (jobs/evaluate.py), to look at: each patch's group
over the output, each tile's gain or loss against the GRM, the photos side by side and the
tiles where the method loses most."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

from .metrics import TILE

GROUP_COLOURS = [(60, 200, 90), (240, 200, 40), (230, 60, 60), (80, 120, 240), (200, 80, 220)]


def group_map(image: np.ndarray, groups: torch.Tensor, grid, factor: int) -> Image.Image:
    """The output with each patch tinted by its group (green simple, yellow medium, red hard)."""
    im = Image.fromarray(image).convert("RGBA")
    over = Image.new("RGBA", im.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(over)
    step = grid.patch - grid.overlap
    for (y, x), g in zip(grid.positions, groups.tolist()):
        cy, cx = (y + grid.overlap // 2) * factor, (x + grid.overlap // 2) * factor
        d.rectangle([cx, cy, cx + step * factor - 1, cy + step * factor - 1],
                    fill=GROUP_COLOURS[g % len(GROUP_COLOURS)] + (90,))
    return Image.alpha_composite(im, over).convert("RGB")


def drop_map(image: np.ndarray, drop: np.ndarray) -> Image.Image:
    """The output with each 32 px tile tinted red where it is worse than the GRM (full red at
    -8 dB) and green where it is better (full at +8 dB)."""
    im = Image.fromarray(image).convert("RGBA")
    over = Image.new("RGBA", im.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(over)
    for (i, j), v in np.ndenumerate(drop):
        a = int(min(abs(v) / 8, 1) * 160)
        colour = (230, 40, 40) if v < 0 else (40, 200, 80)
        d.rectangle([j * TILE, i * TILE, (j + 1) * TILE - 1, (i + 1) * TILE - 1], fill=colour + (a,))
    return Image.alpha_composite(im, over).convert("RGB")


def sheet(rows: list[list[Image.Image]], labels: list[str], path: str, gap: int = 4) -> None:
    w = max(sum(im.width for im in r) + gap * len(r) for r in rows)
    h = sum(max(im.height for im in r) + gap for r in rows) + 20
    out = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(out)
    d.text((4, 4), "   |   ".join(labels), fill="black")
    y = 20
    for r in rows:
        x = 0
        for im in r:
            out.paste(im, (x, y))
            x += im.width + gap
        y += max(im.height for im in r) + gap
    out.save(path)


def side_by_side(panels: list[tuple[str, dict, Image.Image]], path: str) -> None:
    """Rows: photos. Columns: LR (nearest x4), GRM, PatchScaler (PGS), HR, group map."""
    rows = [[Image.fromarray(p["lr"]).resize((p["hr"].shape[1], p["hr"].shape[0]), Image.NEAREST),
             Image.fromarray(p["grm"]), Image.fromarray(p["patchscaler_pgs"]), Image.fromarray(p["hr"]), gm]
            for _, p, gm in panels]
    sheet(rows, ["LR (x4 nearest)", "GRM only", "PatchScaler (PGS)", "HR", "groups (g/y/r)"], path)


def worst_tiles(candidates: list[tuple[float, str, dict, int, int]], path: str, n: int = 12, zoom: int = 3) -> None:
    """The n tiles where PatchScaler loses most to the GRM, each with 16 px of context and
    the tile outlined: GRM | PatchScaler | HR, enlarged `zoom` x (nearest)."""
    rows = []
    for v, name, p, i, j in sorted(candidates, key=lambda c: c[0])[:n]:
        H, W = p["hr"].shape[:2]
        y0, x0 = max(i * TILE - 16, 0), max(j * TILE - 16, 0)
        y1, x1 = min((i + 1) * TILE + 16, H), min((j + 1) * TILE + 16, W)
        row = []
        for key in ("grm", "patchscaler_pgs", "hr"):
            im = Image.fromarray(p[key][y0:y1, x0:x1]).resize(((x1 - x0) * zoom, (y1 - y0) * zoom), Image.NEAREST)
            d = ImageDraw.Draw(im)
            d.rectangle([(j * TILE - x0) * zoom, (i * TILE - y0) * zoom,
                         ((j + 1) * TILE - x0) * zoom - 1, ((i + 1) * TILE - y0) * zoom - 1], outline=(255, 0, 255))
            row.append(im)
        lab = Image.new("RGB", (150, row[0].height), "white")
        photo, _, seed = name.partition(" (")   # "photo.jpg (seed 2)" with --seeds: the seed on a line of its own
        seed_line = f"\n({seed}" if seed else ""
        ImageDraw.Draw(lab).text((4, 4), f"{photo[:20]}{seed_line}\ntile ({i},{j})\n{v:+.1f} dB", fill="black")
        rows.append([lab] + row)
    if rows:
        sheet(rows, ["photo, tile, PatchScaler - GRM", "GRM only", "PatchScaler (PGS)", "HR"], path)
