"""The HTML report of a run, one self-contained file (`DST/_manifest/report-RUN.html`, images
inlined), written by both engines; and the archive's own page (`DST/_manifest/status.html`,
every run at once, from pipeline/status.py), rewritten at the end of each run.

What an archivist needs of it: each photo before and after at the same display size, a slider
over a region at 100 % (one output pixel per screen pixel) to see what was done, a link to the
full output, transparency shown on a checkerboard, where the photo was hard (the difficulty map,
with its legend), the time it took, and every failure with its reason."""
from __future__ import annotations

import base64
import html
import io
import logging
import posixpath
from urllib.parse import quote

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from .manifest import MANIFEST_DIR, maps_dir, row_key

log = logging.getLogger("patchscaler")

COLOURS = [(60, 200, 90), (240, 200, 40), (230, 60, 60), (80, 120, 240), (200, 80, 220), (40, 220, 220)]
SHOW = 360          # px: before and after are both shown this wide
ZOOM = 240          # px: the slider's region, at 100 % of the output
MAX_IMAGES = 50

STYLE = """<style>
body{font-family:sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:6px;vertical-align:top}
th{background:#f2f2f2;text-align:left}
.chk{background-color:#fff;background-image:linear-gradient(45deg,#ccc 25%,transparent 25%),
linear-gradient(-45deg,#ccc 25%,transparent 25%),linear-gradient(45deg,transparent 75%,#ccc 75%),
linear-gradient(-45deg,transparent 75%,#ccc 75%);background-size:16px 16px;
background-position:0 0,0 8px,8px -8px,-8px 0}
.pair img{display:block}
.cmp{position:relative;display:inline-block;overflow:hidden}
.cmp img{display:block;image-rendering:pixelated}
.cmp .top{position:absolute;left:0;top:0;clip-path:inset(0 50% 0 0)}
.cmp input{width:100%}
.legend span{display:inline-block;padding:2px 8px;margin-right:6px;border-radius:3px}
.failed{color:#a00}
</style>"""

SCRIPT = """<script>
document.querySelectorAll('.cmp input').forEach(function (s) {
  s.addEventListener('input', function () {
    s.parentNode.querySelector('.top').style.clipPath = 'inset(0 ' + (100 - s.value) + '% 0 0)';
  });
});
</script>"""


def group_names(n: int) -> list[str]:
    """simple / medium / hard for three groups; simple, medium 1.., hard for any other count."""
    if n == 3:
        return ["simple", "medium", "hard"]
    return ["simple"] + [f"medium {i}" for i in range(1, n - 1)] + ["hard"] * (n > 1) if n else []


def _hex(c: tuple[int, int, int]) -> str:
    return "%02x%02x%02x" % c


def _data_uri(im: Image.Image) -> str:
    """PNG where there is transparency (shown over the checkerboard), else JPEG."""
    buf = io.BytesIO()
    if im.mode in ("RGBA", "LA"):
        im.save(buf, "PNG")
        return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    im.convert("RGB").save(buf, "JPEG", quality=88)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


GREY_16 = ("I;16", "I;16B", "I;16L", "I", "F")


def _open(data: bytes) -> Image.Image:
    """An image as the report shows it: upright (EXIF orientation applied, as it was for the
    output, so before and after show the same place) and in 8 bits (16-bit grey tone-mapped:
    a browser cannot show more, and Pillow's own conversion clips it to white)."""
    im = Image.open(io.BytesIO(data))
    im.load()
    im = ImageOps.exif_transpose(im)
    if im.mode in GREY_16:
        im = _eight_bits(im)
    return im.convert("RGBA" if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info else "RGB")


def _eight_bits(im: Image.Image) -> Image.Image:
    """16-bit (or float) grey to 8 bits, with the scale the method reads it with
    (patchscaler/imageio.py), so before and after map alike."""
    a = np.asarray(im, dtype=np.float32)
    full = max(1.0, float(a.max())) if im.mode == "F" else 65535.0
    return Image.fromarray((np.clip(a / full, 0, 1) * 255 + 0.5).astype(np.uint8), "L")


def href(rel: str) -> str:
    """A relative link as an HTML attribute value: URL-encoded (a '#' or '?' in a file name
    would otherwise cut the link), then HTML-escaped."""
    return html.escape(quote(rel, safe="/"), quote=True)


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
    """The photo's difficulty map as the stitcher wrote it (writing.write_map): patch
    positions, patch size, latent size and each patch's group; {} if there is none."""
    import json

    from patchscaler import pgs
    try:
        with Image.open(io.BytesIO(dst.read(f"{maps_dir(run_id)}/{row_key(rel)}.png"))) as im:
            geo = json.loads(im.text["grid"])
            groups = list(im.get_flattened_data()) if hasattr(im, "get_flattened_data") else list(im.getdata())
    except Exception:
        return {}
    grid = pgs.make_grid(*geo["latent"], geo["patch"], geo["overlap"])
    keep = [(p, int(g)) for p, g in zip(grid.positions, groups) if g != 255]
    return {"positions": [p for p, _ in keep], "groups": [g for _, g in keep], "patch": geo["patch"],
            "latent": geo["latent"]}


