"""Which engine a single host should run by default: `patchscaler upscale` on the same photos
with `--engine local` and with `--engine ray` (a local Ray of its own), as a user runs them,
interleaved (local, ray, local, ray, ...). Prints each run's wall time and the peak memory of
its whole process tree (the command and everything it started: for Ray, the raylet, GCS and
every worker), sampled every 0.2 s, and the ratios.

    OMP_WAIT_POLICY=PASSIVE python bench/engines.py [--photos patchscaler/samples] [--repeats 2]

Threads: the command's own defaults (the in-process engine uses torch's intra-op threads, one
per core; each Ray actor one), OMP_WAIT_POLICY=PASSIVE (set here if unset)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from actors.runtime import passive_openmp  # noqa: E402

passive_openmp()   # before torch loads, here and in the processes this starts

import argparse  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")


def tree_rss(pid: int) -> int:
    """Resident bytes of `pid` and all its descendants, from /proc."""
    parent, rss = {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{d}/statm") as f:
                rss[int(d)] = int(f.read().split()[1]) * PAGE
            parent[int(d)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    tree, frontier = {pid}, [pid]
    while frontier:
        kids = [c for c, p in parent.items() if p in frontier and c not in tree]
        tree.update(kids)
        frontier = kids
    return sum(rss.get(p, 0) for p in tree)


def run(engine: str, photos: str, out: str, extra: list[str]) -> tuple[float, float]:
    env = {**os.environ, "RAY_ADDRESS": ""}
    cmd = [sys.executable, "-m", "jobs.cli", "upscale", photos, out, "--engine", engine, "--no-report", *extra]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = [0]

    def sample():
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss(proc.pid))
            time.sleep(0.2)
    th = threading.Thread(target=sample, daemon=True)
    th.start()
    err = proc.communicate()[1]
    wall = time.perf_counter() - t0
    th.join()
    if proc.returncode != 0:
        raise SystemExit(f"{engine}: exit {proc.returncode}\n{err[-3000:]}")
    return wall, peak[0] / 2**30


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", default=str(ROOT / "patchscaler" / "samples"))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--checkpoint", help="default: the shipped model")
    a = ap.parse_args()
    extra = ["--checkpoint", a.checkpoint] if a.checkpoint else []
    tmp = Path(tempfile.mkdtemp(prefix="ps-engines-"))
    n = len([p for p in Path(a.photos).iterdir() if p.suffix.lower() in (".jpg", ".png")])
    print(f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, the command's default threads, {os.cpu_count()} "
          f"CPUs; {n} photos from {a.photos}", flush=True)
    res: dict[str, list[tuple[float, float]]] = {"local": [], "ray": []}
    try:
        for i in range(a.repeats):
            for engine in ("local", "ray"):
                out = tmp / f"{engine}{i}"
                wall, gib = run(engine, a.photos, str(out), extra)
                res[engine].append((wall, gib))
                print(f"{engine:>5} run {i + 1}: {wall:.1f} s, peak process-tree memory {gib:.2f} GiB", flush=True)
                shutil.rmtree(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = {e: statistics.median(w for w, _ in r) for e, r in res.items()}
    mem = {e: max(g for _, g in r) for e, r in res.items()}
    print(f"ray / local: wall {med['ray'] / med['local']:.2f}x ({med['ray']:.0f} s / {med['local']:.0f} s, "
          f"median), peak memory {mem['ray'] / mem['local']:.1f}x ({mem['ray']:.2f} / {mem['local']:.2f} GiB)")


if __name__ == "__main__":
    main()
