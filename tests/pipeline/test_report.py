"""The run's report as an archivist uses it (both engines write it; the in-process one here):
before and after at the same display size and orientation (an EXIF-rotated photo too), 16-bit
grey shown in 8 bits, a 100 % slider region, a URL-encoded link to each full output, alpha over
a checkerboard, the difficulty map's legend, failures with reasons, run totals that count each
input once, and the archive's status page. Checked in the HTML, and in a real browser where
Debian's chromium is installed (`apt-get install chromium`): screenshots at two zoom levels
show the page drawn, and the page's own pixels, read back in the browser, show every photo."""
import base64
import io
import json
import shutil
import subprocess
from html.parser import HTMLParser
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

from helpers import encode, photo

pytestmark = pytest.mark.fast

ROTATED = "sub dir/photo é #1.jpg"   # EXIF orientation 6, and a name a link must encode
GREY16 = "grey16.png"


def _rotated_jpeg() -> bytes:
    """A landscape JPEG stored sideways: EXIF orientation 6 says "turn 90 degrees clockwise"
    (a camera held upright). Its left third is dark, so a wrong turn shows."""
    arr = np.asarray(photo(48, 24, seed=3)).copy()
    arr[:, :16] //= 4
    ex = Image.Exif()
    ex[0x0112] = 6
    return encode(Image.fromarray(arr), "JPEG", quality=95, exif=ex.tobytes())


def _grey16() -> bytes:
    """16-bit grey in the middle of its range (shown as 8 bits it clips to white)."""
    y, x = np.mgrid[0:24, 0:32]
    arr = (20000 + 400 * x + 300 * y + np.random.default_rng(4).integers(0, 3000, (24, 32))).astype(np.uint16)
    return encode(Image.fromarray(arr))


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.links, self.inputs, self.ids, self.classes = [], [], [], set(), []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if "class" in a:
            self.classes.append(a["class"])
        if tag == "img":
            self.imgs.append(a)
        elif tag == "a":
            self.links.append(a["href"])
        elif tag == "input":
            self.inputs.append(a)


def _image(src: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))


@pytest.fixture()
def report_run(checkpoint, tmp_path):
    from pipeline.local import run_local
    from pipeline.options import UpscaleOptions
    src = tmp_path / "in"
    src.mkdir()
    (src / "wide.png").write_bytes(encode(photo(48, 24, seed=1)))
    clear = photo(32, 32, seed=2).convert("RGBA")
    clear.putalpha(Image.new("L", (32, 32), 100))
    (src / "clear.png").write_bytes(encode(clear))
    (src / "bad.jpg").write_bytes(b"\xff\xd8\xff truncated")
    (src / "sub dir").mkdir()
    (src / ROTATED).write_bytes(_rotated_jpeg())
    (src / GREY16).write_bytes(_grey16())
    s = run_local(UpscaleOptions(str(src), str(tmp_path / "out"), checkpoint=checkpoint, precision="fp32",
                                 run_id="r1"))
    return s, tmp_path / "out"


def test_the_report_shows_what_was_done(report_run):
    s, out = report_run
    page_path = out / "_manifest" / "report-r1.html"
    assert s["report"].endswith("report-r1.html") and page_path.exists()
    p = _Page()
    p.feed(page_path.read_text())
    assert {"totals", "failures"} <= p.ids
    text = page_path.read_text()
    assert "bad.jpg: bad image" in text and "<b>4</b> photo(s) written" in text and "hard" in text
    # before and after at the same display size, for each photo
    pairs = [i for i in p.imgs if i.get("alt") in ("before", "after")]
    assert len(pairs) == 8
    for before, after in zip(pairs[::2], pairs[1::2]):
        assert _image(before["src"]).size == _image(after["src"]).size
    # the slider region: before and after crops of one size at 100 % (one output px per px)
    hundred = [i for i in p.imgs if "100 %" in i.get("alt", "")]
    assert len(hundred) == 8 and _image(hundred[0]["src"]).size == _image(hundred[1]["src"]).size
    assert len([i for i in p.inputs if i.get("type") == "range"]) == 4
    # links to the full outputs, relative to the report and URL-encoded
    for link in [x for x in p.links if x.endswith((".png", ".jpg")) and not x.startswith("report-")]:
        assert (page_path.parent / unquote(link)).resolve().exists(), link
    assert {"../wide.png", "../clear.png", "../sub%20dir/photo%20%C3%A9%20%231.jpg"} <= set(p.links)
    # transparency is kept (PNG) and shown over the checkerboard
    alpha = [i for i in pairs if _image(i["src"]).mode == "RGBA"]
    assert alpha and "chk" in p.classes
    # the archive's page: every run, each input's latest state
    status = (out / "_manifest" / "status.html").read_text()
    assert "<b>4</b> written" in status and "<b>1</b> failed" in status and "report-r1.html" in status


