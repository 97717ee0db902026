"""The run's report as an archivist uses it (both engines write it; the in-process one here):
before and after at the same display size, a 100 % slider region, a link to each full output,
alpha over a checkerboard, the difficulty map's legend, failures with reasons, run totals, and
the archive's status page. Checked in the HTML, and in a real browser where Debian's chromium is
installed (`apt-get install chromium`): screenshots at two zoom levels show the page drawn."""
import base64
import io
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
from PIL import Image

from helpers import encode, photo


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
    assert "bad.jpg: bad image" in text and "<b>2</b> photo(s) written" in text and "hard" in text
    # before and after at the same display size, for each photo
    pairs = [i for i in p.imgs if i.get("alt") in ("before", "after")]
    assert len(pairs) == 4
    for before, after in zip(pairs[::2], pairs[1::2]):
        assert _image(before["src"]).size == _image(after["src"]).size
    # the slider region: before and after crops of one size at 100 % (one output px per px)
    hundred = [i for i in p.imgs if "100 %" in i.get("alt", "")]
    assert len(hundred) == 4 and _image(hundred[0]["src"]).size == _image(hundred[1]["src"]).size
    assert len([i for i in p.inputs if i.get("type") == "range"]) == 2
    # links to the full outputs, relative to the report
    for link in [x for x in p.links if x.endswith(".png") and not x.startswith("report-")]:
        assert (page_path.parent / link).resolve().exists(), link
    assert {"../wide.png", "../clear.png"} <= set(p.links)
    # transparency is kept (PNG) and shown over the checkerboard
    alpha = [i for i in pairs if _image(i["src"]).mode == "RGBA"]
    assert alpha and "chk" in p.classes
    # the archive's page: every run, each input's latest state
    status = (out / "_manifest" / "status.html").read_text()
    assert "<b>2</b> written" in status and "<b>1</b> failed" in status and "report-r1.html" in status


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