def _shown(im: Image.Image, width: int = SHOW) -> Image.Image:
    """`im` at `width` px wide (the same display scale for before and after)."""
    h = max(1, round(im.height * width / im.width))
    return im.resize((width, h), Image.LANCZOS if im.width > width else Image.NEAREST)


def _slider(before_up: Image.Image, after: Image.Image) -> str:
    """Before (the input scaled to the output's size) and after over the output's busiest
    region, 1:1, with a slider between them."""
    side = min(ZOOM, after.width, after.height)
    gray = after.convert("L").resize((max(1, after.width // 8), max(1, after.height // 8)))
    # the region with most detail: the block of the 1/8 image with the largest local spread
    best, at = -1.0, (0, 0)
    step = max(1, side // 8)
    px = gray.load()
    for y in range(0, max(1, gray.height - step + 1), max(1, step // 2)):
        for x in range(0, max(1, gray.width - step + 1), max(1, step // 2)):
            vals = [px[x + i, y + j] for j in range(min(step, gray.height - y)) for i in range(min(step, gray.width - x))]
            spread = max(vals) - min(vals)
            if spread > best:
                best, at = spread, (x * 8, y * 8)
    x0, y0 = min(at[0], after.width - side), min(at[1], after.height - side)
    box = (x0, y0, x0 + side, y0 + side)
    return (f"<div class='cmp chk'><img src='{_data_uri(after.crop(box))}' alt='after, 100 %'>"
            f"<img class='top' src='{_data_uri(before_up.crop(box))}' alt='before, 100 %'>"
            f"<input type='range' min='0' max='100' value='50' aria-label='before / after'></div>"
            "<br><small>slide: before (the input, each pixel enlarged) | after, 100 %</small>")


def _legend(n: int) -> str:
    return "<p class='legend'>Difficulty map: " + "".join(
        f"<span style='background:#{_hex(COLOURS[g % len(COLOURS)])}'>{html.escape(name)}</span>"
        for g, name in enumerate(group_names(n))) + " (each patch coloured by the group PGS gave it: hard patches " \
        "get the most diffusion steps)</p>"


def _totals(work, tally) -> str:
    """Each input counted once: written, failed, done before, still bad add up to the inputs;
    the entries not read are no inputs."""
    text = (f"Of {len(work.inputs)} inputs: <b>{tally.ok}</b> photo(s) written, <b class=failed>{tally.failed}</b> "
            f"failed, {len(work.done)} already done before this run")
    if work.still_bad:
        text += f", {len(work.still_bad)} still bad (unchanged since they failed: not tried again)"
    text += "."
    if work.skipped:
        text += f" {len(work.skipped)} other entries not read (hidden, or links leaving SRC)."
    return text


def report_or_warning(work, tally) -> str | None:
    """write_report, or a warning when it cannot be written (a full disk, say): the outputs
    and the manifest are what the run is for, so the report never changes its exit code."""
    try:
        return write_report(work, tally)
    except Exception as e:
        from .errors import one_line
        log.warning("the report was not written: %s: %s", type(e).__name__, one_line(e))
        return None


def write_report(work, tally) -> str:
    """The run's report from its Tally: the first MAX_IMAGES written photos, every failure the
    tally kept."""
    src, dst, opts = work.src, work.dst, work.opts
    ok = [r for r in tally.rows if r["status"] == "ok"]
    secs = sum(tally.seconds.values())
    parts = [f"<!doctype html><html lang=en><meta charset=utf-8><title>PatchScaler run {html.escape(opts.run_id)}"
             f"</title>{STYLE}<h1>Run {html.escape(opts.run_id)}</h1>",
             f"<p id=totals>{_totals(work, tally)} Time per photo: "
             f"{secs / max(1, tally.ok):.1f} s of model work on average. Seed {opts.seed}. Patches per "
             f"difficulty group ({' / '.join(group_names(len(tally.groups)))}): "
             f"{' / '.join(str(c) for c in tally.groups)}.</p>",
             _legend(len(tally.groups) or 3),
             "<table><tr><th>photo</th><th>before and after (same size)</th><th>a region at 100 %</th>"
             "<th>difficulty map</th><th>size</th><th>time</th></tr>"]
    for r in ok[:MAX_IMAGES]:
        link = href(posixpath.relpath(r["output"], MANIFEST_DIR))
        try:
            before = _open(src.read(r["input"]))
            after = _open(dst.read(r["output"]))
            before_up = before.resize(after.size, Image.NEAREST)
            gm = read_map(dst, opts.run_id, r["input"])
            pair = (f"<div class='pair'><small>before</small><div class='chk'>"
                    f"<img src='{_data_uri(_shown(before))}' alt='before'></div><small>after</small>"
                    f"<div class='chk'><img src='{_data_uri(_shown(after))}' alt='after'></div></div>")
            cells = [pair, _slider(before_up, after),
                     f"<img src='{_data_uri(_shown(group_overlay(after, gm), 200))}' alt='difficulty map'>"
                     if gm else "-"]
        except Exception as e:  # a report never fails the job
            cells = [html.escape(f"(no preview: {e})"), "", ""]
        parts.append(f"<tr class=photo><td><a href='{link}'>{html.escape(r['input'])}</a></td>"
                     + "".join(f"<td>{c}</td>" for c in cells)
                     + f"<td>{r['width']} x {r['height']} &rarr; {r['out_width']} x {r['out_height']}</td>"
                     f"<td>{r['sec_grm'] + r['sec_dit'] + r['sec_stitch']:.1f} s</td></tr>")
    parts.append("</table>")
    if tally.ok > MAX_IMAGES:
        parts.append(f"<p>(the first {MAX_IMAGES} of {tally.ok} written photos are shown; the manifest has all)</p>")
    if tally.errors:
        parts.append("<h2 class=failed>Failed</h2><ul id=failures>" + "".join(
            f"<li>{html.escape(i)}: {html.escape(e)}</li>" for i, e in tally.errors) + "</ul>")
        if tally.failed > len(tally.errors):
            parts.append(f"<p>(the first {len(tally.errors)} of {tally.failed} failures; the manifest has all)</p>")
    parts.append("<p>The whole archive, every run: <a href='status.html'>status.html</a> "
                 "(or <code>patchscaler status DST</code>).</p>" + SCRIPT)
    rel = f"{MANIFEST_DIR}/report-{opts.run_id}.html"
    dst.write_atomic(rel, "\n".join(parts).encode())
    write_status_page(dst)
    return dst.uri(rel)


def _reports(dst) -> set[str]:
    """The names of the reports in DST/_manifest (a run that wrote nothing, or was killed,
    has none: its row gets no link)."""
    dst.invalidate()
    names = dst.retrying("a listing of _manifest", lambda: dst.fs.ls(dst.full(MANIFEST_DIR), detail=False))
    return {posixpath.basename(n.rstrip("/")) for n in names}


def write_status_page(dst, limit: int = 500) -> str:
    """DST/_manifest/status.html: every run into DST and each input's latest state (the
    problems listed first, at most `limit` inputs; `patchscaler status` lists any)."""
    from .status import STATES, archive_status, totals
    st = archive_status(dst)
    t = totals(st)
    rows = sorted(st["inputs"].items(), key=lambda kv: (kv[1][0] == "written", kv[0]))[:limit]
    parts = [f"<!doctype html><html lang=en><meta charset=utf-8><title>PatchScaler archive status</title>{STYLE}",
             f"<h1>{html.escape(dst.uri())}</h1><p id=totals>" + ", ".join(f"<b>{t[s]}</b> {s}" for s in STATES)
             + f" (inputs: {len(st['inputs'])})</p>",
             "<h2>Runs</h2><table><tr><th>run</th><th>photos</th><th>reports</th></tr>"]
    reports = _reports(dst)
    for run_id, r in sorted(st["runs"].items(), key=lambda kv: kv[1].first):
        states = ", ".join(f"{n} {s}" for s, n in sorted(r.states.items()))
        name = f"report-{run_id}.html"
        link = f"<a href='{href(name)}'>report</a>" if name in reports else "-"
        parts.append(f"<tr><td>{html.escape(run_id)}</td><td>{html.escape(states)}</td><td>{link}</td></tr>")
    parts.append("</table><h2>Inputs</h2><table><tr><th>input</th><th>state</th><th>reason or output</th>"
                 "<th>run</th></tr>")
    for inp, (state, reason, run_id, _, output) in rows:
        what = reason if state != "written" else output
        parts.append(f"<tr class='{state.replace(' ', '-')}'><td>{html.escape(inp)}</td><td>{state}</td>"
                     f"<td>{html.escape(what)}</td><td>{html.escape(run_id)}</td></tr>")
    parts.append("</table>")
    if len(st["inputs"]) > limit:
        parts.append(f"<p>({limit} of {len(st['inputs'])} inputs shown, problems first)</p>")
    rel = f"{MANIFEST_DIR}/status.html"
    dst.write_atomic(rel, "\n".join(parts).encode())
    return dst.uri(rel)
