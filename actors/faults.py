"""Fault injection, for tests only: when $PATCHSCALER_FAULTS names a JSON file {stage: marker
path} that exists, that stage's actor process exits hard on its second image, once (the
marker file records that it did); {"always": {stage: input}} makes that stage's process exit
every time it takes that input (a poison photo). Nothing sets the variable outside the tests;
unset, this costs one environment lookup per image."""
from __future__ import annotations

import json
import os

ENV = "PATCHSCALER_FAULTS"


def maybe_die(stage: str, calls: int, inputs=()) -> None:
    path = os.environ.get(ENV)
    if not path:
        return
    try:
        with open(path) as f:
            spec = json.load(f)
    except (OSError, ValueError):
        return
    if spec.get("always", {}).get(stage) in inputs:
        os._exit(1)
    marker = spec.get(stage)
    if calls != 2:
        return
    if marker and not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
        os._exit(1)  # a real process death, mid-job, with an image in flight
