"""The upscale driver at archive scale: a synthetic archive of tiny photos (default 2 000 and
20 000, 16x16 px) through the Ray engine, with the stand-in model of bench/big_photos.py (the
shipped geometry, a bicubic GRM and a one-block Patch-DiT: the work per photo is small, so
what grows is what the driver holds per photo). For each size, in a fresh process: the
driver's peak RSS (the driver only: the actors are other processes) and the wall time; then
the same command again, which finds every photo done (resume): its wall time and peak RSS.
The runs use the default --wave (2000 photos per Ray Data run), so 20 000 photos are 10 waves.

    OMP_WAIT_POLICY=PASSIVE python bench/archive_scale.py [--sizes 2000,20000] [--px 16]

Threads: 1 intra-op thread per actor (the pipeline's default), OMP_WAIT_POLICY=PASSIVE (set
here if unset). Scratch goes to a temporary folder, removed at the end."""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from actors.runtime import passive_openmp  # noqa: E402

passive_openmp()   # before torch loads, here and in the processes this starts

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402


def make_archive(folder: Path, n: int, px: int) -> None:
    import numpy as np
    from PIL import Image
    for i in range(n):
        sub = folder / f"roll{i // 1000:03d}"     # an archive has folders
        sub.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(i)
        Image.fromarray(rng.integers(0, 256, (px, px, 3), dtype=np.uint8)).save(sub / f"scan{i:06d}.png")


def run_one(src: str, dst: str, ckpt: str, run_id: str) -> dict:
    """In this (fresh) process: one Ray run of SRC into DST; wall time and the driver's peak RSS."""
    from pipeline.graph import run_pipeline
    from pipeline.options import UpscaleOptions
    from pipeline.progress import Progress
    t0 = time.perf_counter()
    s = run_pipeline(UpscaleOptions(src, dst, checkpoint=ckpt, precision="fp32", report=True, run_id=run_id,
                                    actor_cpus=0.25), Progress(interval=60))
    return {"ok": s["ok"], "failed": s["failed"], "skipped": s["skipped"], "seconds": time.perf_counter() - t0,
            "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def in_fresh_process(*args) -> dict:
    code = (f"import json, sys; sys.path.insert(0, {str(ROOT)!r}); "
            f"from bench.archive_scale import run_one; print('RESULT', json.dumps(run_one(*{list(args)!r})))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    line = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
    if not line:
        raise SystemExit(r.stderr[-3000:])
    return json.loads(line[0][7:])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="2000,20000")
    ap.add_argument("--px", type=int, default=16)
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT / "bench"))
    from big_photos import standin_checkpoint
    tmp = Path(tempfile.mkdtemp(prefix="ps-archive-"))
    print(f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, 1 thread per actor; scratch {tmp}", flush=True)
    try:
        ckpt = standin_checkpoint(str(tmp / "standin.safetensors"))
        first = {}
        for n in (int(x) for x in a.sizes.split(",")):
            src, dst = tmp / f"in{n}", tmp / f"out{n}"
            make_archive(src, n, a.px)
            r = in_fresh_process(str(src), str(dst), ckpt, "first")
            again = in_fresh_process(str(src), str(dst), ckpt, "again")
            first[n] = r
            print(f"{n:>6} photos: {r['ok']} written, {r['failed']} failed in {r['seconds']:.0f} s "
                  f"({1000 * r['seconds'] / n:.0f} ms per photo), driver peak RSS {r['peak_gib']:.2f} GiB; "
                  f"again (all done): {again['skipped']} skipped in {again['seconds']:.1f} s, "
                  f"driver peak RSS {again['peak_gib']:.2f} GiB", flush=True)
            shutil.rmtree(src)
            shutil.rmtree(dst)
        lo, hi = min(first), max(first)
        print(f"driver peak RSS, {hi} / {lo} photos: {first[hi]['peak_gib'] / first[lo]['peak_gib']:.2f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
