"""Pool sizes from measured work (`patchscaler plan`, `upscale --pools auto`).

Each image costs every stage some seconds: the GRM a fixed amount, each Patch-DiT pool its
patches x the seconds per patch of their group (groups differ in steps, so a hard patch costs
~10x a simple one), the stitcher a fixed amount. A streaming pipeline runs at the pace of its
slowest stage, so workers are split in proportion to the work per image, and the throughput is
3600 / max(work of a pool / its workers). A skewed archive (many hard patches) gets a larger hard
pool. `patchscaler plan` measures the work here, in this process, on a sample of the archive;
`--pools auto` takes the seconds the run's own actors spent on its first wave. Nothing here
knows Ray; the graph takes the sizes."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

from patchscaler import flow



@dataclass
class WorkProfile:
    """Seconds of work per image, measured on `images` sample images on `device`."""
    images: int
    device: str
    grm: float                 # seconds per image
    stitch: float              # seconds per image
    patches: list[float]       # mean patches per image, per group
    per_patch: list[float]     # seconds per patch, per group (0 where the sample had none)

    def pool_work(self, pools) -> dict[str, float]:
        """Seconds per image for the GRM, each Patch-DiT pool (`pools`: flow.pools, names and
        groups) and the stitcher."""
        cost = [n * s for n, s in zip(self.patches, self.per_patch)]
        return {"grm": self.grm, **{name: sum(cost[g] for g in groups) for name, groups in pools},
                "stitch": self.stitch}


def accelerator_pools(work: dict[str, float]) -> list[str]:
    """The pools that share the accelerators: all but the stitchers, which run on CPUs."""
    return [p for p in work if p != "stitch"]


def measure(model, preps: list, seed: int = 0) -> WorkProfile:
    """Run the method on sample images (decoded inputs), timing the GRM, each group's Patch-DiT
    calls and the stitch."""
    G = model.cfg.pgs.num_groups
    grm = stitch = 0.0
    patches, seconds = [0] * G, [0.0] * G
    for prep in preps:
        state = flow.begin(model, prep)
        grm += state.seconds["grm"]
        for g in range(G):
            t = time.perf_counter()
            flow.refine(model, state, seed, groups=[g])
            seconds[g] += time.perf_counter() - t
            patches[g] += int((state.coarse.groups == g).sum())
        flow.finish(model, state)
        stitch += state.seconds["stitch"]
    n = max(1, len(preps))
    return WorkProfile(len(preps), str(model.runtime.device), grm / n, stitch / n,
                       [p / n for p in patches], [s / p if p else 0.0 for s, p in zip(seconds, patches)])


def split(work: dict[str, float], workers: int) -> dict[str, int]:
    """`workers` (GPUs or actors) shared among the accelerator pools in proportion to their work
    per image, at least one each (largest remainder)."""
    pools = accelerator_pools(work)
    if workers < len(pools):
        raise ValueError(f"{workers} workers cannot staff {len(pools)} pools: at least one each")
    total = sum(work[p] for p in pools) or 1.0
    share = {p: (workers - len(pools)) * work[p] / total for p in pools}
    sizes = {p: 1 + int(share[p]) for p in pools}
    for p in sorted(pools, key=lambda p: -(share[p] - int(share[p])))[: workers - sum(sizes.values())]:
        sizes[p] += 1
    return sizes


def images_per_hour(work: dict[str, float], sizes: dict[str, int]) -> float:
    """The steady-state throughput of a streaming pipeline: its slowest pool sets the pace."""
    slowest = max(work[p] / sizes[p] for p in sizes)
    return 3600.0 / slowest if slowest > 0 else float("inf")


def pool_split_text(profile: WorkProfile, pools, workers: int) -> str:
    """The planner's report: work per image per pool (`pools`: flow.pools), the measured split
    and an even split of the same workers, each with its images/hour."""
    work = profile.pool_work(pools)
    auto = split(work, workers)
    names = accelerator_pools(work)
    even = {p: workers // len(names) + (i < workers % len(names)) for i, p in enumerate(names)}
    lines = [f"measured on {profile.images} sample image(s) on {profile.device}: seconds per image "
             + ", ".join(f"{p} {work[p]:.2f}" for p in work),
             "patches per image per group: " + " / ".join(f"{n:.1f}" for n in profile.patches)
             + "; seconds per patch: " + " / ".join(f"{s:.3f}" for s in profile.per_patch)]
    for name, sizes in (("measured split", auto), ("even split", even)):
        lines.append(f"{name:<15} " + ", ".join(f"{p} {sizes[p]}" for p in names)
                     + f": {images_per_hour(work, sizes):,.0f} images/hour")
    rate = images_per_hour(work, auto)
    lines.append(f"stitch actors (CPU) to keep up with the measured split: {math.ceil(work['stitch'] * rate / 3600)}")
    return "\n".join(lines)
