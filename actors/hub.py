"""The run's book on the Ray side: a RunHub actor (num_cpus=0) that the stages tell what they
did (the fire-and-forget `report`, `mark`, `peak`) and the stitchers which pieces of a photo are
finished. The driver's display is pipeline/progress.py; the photo's assembly is
pipeline/assembly.py. It imports nothing heavy, so its process stays small: what it keeps of a
finished piece is bytes it never opens."""
from __future__ import annotations

import logging

log = logging.getLogger("patchscaler.progress")


class RunHub:
    """A Ray actor (num_cpus=0), one per run, holding the pipeline's counters: stage -> [done,
    total]; which stage each piece is in (so that a piece whose actor died can be named with its
    stage); each stage's peak memory; and the finished pieces of each photo cut into several
    (so that exactly one stitcher, the one that brings the last, puts the photo together)."""

    def __init__(self):
        self.counts: dict[str, list[int]] = {}
        self.busy: dict[str, float] = {}
        self.where: dict[tuple[str, int], str] = {}
        self.peaks: dict[str, float] = {}
        self.pieces: dict[str, dict[int, bytes]] = {}

    def add(self, stage: str, done: int = 0, total: int = 0, seconds: float = 0.0) -> None:
        c = self.counts.setdefault(stage, [0, 0])
        c[0] += done
        c[1] += total
        self.busy[stage] = self.busy.get(stage, 0.0) + seconds

    def busy_seconds(self) -> dict[str, float]:
        """stage -> the seconds its actors have spent on pieces so far, all actors together."""
        return dict(self.busy)

    def snapshot(self) -> dict[str, list[int]]:
        return {k: list(v) for k, v in self.counts.items()}

    def enter(self, stage: str, key: str, index: int) -> None:
        self.where[(key, index)] = stage

    def leave(self, key: str, index: int) -> None:
        self.where.pop((key, index), None)

    def peak(self, stage: str, gib: float) -> None:
        self.peaks[stage] = max(self.peaks.get(stage, 0.0), gib)

    def peak_memory(self) -> dict[str, float]:
        """stage -> the largest peak RSS (GiB) any of its actors reported."""
        return dict(self.peaks)

    def stuck(self) -> dict[str, str]:
        """input -> the stage one of its pieces entered and never left (its actor died)."""
        return {key: stage for (key, _), stage in self.where.items()}

    def piece_done(self, key: str, index: int, count: int, info: bytes) -> list[bytes] | None:
        """Record a photo's finished (or failed) piece (`info`: what its assembler needs, as the
        stitcher packed it); the caller that brings the last one gets every piece's, in order,
        and puts the photo together. Exactly one does."""
        got = self.pieces.setdefault(key, {})
        got[index] = info
        if len(got) < count:
            return None
        del self.pieces[key]
        return [got[i] for i in range(count)]


def mark(hub, stage: str | None, key: str, index: int) -> None:
    """Tell the hub (if any) that a piece entered `stage` (None: it is done with). Entering
    waits for the hub: the process may die on the piece right after (that is what it is for)."""
    if hub is None:
        return
    try:
        if stage:
            import ray
            ray.get(hub.enter.remote(stage, key, index), timeout=30)
        else:
            hub.leave.remote(key, index)
    except Exception as e:
        log.debug("progress mark dropped: %s", e)


def peak(hub, stage: str) -> None:
    """Tell the hub this process's peak RSS so far (fire and forget)."""
    if hub is None:
        return
    import resource
    try:
        hub.peak.remote(stage, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20)
    except Exception as e:
        log.debug("peak report dropped: %s", e)


def report(hub, stage: str, done: int = 0, total: int = 0, seconds: float = 0.0) -> None:
    """Tell the hub (if any) without waiting; progress never fails an image. `seconds`: the
    stage's time on what it reports done."""
    if hub is None:
        return
    try:
        hub.add.remote(stage, done, total, seconds)
    except Exception as e:   # a dead hub only costs the progress line, never the image
        log.debug("progress report dropped: %s", e)
