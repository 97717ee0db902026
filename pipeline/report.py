"""An HTML report per job: before/after thumbnails, the PGS group map over the output, stats.
Written as `_manifest/report-<run_id>.html` beside the manifest, images inlined as data URIs
so the report is one self-contained file."""
from __future__ import annotations

import base64
import html
import io
import json

from PIL import Image, ImageDraw

from .storage import MANIFEST_DIR, maps_dir, row_key

COLOURS = [(60, 200, 90), (240, 200, 40), (230, 60, 60), (80, 120, 240), (200, 80, 220), (40, 220, 220)]
THUMB = 256
MAX_IMAGES = 50


def group_names(n: int) -> list[str]:
    """simple / medium / hard for three groups; simple, medium 1.., hard for any other count."""
    if n == 3:
        return ["simple", "medium", "hard"]
    return ["simple"] + [f"medium {i}" for i in range(1, n - 1)] + ["hard"] * (n > 1) if n else []


def _hex(c: tuple[int, int, int]) -> str:
    return "%02x%02x%02x" % c


def _data_uri(im: Image.Image) -> str:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _thumb(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.thumbnail((THUMB, THUMB))
    return im.convert("RGBA" if im.mode in ("RGBA", "LA") else "RGB")


def group_overlay(out: Image.Image, gm: dict) -> Image.Image:
    """Colour each patch's area by its group (where patches overlap the later one wins)."""
    base = out.convert("RGB").copy()
    lh, lw = gm["latent"]
    sx, sy = base.width / max(lw, 1), base.height / max(lh, 1)
    over = Image.new("RGBA", base.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(over)
    V = gm["patch"]
    for (y, x), g in zip(gm["positions"], gm["groups"]):
        c = COLOURS[g % len(COLOURS)]
        d.rectangle([x * sx, y * sy, (x + V) * sx - 1, (y + V) * sy - 1], fill=c + (70,), outline=c + (160,))
    return Image.alpha_composite(base.convert("RGBA"), over).convert("RGB")


def read_map(dst, run_id: str, rel: str) -> dict:
    """The photo's difficulty map as the stitcher wrote it (steps.ImageJob.write_map): patch
    positions, patch size, latent size and each patch's group; {} if there is none."""
    from patchscaler import pgs
    try:
        with Image.open(io.BytesIO(dst.read(f"{maps_dir(run_id)}/{row_key(rel)}.png"))) as im:
            geo = json.loads(im.text["grid"])
            groups = [int(g) for g in im.getdata()]
    except Exception:
        return {}
    grid = pgs.make_grid(*geo["latent"], geo["patch"], geo["overlap"])
    keep = [(p, g) for p, g in zip(grid.positions, groups) if g != 255]
    return {"positions": [p for p, _ in keep], "groups": [g for _, g in keep], "patch": geo["patch"],
            "latent": geo["latent"]}


def write_report(plan, tally) -> str:
    """The run's report from its Tally: the first MAX_IMAGES written photos, every failure the
    tally kept."""
    src, dst, opts = plan.src, plan.dst, plan.opts
    ok = [r for r in tally.rows if r["status"] == "ok"]
    bad = tally.errors
    tot = tally.groups
    names = group_names(len(tot))
    parts = [f"<h1>PatchScaler run {html.escape(opts.run_id)}</h1>",
             f"<p>{tally.ok} written, {tally.failed} failed. Patches per group ({' / '.join(names)}): "
             f"{' / '.join(str(t) for t in tot)}. Seed {opts.seed}.</p>",
             "<p>Group colours: " + ", ".join(
                 f"<span style='color:#{_hex(COLOURS[g % len(COLOURS)])}'>{n}</span>" for g, n in enumerate(names))
             + ".</p>",
             "<table border=1 cellpadding=4><tr><th>input</th><th>before</th><th>after</th><th>groups</th>"
             "<th>size</th><th>patches per group</th><th>seconds grm / dit / stitch</th></tr>"]
    for r in ok[:MAX_IMAGES]:
        try:
            before = _thumb(src.read(r["input"]))
            after_full = Image.open(io.BytesIO(dst.read(r["output"])))
            gm = read_map(dst, opts.run_id, r["input"])
            after = after_full.copy()
            after.thumbnail((THUMB, THUMB))
            ov = group_overlay(after, gm) if gm else after
            cells = [f"<img src='{_data_uri(x)}'>" for x in (before, after, ov)]
        except Exception as e:  # a report never fails the job
            cells = [html.escape(f"(no preview: {e})")] * 3
        parts.append(f"<tr><td>{html.escape(r['input'])}</td><td>{cells[0]}</td><td>{cells[1]}</td><td>{cells[2]}</td>"
                     f"<td>{r['width']}x{r['height']} &rarr; {r['out_width']}x{r['out_height']}</td>"
                     f"<td>{'/'.join(str(c) for c in r['group_counts'])}</td>"
                     f"<td>{r['sec_grm']:.2f} / {r['sec_dit']:.2f} / {r['sec_stitch']:.2f}</td></tr>")
    parts.append("</table>")
    if tally.ok > MAX_IMAGES:
        parts.append(f"<p>(first {MAX_IMAGES} of {tally.ok} shown)</p>")
    if bad:
        parts.append("<h2>Failed</h2><ul>" + "".join(
            f"<li>{html.escape(i)}: {html.escape(e)}</li>" for i, e in bad) + "</ul>")
        if tally.failed > len(bad):
            parts.append(f"<p>(first {len(bad)} of {tally.failed} failures; the manifest has them all)</p>")
    page = "<!doctype html><meta charset=utf-8><title>PatchScaler report</title>" + "\n".join(parts)
    rel = f"{MANIFEST_DIR}/report-{opts.run_id}.html"
    dst.write_atomic(rel, page.encode())
    return dst.uri(rel)
