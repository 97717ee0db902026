"""Fault injection, for tests only: when $PATCHSCALER_FAULTS names a JSON file {stage: marker
path} that exists, that stage's actor process exits hard on its second image, once (the
marker file records that it did). Nothing sets the variable outside the tests; unset, this
costs one environment lookup per image."""
from __future__ import annotations

import json
import os

ENV = "PATCHSCALER_FAULTS"


def maybe_die(stage: str, calls: int) -> None:
    path = os.environ.get(ENV)
    if not path or calls != 2:
        return
    try:
        with open(path) as f:
            marker = json.load(f).get(stage)
    except (OSError, ValueError):
        return
    if marker and not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
        os._exit(1)  # a real process death, mid-job, with an image in flight
