"""Why the engine sets OMP_WAIT_POLICY=PASSIVE: one photo upscaled in-process while another
process keeps a core busy, with idle OpenMP threads sleeping (PASSIVE, our default) or
spinning (ACTIVE) or libgomp's own default, each in a fresh process, interleaved.

    python bench/busy_host.py [--busy 1] [--lr-size 96] [--repeats 2] [--threads 2]
"""
import argparse
import os
import subprocess
import sys
import time

import harness

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--busy", type=int, default=1, help="cores the neighbour keeps busy")
ap.add_argument("--lr-size", type=int, default=96)
harness.add_args(ap)
a = ap.parse_args()

CHILD = """
import sys, time, torch
sys.path[:0] = [{bench!r}, {root!r}]
import harness
from patchscaler.model import Runtime
from patchscaler.upscale import build_default, upscale_prepared
torch.set_num_threads({threads})
model = build_default().configure(Runtime(precision="fp32"))
(name, prep), = harness.lr_photos(None, 1, {size})
t = time.perf_counter(); upscale_prepared(model, prep); print(time.perf_counter() - t)
"""


def child(policy: str) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    if policy != "libgomp default":
        env["OMP_WAIT_POLICY"] = policy
    code = CHILD.format(bench=str(harness.ROOT / "bench"), root=str(harness.ROOT), threads=a.threads, size=a.lr_size)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


print(f"# {a.threads} torch threads per run; a neighbour process keeps {a.busy} core(s) busy; "
      f"{a.repeats} interleaved repeats; one {a.lr_size} px photo -> {4 * a.lr_size} px, fp32, upscale time only")
times = {p: [] for p in ("PASSIVE", "ACTIVE", "libgomp default")}
with harness.BusyNeighbour(a.busy):
    time.sleep(1)
    for _ in range(a.repeats):
        for p in times:
            times[p].append(child(p))
for p, v in times.items():
    print(f"OMP_WAIT_POLICY={p:<16} median {harness.med(v):7.1f} s   ({', '.join(f'{x:.1f}' for x in v)})")
print(f"ACTIVE / PASSIVE: {harness.med(times['ACTIVE']) / harness.med(times['PASSIVE']):.2f}x; "
      f"libgomp default / PASSIVE: {harness.med(times['libgomp default']) / harness.med(times['PASSIVE']):.2f}x")
