#!/usr/bin/env bash
# Install with the test extras, then run the whole suite. pytest's exit 5 (no tests ran) fails.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh test || exit 1
. .venv/bin/activate
python -m pytest -q "$@"
rc=$?
if [ $rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi
exit $rc
