#!/usr/bin/env bash
# Every figure of docs/benchmarks.md's first table, one command each, on a quiet machine (nothing
# else running: the figures are ratios of interleaved runs, but a busy host still skews them).
# Threading: each bench sets OMP_WAIT_POLICY=PASSIVE and its thread count before torch loads.
# PHOTOS: a folder of HR photos (default: the bundled samples).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
P=${PHOTOS:+--photos $PHOTOS}
$PY bench/method_vs_grm.py $P --n 6 --repeats 2
$PY bench/pgs_vs_uniform.py $P --n 6 --repeats 2
$PY bench/dit_efficiency.py --batch 64 --repeats 5
$PY bench/busy_host.py --busy 1 --repeats 2
$PY bench/pipeline_overhead.py $P --n 6 --repeats 1
$PY bench/precision.py --n 1 --lr-size 48 --repeats 1
OMP_WAIT_POLICY=PASSIVE $PY bench/grm_vs_ncnn.py --size 64 --repeats 3
# not in that table's first rows: torch.compile of the Patch-DiT (2-5 min of compile first)
$PY bench/compile.py $P --n 4 --repeats 2
