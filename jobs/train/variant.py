"""A shipped model's variant on another GRM: the base checkpoint's texture extractor, Patch-DiT
and RTM with the GRM (backbone, confidence head, its calibration) of another checkpoint, written
as a variant of the base (only the tensors that differ: a few hundred KB).

    python -m jobs.train.variant BASE.safetensors OTHER.safetensors OUT.safetensors [--full]

Why: the confidence head predicts one network's errors, so it and the Qmap thresholds belong to
the GRM; the Patch-DiT corrects patches of either (both give x4plus-like pixels)."""
from __future__ import annotations

import argparse
import os

from patchscaler.checkpoint import load, save
from patchscaler.config import override

from .assemble import model_version


def grm_variant(base: str, grm_source: str, out: str, full: bool = False) -> str:
    """`full`: a standalone checkpoint (every tensor), else a variant of `base` (same folder)."""
    from patchscaler.checkpoint import checkpoint_info
    model = load(base)
    other = load(grm_source)
    model.cfg = override(model.cfg, grm=vars(other.cfg.grm), pgs={"thresholds": other.cfg.pgs.thresholds})
    model.grm = other.grm
    model.cfg = override(model.cfg, version=model_version(model))
    made = {"base": os.path.basename(base), "base_version": load(base, components=()).cfg.version,
            "grm_from": other.cfg.version}
    if full:   # the base's training record travels with it: how its Patch-DiT, T and RTM were made
        save(model, out, extra={"training": checkpoint_info(base)["extra"].get("training"), "variant": made})
        return model.cfg.version
    if os.path.dirname(os.path.abspath(out)) != os.path.dirname(os.path.abspath(base)):
        raise SystemExit(f"{out}: a variant lives in its base's folder ({os.path.dirname(base) or '.'}); "
                         "--full writes a standalone checkpoint anywhere")
    save(model, out, extra={"variant": made}, base=os.path.basename(base))
    return model.cfg.version


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m jobs.train.variant", description=__doc__.split("\n")[0])
    p.add_argument("base")
    p.add_argument("grm_source")
    p.add_argument("out")
    p.add_argument("--full", action="store_true", help="a standalone checkpoint instead of a variant of BASE")
    a = p.parse_args(argv)
    print(f"{a.out}: version {grm_variant(a.base, a.grm_source, a.out, a.full)}, {os.path.getsize(a.out) / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