def _shown(p: _Page, alt: str) -> list[np.ndarray]:
    return [np.asarray(_image(i["src"]).convert("L"), np.float32) for i in p.imgs if i.get("alt") == alt]


def _row_images(text: str, name: str) -> _Page:
    """The images of the report's row for input `name`."""
    row = next(r for r in text.split("<tr class=photo>")[1:] if f">{name}</a>" in r)
    p = _Page()
    p.feed(row)
    return p


def test_a_rotated_photo_is_shown_upright_before_and_after(report_run):
    _, out = report_run
    row = _row_images((out / "_manifest" / "report-r1.html").read_text(), ROTATED)
    (before,), (after,) = _shown(row, "before"), _shown(row, "after")
    assert before.shape == after.shape and before.shape[0] > before.shape[1]   # portrait, as the output is
    # the same place: the dark third of the stored image is the top after the turn
    small = lambda a: np.asarray(Image.fromarray(a).resize((6, 12)), np.float32)  # noqa: E731
    assert np.abs(small(before) - small(after)).mean() < 25
    assert small(before)[:4].mean() < small(before)[-4:].mean() - 30
    # and the slider's two crops are of the same region
    b100, a100 = _shown(row, "before, 100 %"), _shown(row, "after, 100 %")
    assert np.abs(b100[0].mean() - a100[0].mean()) < 25


def test_16_bit_grey_is_shown_tone_mapped_to_8_bits(report_run):
    _, out = report_run
    row = _row_images((out / "_manifest" / "report-r1.html").read_text(), GREY16)
    for alt in ("before", "after", "before, 100 %", "after, 100 %"):
        (im,) = _shown(row, alt)
        # 20000..40000 of 65535 is a mid grey (78..156 of 255), not white
        assert 60 < im.mean() < 180 and (im > 250).mean() < 0.05, (alt, im.mean())
        assert im.std() > 3, alt


def test_each_input_is_counted_once_in_the_summary_and_the_report(report_run, checkpoint):
    from pipeline.local import run_local
    from pipeline.options import UpscaleOptions
    _, out = report_run
    src = out.parent / "in"
    (src / "new.png").write_bytes(encode(photo(20, 20, seed=5)))
    (src / ".hidden.png").write_bytes(encode(photo(8, 8)))
    s = run_local(UpscaleOptions(str(src), str(out), checkpoint=checkpoint, precision="fp32", run_id="r2"))
    # bad.jpg is still bad (not tried again) and only that; the hidden file is the one not read
    assert [n for n, _ in s["still_bad"]] == ["bad.jpg"] and [n for n, _ in s["not_read"]] == [".hidden.png"]
    assert s["ok"] + s["failed"] + s["skipped"] + len(s["still_bad"]) == s["inputs"] == 6
    text = (out / "_manifest" / "report-r2.html").read_text()
    assert "Of 6 inputs: <b>1</b> photo(s) written, <b class=failed>0</b> failed, 4 already done" in text
    assert "1 still bad" in text and "1 other entries not read" in text


