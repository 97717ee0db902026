"""The Ray pipeline vs the in-process engine on the same photos and model, interleaved
(in-process, Ray, in-process, Ray, ...; Ray's start-up measured apart). Prints the wall-time
ratio and the peak process-tree memory of each (the in-process run: this process; the Ray run:
this process plus every Ray process), optionally with a neighbour process keeping cores busy.

    python bench/pipeline_overhead.py [--photos DIR] [--n 8] [--lr-size 128] [--repeats 2] [--busy 0]
    python bench/pipeline_overhead.py --tiny --n 32 --lr-size 48 --streaming   # memory does not grow with N
"""
import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import harness

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--photos", help="folder of HR photos (default: the bundled samples)")
ap.add_argument("--n", type=int, default=8)
ap.add_argument("--lr-size", type=int, default=128)
ap.add_argument("--checkpoint", help="default: the shipped model")
ap.add_argument("--tiny", action="store_true", help="a tiny random model instead (fast; overhead-dominated)")
ap.add_argument("--busy", type=int, default=0, help="cores a neighbour process keeps busy")
ap.add_argument("--streaming", action="store_true", help="also run 4N images: peak memory 4N / N")
harness.add_args(ap, threads=1)
a = ap.parse_args()
a.repeats = max(1, a.repeats)
torch = harness.start(a)
os.environ["PATCHSCALER_THREADS"] = str(a.threads)  # the actors' intra-op threads
tmp = Path(tempfile.mkdtemp(prefix="ps-bench-"))

ckpt = a.checkpoint
if a.tiny:
    from patchscaler import PatchScaler, tiny_config
    from patchscaler.checkpoint import save
    from patchscaler.rtm import RTM
    torch.manual_seed(0)
    m = PatchScaler(tiny_config())
    m.rtm = RTM(torch.randn(64, 32), torch.randn(64, 48, 8, 8))
    ckpt = str(tmp / "tiny.safetensors")
    save(m, ckpt)


def make_inputs(n: int) -> str:
    d = tmp / f"in{n}"
    d.mkdir()
    for name, png in harness.lr_photos(a.photos, n, a.lr_size, encoded=True):
        (d / (Path(name).stem + ".png")).write_bytes(png)
    return str(d)


TICK = os.sysconf("SC_CLK_TCK")


