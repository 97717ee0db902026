"""The shipped model's training files, listed with their source, size and sha256
(patchscaler/weights/training_data.csv), so that a user who gathers the same files from the
same public packages can check them: `patchscaler train --data DATA --check-data`.
`python -m jobs.train.data_check DATA` writes the list of a data folder (how the shipped one
was made)."""
from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

from storage.durable import sha256_file

# beside the shipped checkpoint (patchscaler/weights/)
LIST = Path(importlib.util.find_spec("patchscaler").origin).parent / "weights" / "training_data.csv"
FOLDERS = ("train", "textures")
COLUMNS = ("file", "source", "bytes", "sha256")


def source_of(name: str) -> str:
    """The package a file came from: its name's prefix before `__` (PACKAGE__name.jpg)."""
    return name.split("__", 1)[0] if "__" in name else ""


def describe(data: str | Path) -> list[dict]:
    """One row per file of DATA/train and DATA/textures, sorted."""
    rows = []
    for folder in FOLDERS:
        for p in sorted((Path(data) / folder).iterdir()) if (Path(data) / folder).is_dir() else []:
            if p.is_file() and not p.name.startswith("."):
                rows.append({"file": f"{folder}/{p.name}", "source": source_of(p.name),
                             "bytes": p.stat().st_size, "sha256": sha256_file(p)})
    return rows


def read_list(path: Path = LIST) -> list[dict]:
    with open(path, newline="") as f:
        return [{**r, "bytes": int(r["bytes"])} for r in csv.DictReader(f)]


def check_data(data: str | Path, listing: Path = LIST) -> list[str]:
    """What differs between DATA and the list: missing, changed and extra files (empty: the same)."""
    want = {r["file"]: r for r in read_list(listing)}
    have = {r["file"]: r for r in describe(data)}
    problems = [f"missing: {f}" for f in sorted(set(want) - set(have))]
    problems += [f"different content: {f} ({have[f]['bytes']} bytes, sha256 {have[f]['sha256'][:12]}...; listed "
                 f"{want[f]['bytes']} bytes, {want[f]['sha256'][:12]}...)"
                 for f in sorted(set(want) & set(have)) if have[f]["sha256"] != want[f]["sha256"]]
    problems += [f"not in the list: {f}" for f in sorted(set(have) - set(want))]
    return problems


def write_list(data: str | Path, out=sys.stdout) -> None:
    w = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(describe(data))


if __name__ == "__main__":
    write_list(sys.argv[1])