def test_the_status_page_links_only_reports_that_exist(report_run):
    from pipeline.manifest import ManifestRow, write_row
    from pipeline.report import write_status_page
    from storage import Store
    _, out = report_run
    dst = Store(str(out))
    # a run killed before its end: its rows are there, its report never was
    write_row(dst, ManifestRow(run_id="killed", input="wide.png", status="ok", output="wide.png"))
    write_status_page(dst)
    p = _Page()
    p.feed((out / "_manifest" / "status.html").read_text())
    reports = [x for x in p.links if x.startswith("report-")]
    assert reports == ["report-r1.html"]
    assert all((out / "_manifest" / unquote(x)).exists() for x in reports)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_the_report_renders_in_a_real_browser(report_run, tmp_path):
    _, out = report_run
    page = out / "_manifest" / "report-r1.html"
    sizes = {}
    for zoom in (1, 2):
        shot = tmp_path / f"shot{zoom}.png"
        r = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                            "--window-size=1400,1000", f"--force-device-scale-factor={zoom}", page.as_uri()],
                           capture_output=True, text=True, timeout=120)
        assert shot.exists(), r.stderr[-2000:]
        im = Image.open(shot).convert("RGB")
        sizes[zoom] = im.size
        # the page was drawn: its table lines, the checkerboard and the photos give many colours
        colours = im.resize((280, 200)).getcolors(280 * 200)
        assert colours is None or len(colours) > 200, zoom
    assert sizes[2] == (2 * sizes[1][0], 2 * sizes[1][1])
    # what the browser shows of each photo, read back from its own canvas: before and after at
    # the same size and in the same orientation, 16-bit grey as a mid grey, not white
    shown = {r["name"]: r for r in _in_the_browser(page, tmp_path)}
    assert set(shown) == {"wide.png", "clear.png", ROTATED, GREY16}
    for name, r in shown.items():
        for a, b in (("before", "after"), ("b100", "a100")):
            assert abs(r[a]["w"] - r[b]["w"]) <= 1 and abs(r[a]["h"] - r[b]["h"]) <= 1, (name, a, r[a], r[b])
    rot = shown[ROTATED]
    assert rot["after"]["h"] > rot["after"]["w"]
    assert np.abs(np.subtract(rot["before"]["lum"], rot["after"]["lum"])).mean() < 25
    for key in ("before", "after", "b100", "a100"):
        assert 60 < np.mean(shown[GREY16][key]["lum"]) < 180, (key, shown[GREY16][key])


# After the page has loaded: for each photo's row, each image's size on screen and its 8x8
# luminance as the browser drew it, as JSON in a <pre id=probe>.
PROBE = """<script>
window.addEventListener('load', function () {
  function stats(img) {
    var c = document.createElement('canvas'); c.width = 8; c.height = 8;
    var g = c.getContext('2d'); g.drawImage(img, 0, 0, 8, 8);
    var d = g.getImageData(0, 0, 8, 8).data, lum = [];
    for (var i = 0; i < d.length; i += 4) lum.push((d[i] + d[i + 1] + d[i + 2]) / 3);
    var r = img.getBoundingClientRect();
    return {w: r.width, h: r.height, lum: lum};
  }
  var out = [];
  document.querySelectorAll('tr.photo').forEach(function (tr) {
    function pick(alt) { return stats(tr.querySelector("img[alt='" + alt + "']")); }
    out.push({name: tr.querySelector('a').textContent, before: pick('before'), after: pick('after'),
              b100: pick('before, 100 %'), a100: pick('after, 100 %')});
  });
  var pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def _in_the_browser(page, tmp_path) -> list[dict]:
    import html
    import re
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text() + PROBE)
    r = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                        "--virtual-time-budget=10000", probed.as_uri()], capture_output=True, text=True, timeout=120)
    m = re.search(r"<pre id=\"probe\">(.*?)</pre>", r.stdout, re.S)
    assert m, (r.stdout[-1000:], r.stderr[-2000:])
    return json.loads(html.unescape(m.group(1)))
