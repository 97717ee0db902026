"""What every benchmark here shares: threading set explicitly before torch loads, the photos,
interleaved repeats, and a header line that says how the figures were taken.

Why the threading: on a shared machine torch's OpenMP threads spin while they wait; with another
process busy one image took 92 s with the default wait policy and 17 s with
OMP_WAIT_POLICY=PASSIVE (bench/busy_host.py measures it). libgomp reads the variable when it
loads, so `start()` must run before anything imports torch."""
from __future__ import annotations

import contextlib
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "patchscaler" / "samples"


def add_args(ap, threads: int = 2) -> None:
    ap.add_argument("--threads", type=int, default=threads, help="torch intra-op threads (default %(default)s)")
    ap.add_argument("--wait-policy", default="PASSIVE", choices=["PASSIVE", "ACTIVE"],
                    help="OMP_WAIT_POLICY (default PASSIVE: idle threads sleep instead of spinning)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats (default %(default)s)")


def start(a):
    """Set the threading, then import torch; print one line saying so. Returns torch."""
    if "torch" in sys.modules:
        raise RuntimeError("bench.harness.start() must run before torch is imported")
    os.environ["OMP_WAIT_POLICY"] = a.wait_policy
    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    os.environ["MKL_NUM_THREADS"] = str(a.threads)
    sys.path.insert(0, str(ROOT))
    import torch
    torch.set_num_threads(a.threads)
    print(f"# {machine()}; torch {torch.__version__}; {a.threads} threads, OMP_WAIT_POLICY={a.wait_policy}; "
          f"A/B interleaved, {a.repeats} repeats; load average at start {os.getloadavg()[0]:.2f}")
    return torch


def machine() -> str:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):   # no /proc/cpuinfo (not Linux): the platform's name
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import torch
    return f"{model}, {os.cpu_count()} logical cores, {torch.backends.cpu.get_cpu_capability()}"


def photo_files(folder: str | None, n: int) -> list[Path]:
    root = Path(folder) if folder else SAMPLES
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise SystemExit(f"no photos in {root}")
    return files[:n]


def lr_photos(folder: str | None, n: int, lr_size: int, seed: int = 0, encoded: bool = False) -> list[tuple[str, object]]:
    """(name, imageio.Prepared) for n photos: an HR centre crop of 4 x lr_size pixels made LR by
    the training degradation (seeded per photo), encoded to PNG and decoded as the CLI would
    (encoded=True: the PNG bytes)."""
    import io
    import zlib

    import torch
    from PIL import Image

    from patchscaler import imageio
    from patchscaler.degrade import degrade
    out = []
    files = photo_files(folder, n)
    for i in range(n):  # fewer files than n: the same photos again, other degradations
        p = files[i % len(files)]
        im = Image.open(p).convert("RGB")
        s = min(im.size)
        left, top = (im.width - s) // 2, (im.height - s) // 2
        hr = im.crop((left, top, left + s, top + s)).resize((4 * lr_size,) * 2, Image.BICUBIC)
        x = torch.from_numpy(__import__("numpy").array(hr)).permute(2, 0, 1)[None].float() / 255
        g = torch.Generator().manual_seed((seed + i // len(files)) * 7919 + zlib.crc32(p.name.encode()))
        lr = degrade(x, g)
        lr = torch.nn.functional.interpolate(lr, size=(lr_size, lr_size), mode="bicubic", antialias=True,
                                             align_corners=False) if lr.shape[-1] != lr_size else lr
        buf = io.BytesIO()
        Image.fromarray((lr[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype("uint8")).save(buf, "PNG")
        name = p.name if i < len(files) else f"{p.stem}-{i // len(files)}{p.suffix}"
        out.append((name, imageio.decode(buf.getvalue()) if not encoded else buf.getvalue()))
    return out


def timed(fn, sync=None) -> float:
    """Seconds of fn(); `sync` (e.g. torch.cuda.synchronize) is called before and after, so
    that work queued on a GPU is counted."""
    if sync is not None:
        sync()
    t = time.perf_counter()
    fn()
    if sync is not None:
        sync()
    return time.perf_counter() - t


def interleaved(variants: dict, repeats: int, sync=None) -> dict[str, list[float]]:
    """Run every variant once per repeat, in turn (A B A B ...), after one warm-up each."""
    for fn in variants.values():
        fn()
    times = {k: [] for k in variants}
    for _ in range(repeats):
        for k, fn in variants.items():
            times[k].append(timed(fn, sync))
    return times


def med(xs) -> float:
    return statistics.median(xs)


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


class BusyNeighbour:
    """Another process keeping `cores` cores busy (a shared host), for the benchmark's duration."""

    def __init__(self, cores: int):
        self.cores, self.procs = cores, []

    def __enter__(self):
        import subprocess
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.cores)]
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.kill()
            p.wait()


def held_out(data: str, n: int) -> list[Path]:
    """The held-out photos of DATA/train (`patchscaler train`'s split: no model here saw them)."""
    from jobs.train_data import list_photos, split
    return split(list_photos(Path(data) / "train"))[1][:n]


def held_out_pair(path: Path, lr_size: int, family: str, seed: int = 0):
    """(imageio.Prepared LR, HR uint8 (H, W, 3)): the photo's HR centre crop of 4 x lr_size px and
    its LR by `patchscaler evaluate`'s seeded degradation of `family`, through PNG as the CLI reads it."""
    import io

    from PIL import Image

    from jobs.evaluate import _u8, synthetic_lr
    from jobs.train_data import load_rgb
    from patchscaler import imageio
    img = load_rgb(path)
    H, W = img.shape[-2:]
    c = min(4 * lr_size, H, W) // 16 * 16
    y0, x0 = (H - c) // 2, (W - c) // 2
    hr = img[None, :, y0:y0 + c, x0:x0 + c]
    buf = io.BytesIO()
    Image.fromarray(_u8(synthetic_lr(hr, path.name, seed, family))).save(buf, format="PNG")
    return imageio.decode(buf.getvalue()), _u8(hr)
