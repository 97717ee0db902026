"""The pipeline's progress counters on the Ray side: a ProgressHub actor (num_cpus=0) and the
fire-and-forget `report` the stages call. The driver's display is pipeline/progress.py."""
from __future__ import annotations

import logging

log = logging.getLogger("patchscaler.progress")


class ProgressHub:
    """A Ray actor (num_cpus=0) holding the pipeline's counters: stage -> [done, total]."""

    def __init__(self):
        self.counts: dict[str, list[int]] = {}

    def add(self, stage: str, done: int = 0, total: int = 0) -> None:
        c = self.counts.setdefault(stage, [0, 0])
        c[0] += done
        c[1] += total

    def snapshot(self) -> dict[str, list[int]]:
        return {k: list(v) for k, v in self.counts.items()}


def report(hub, stage: str, done: int = 0, total: int = 0) -> None:
    """Tell the hub (if any) without waiting; progress never fails an image."""
    if hub is None:
        return
    try:
        hub.add.remote(stage, done, total)
    except Exception as e:   # a dead hub only costs the progress line, never the image
        log.debug("progress report dropped: %s", e)
