"""Progress that tells the truth: the ETA printed half-way through a fixed small workload is
within a factor of 2 of the time the run really took from there; rates leave out start-up."""
import logging
import re
import time

from helpers import encode, photo


def _seconds(text: str) -> float:
    m = re.match(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$", text)
    h, mi, s = (int(x or 0) for x in m.groups())
    return 3600 * h + 60 * mi + s


def test_the_eta_half_way_is_within_a_factor_of_2_of_the_real_remaining_time(checkpoint, tmp_path, caplog):
    from pipeline.local import run_local
    from pipeline.options import UpscaleOptions
    from pipeline.progress import Progress
    src = tmp_path / "in"
    src.mkdir()
    for i in range(6):
        (src / f"p{i}.png").write_bytes(encode(photo(128, 96, seed=i)))
    seen = []

    class Clock(logging.Handler):
        def emit(self, record):
            seen.append((time.monotonic(), record.getMessage()))
    handler = Clock()
    logging.getLogger("patchscaler.progress").addHandler(handler)
    try:
        with caplog.at_level(logging.INFO, logger="patchscaler.progress"):
            run_local(UpscaleOptions(str(src), str(tmp_path / "out"), checkpoint=checkpoint, precision="fp32",
                                     report=False), progress=Progress(interval=0, tty=False))
        end = time.monotonic()
    finally:
        logging.getLogger("patchscaler.progress").removeHandler(handler)
    mid = [(t, m) for t, m in seen if m.startswith("upscale: 3/6 img") and "ETA" in m]
    assert mid, [m for _, m in seen if m.startswith("upscale")]
    t, line = mid[0]
    eta = _seconds(re.search(r"ETA (\S+)", line).group(1).rstrip(","))
    real = end - t
    assert real / 2 <= max(eta, 1) <= 2 * real + 1, (line, real)
