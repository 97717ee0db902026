"""Progress that tells the truth: the ETA printed half-way through a fixed small workload is
within a factor of 2 of the time the run really took from there, and so is the ETA after the
large photos of a run of large then small ones (the work left, not the photos left); rates
leave out start-up."""
import logging
import re
import time

from helpers import encode, photo


def _seconds(text: str) -> float:
    m = re.match(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$", text)
    h, mi, s = (int(x or 0) for x in m.groups())
    return 3600 * h + 60 * mi + s


def _run(checkpoint, src, out) -> tuple[list[tuple[float, str]], float]:
    """The progress lines of an in-process run, each with when it came, and when the run ended."""
    from pipeline.local import run_local
    from pipeline.options import UpscaleOptions
    from pipeline.progress import Progress
    seen = []

    class Clock(logging.Handler):
        def emit(self, record):
            seen.append((time.monotonic(), record.getMessage()))
    handler = Clock()
    logging.getLogger("patchscaler.progress").addHandler(handler)
    try:
        logging.getLogger("patchscaler.progress").setLevel(logging.INFO)
        run_local(UpscaleOptions(str(src), str(out), checkpoint=checkpoint, precision="fp32", report=False),
                  progress=Progress(interval=0, tty=False))
        return seen, time.monotonic()
    finally:
        logging.getLogger("patchscaler.progress").removeHandler(handler)
        logging.getLogger("patchscaler.progress").setLevel(logging.NOTSET)


def _check_eta(seen, end, at: str) -> None:
    mid = [(t, m) for t, m in seen if m.startswith(f"upscale: {at} img") and "ETA" in m]
    assert mid, [m for _, m in seen if m.startswith("upscale")]
    t, line = mid[0]
    eta = _seconds(re.search(r"ETA (\S+)", line).group(1).rstrip(","))
    real = end - t
    assert real / 2 <= max(eta, 1) <= 2 * real + 1, (line, real)


def test_the_eta_half_way_is_within_a_factor_of_2_of_the_real_remaining_time(checkpoint, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(6):
        (src / f"p{i}.png").write_bytes(encode(photo(128, 96, seed=i)))
    _check_eta(*_run(checkpoint, src, tmp_path / "out"), "3/6")


def test_the_eta_after_large_photos_counts_the_small_ones_left_as_small(checkpoint, tmp_path):
    """Two large photos, then three small ones: after the large ones, the photos left are three
    but their work is a fraction of one large photo's. An ETA of "3 photos at the last photo's
    time" would be several times too long."""
    src = tmp_path / "in"
    src.mkdir()
    for i in range(2):
        (src / f"a{i}.png").write_bytes(encode(photo(192, 144, seed=i)))
    for i in range(3):
        (src / f"b{i}.png").write_bytes(encode(photo(48, 36, seed=i)))
    _check_eta(*_run(checkpoint, src, tmp_path / "out"), "2/5")


def test_the_ray_engines_whole_run_eta_comes_from_pieces_and_patches_not_photos(monkeypatch):
    """Two large photos of 4 pieces (100 patches each), then three small ones of 1 piece (5
    patches): after the large ones, 3 photos are left but only 3 small pieces. The photos' own
    rate (one photo per 50 s) would say 150 s; the stages' work says much less."""
    import types

    import pipeline.progress as progress
    from pipeline.progress import PipelineProgress, Progress
    now = [0.0]
    monkeypatch.setattr(progress, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    pp = PipelineProgress(None, 5, Progress(interval=0, tty=False))

    def snap(photos, pieces, patches):
        return {"pieces": [5, 11], "grm": [pieces, 11], "stitch": [pieces, 11], "photos": [photos, 5],
                "hard": [patches // 2, 815 // 2], "easy": [patches // 2, 815 // 2]}
    pp._apply(snap(1, 4, 400))
    now[0] = 50.0
    pp._apply(snap(2, 8, 800))
    whole = pp.p.stages["photos"].eta()
    assert whole is not None and whole < 50, whole
