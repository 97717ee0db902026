"""A checkpoint with inference settings changed (the output stage, the sampling paths), its
weights untouched and its version made again (a new version: other pixels), the change recorded
in its training record.

    python -m jobs.train.retune IN.safetensors OUT.safetensors fusion.colorfix_levels=6 [...]

Why: settings measured after training (docs/experiments.md) reach a shipped checkpoint without
training it again, and the record says which and from which version."""
from __future__ import annotations

import argparse
import json

from patchscaler.checkpoint import checkpoint_info, load, save
from patchscaler.config import override

from .assemble import model_version

TUNABLE = ("fusion", "pgs")   # sections that change no weight's meaning


def parse(assignments: list[str]) -> dict:
    changes: dict = {}
    for item in assignments:
        key, _, value = item.partition("=")
        section, _, field = key.partition(".")
        if section not in TUNABLE or not field or not value:
            raise SystemExit(f"{item!r}: expected SECTION.FIELD=VALUE with SECTION one of {', '.join(TUNABLE)}")
        changes.setdefault(section, {})[field] = json.loads(value if value[0] in "[{" else
                                                             f"[{value}]" if "," in value else value)
        if isinstance(changes[section][field], list):
            changes[section][field] = tuple(changes[section][field])
    return changes


def retune(src: str, out: str, changes: dict) -> str:
    model = load(src)
    before = model.cfg.version
    model.cfg = override(model.cfg, **changes)
    model.cfg = override(model.cfg, version=model_version(model))
    extra = checkpoint_info(src)["extra"]
    record = dict(extra.get("training") or {})
    record["retuned"] = [*record.get("retuned", []), {"from": before, "changes": changes}]
    save(model, out, extra={**extra, "training": record})
    if out.endswith(".safetensors"):   # the record beside the file, as `assemble` writes it
        with open(out[: -len(".safetensors")] + ".training.json", "w") as f:
            json.dump(record, f, indent=1)
    return model.cfg.version


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m jobs.train.retune", description=__doc__.split("\n")[0])
    p.add_argument("src")
    p.add_argument("out")
    p.add_argument("settings", nargs="+", metavar="SECTION.FIELD=VALUE")
    a = p.parse_args(argv)
    print(f"{a.out}: version {retune(a.src, a.out, parse(a.settings))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
