"""Memory of each actor of the Ray upscale pipeline: runs the pipeline on a few sample photos
with the shipped model and samples every Ray worker process's memory from /proc (Linux) twice
a second; prints, per actor kind, the peak RSS and the peak private memory (USS: pages no
other process shares, i.e. what this actor itself costs beyond the shared libraries).

    python bench/actor_memory.py [--images 4] [--size 128]

One actor per pool, one intra-op thread each (PATCHSCALER_THREADS, default 1), fp32.
Run it from the checkout whose code you want to measure (PYTHONPATH=that checkout)."""
import argparse
import os
import re
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image  # noqa: E402

KINDS = ("DecodeGRM", "PatchDiTPool", "StitchWrite")


def proc_memory(pid: int) -> tuple[int, int]:
    """(RSS, private) bytes of a process, from /proc/PID/smaps_rollup."""
    rss = private = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k == "Rss":
                rss = int(v.split()[0]) * 1024
            elif k in ("Private_Clean", "Private_Dirty"):
                private += int(v.split()[0]) * 1024
    return rss, private


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[1])


def ray_workers() -> dict[int, str]:
    """pid -> process title of the Ray worker processes of this script's own Ray (descendants
    of this process: other Rays on the host are not counted)."""
    out, me = {}, os.getpid()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            title = Path(f"/proc/{d}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            if not title.startswith("ray::"):
                continue
            p = int(d)
            while p not in (0, 1, me):
                p = _parent(p)
        except (OSError, ValueError):
            continue
        if p == me:
            out[int(d)] = title
    return out


def kind_of(title: str) -> str | None:
    for k in KINDS:
        if k in title:
            return k
    return None


class Sampler(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.peak: dict[tuple[str, int], tuple[int, int]] = {}

    def run(self):
        while not self.stop.wait(0.5):
            for pid, title in ray_workers().items():
                k = kind_of(title)
                if k is None:
                    continue
                try:
                    rss, priv = proc_memory(pid)
                except OSError:
                    continue
                old = self.peak.get((k, pid), (0, 0))
                self.peak[(k, pid)] = (max(old[0], rss), max(old[1], priv))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--size", type=int, default=128, help="LR crop size (px)")
    a = ap.parse_args()
    import ray
    from pipeline.graph import run_pipeline
    from pipeline.options import UpscaleOptions
    samples = sorted((Path(__file__).resolve().parents[1] / "patchscaler" / "samples").glob("*.jpg"))
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        for i in range(a.images):
            im = Image.open(samples[i % len(samples)]).convert("RGB")
            im.crop((0, 0, a.size, a.size)).save(src / f"p{i}.png")
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        sampler = Sampler()
        sampler.start()
        s = run_pipeline(UpscaleOptions(str(src), str(Path(tmp) / "out"), report=False))
        sampler.stop.set()
        sampler.join()
        ray.shutdown()
    print(f"{s['ok']} images ok, {s['failed']} failed")
    print(f"{'actor':<16}{'processes':>10}{'peak RSS MiB':>14}{'peak private MiB':>18}")
    tot_rss = tot_priv = 0
    for k in KINDS:
        vals = [v for (kk, _), v in sampler.peak.items() if kk == k]
        if not vals:
            continue
        rss, priv = max(v[0] for v in vals), max(v[1] for v in vals)
        tot_rss += sum(v[0] for v in vals)
        tot_priv += sum(v[1] for v in vals)
        print(f"{k:<16}{len(vals):>10}{rss / 2**20:>14.0f}{priv / 2**20:>18.0f}")
    print(f"{'all actors':<16}{'':>10}{tot_rss / 2**20:>14.0f}{tot_priv / 2**20:>18.0f}")


if __name__ == "__main__":
    main()