def ray_processes() -> dict[int, tuple[str, int, float]]:
    """pid -> (kind, RSS bytes, CPU seconds so far) for this process and every Ray process,
    read from /proc (Linux). Kind: the driver, each actor class / Ray worker state (from the
    `ray::` process title), raylet, gcs_server."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if int(d.name) == os.getpid():
                kind = "driver"
            elif "ray::" in cmd:
                kind = "actor/worker " + cmd.split("ray::", 1)[1].split()[0][:60]
            elif "raylet" in cmd or "gcs_server" in cmd:
                kind = "raylet" if "raylet" in cmd else "gcs_server"
            else:
                continue
            rss = next(int(line.split()[1]) * 1024 for line in (d / "status").read_text().splitlines()
                       if line.startswith("VmRSS:"))
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            out[int(d.name)] = (kind, rss, (int(fields[11]) + int(fields[12])) / TICK)  # utime + stime
        except (OSError, ValueError, IndexError, StopIteration):
            continue
    return out


class PeakRSS:
    """Samples the Ray processes every 0.1 s; keeps the peak total RSS and what made it up then,
    and the CPU seconds each kind of process used while sampling."""

    def __init__(self):
        self.peak, self.parts, self._stop = 0, {}, threading.Event()
        self.cpu_start, self.cpu_last = {}, {}

    def _sample(self):
        while not self._stop.is_set():
            procs = ray_processes()
            parts: dict[str, int] = {}
            for pid, (kind, rss, cpu) in procs.items():
                parts[kind] = parts.get(kind, 0) + rss
                self.cpu_start.setdefault(pid, (kind, cpu if self.first else 0.0))
                self.cpu_last[pid] = (kind, cpu)
            self.first = False
            if sum(parts.values()) > self.peak:
                self.peak, self.parts = sum(parts.values()), parts
            time.sleep(0.1)

    def cpu_by_kind(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for pid, (kind, cpu) in self.cpu_last.items():
            out[kind] = out.get(kind, 0.0) + cpu - self.cpu_start[pid][1]
        return out

    def __enter__(self):
        self.first = True   # processes alive at the start: count only what they use from now on
        self.t = threading.Thread(target=self._sample, daemon=True)
        self.t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.t.join()


from pipeline.graph import init_ray, run_pipeline  # noqa: E402
from pipeline.local import run_local  # noqa: E402
from pipeline.options import UpscaleOptions  # noqa: E402

src = make_inputs(a.n)
opts = dict(checkpoint=ckpt, report=False, precision="fp32")
runs = {"in-process": [], "Ray": []}
peaks = {"in-process": 0, "Ray": 0}
parts, cpu = {}, {}


def run(kind: str, i: int):
    dst = str(tmp / f"{kind}-{i}")
    with PeakRSS() as mem:
        t = time.perf_counter()
        s = (run_local if kind == "in-process" else run_pipeline)(UpscaleOptions(src, dst, **opts))
        runs[kind].append(time.perf_counter() - t)
    assert s["ok"] == a.n, s["errors"]
    if mem.peak > peaks[kind]:
        peaks[kind], parts[kind] = mem.peak, mem.parts
    cpu[kind] = mem.cpu_by_kind()


with harness.BusyNeighbour(a.busy):
    run("in-process", -1)  # warm-up: model load, page cache
    local_peak = peaks["in-process"]
    t = time.perf_counter()
    init_ray()
    t_init = time.perf_counter() - t
    for i in range(a.repeats):
        run("in-process", i)
        run("Ray", i)
    if a.streaming:
        src = make_inputs(4 * a.n)
        a.n *= 4
        peak_n, peaks["Ray"] = peaks["Ray"], 0
        run("Ray", 99)

m = {k: harness.med(v) for k, v in runs.items()}
print(f"{len(runs['Ray'][:a.repeats])} repeats, {a.n if not a.streaming else a.n // 4} photos {a.lr_size} px, "
      f"model {'tiny' if a.tiny else (ckpt or 'shipped')}, neighbour busy cores: {a.busy}")
print(f"ray start-up (apart)       {t_init:6.1f} s")
print(f"in-process                 {m['in-process']:6.1f} s   ({', '.join(f'{x:.1f}' for x in runs['in-process'])})")
print(f"Ray pipeline               {m['Ray']:6.1f} s   ({', '.join(f'{x:.1f}' for x in runs['Ray'][:a.repeats])})")
print(f"Ray / in-process wall: {m['Ray'] / m['in-process']:.2f}x")
print(f"peak RSS: in-process {local_peak / 2**30:.2f} GiB, Ray (driver + all Ray processes) "
      f"{(peak_n if a.streaming else peaks['Ray']) / 2**30:.2f} GiB: {(peak_n if a.streaming else peaks['Ray']) / local_peak:.1f}x")
if a.streaming:
    print(f"peak RSS 4N / N images: {peaks['Ray'] / peak_n:.2f}")
print("Ray's peak, by process (GiB): " + ", ".join(f"{k} {v / 2**30:.2f}" for k, v in
                                                   sorted(parts.get("Ray", {}).items(), key=lambda kv: -kv[1])))
c = cpu.get("Ray", {})
print(f"CPU seconds during the last Ray run, by process (total {sum(c.values()):.0f} s; in-process run: "
      f"{sum(cpu.get('in-process', {}).values()):.0f} s): " + ", ".join(
          f"{k} {v:.1f}" for k, v in sorted(c.items(), key=lambda kv: -kv[1]) if v >= 0.05))
