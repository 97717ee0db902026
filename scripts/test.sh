#!/usr/bin/env bash
# Install with the test extras, then run the suite (every test but the benchmark scripts' own end-to-end
# runs; `scripts/test.sh --all` runs those too; `scripts/test.sh --fast`, the fast loop to run while
# working: the method, planning, naming, manifest and report, no Ray). pytest's exit 5 (no tests
# ran) fails.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh test || exit 1
. .venv/bin/activate
if [ "${1:-}" = "--all" ]; then shift; set -- -m "" "$@"; fi
if [ "${1:-}" = "--fast" ]; then shift; set -- -m "fast and not bench" "$@"; fi
python -m pytest -q "$@"
rc=$?
if [ $rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi
exit $rc
