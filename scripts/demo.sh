#!/usr/bin/env bash
# Install, then upscale the bundled sample photos x4 with the Ray pipeline on a local Ray.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
. .venv/bin/activate
patchscaler upscale patchscaler/samples out/samples --engine ray "$@"
echo "outputs in out/samples, manifest and HTML report in out/samples/_manifest/"
