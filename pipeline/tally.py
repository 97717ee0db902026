"""What a run's summary and report need, in memory that does not grow with the archive: counts,
patches per group, seconds, the errors (the first MAX_ERRORS of them; the manifest has every
row) and the first KEEP_ROWS rows whole (the report shows at most 50 photos; callers read a
few). The driver of a million-image run holds this, not a million rows."""
from __future__ import annotations

KEEP_ROWS = 1000
MAX_ERRORS = 1000


class Tally:
    def __init__(self, keep_rows: int = KEEP_ROWS, max_errors: int = MAX_ERRORS):
        self.keep_rows, self.max_errors = keep_rows, max_errors
        self.ok = self.failed = 0
        self.groups: list[int] = []
        self.seconds = {"grm": 0.0, "dit": 0.0, "stitch": 0.0}
        self.errors: list[tuple[str, str]] = []
        self.rows: list[dict] = []
        self.seen: set[str] = set()     # inputs with a row (names only: the worklist holds them anyway)

    def add(self, r) -> None:
        r = r if isinstance(r, dict) else dict(r.__dict__)
        self.seen.add(r["input"])
        if r["status"] == "ok":
            self.ok += 1
            counts = r.get("group_counts") or []
            self.groups += [0] * (len(counts) - len(self.groups))
            for g, c in enumerate(counts):
                self.groups[g] += int(c)
            for k in self.seconds:
                self.seconds[k] += float(r.get(f"sec_{k}") or 0.0)
        else:
            self.failed += 1
            if len(self.errors) < self.max_errors:
                self.errors.append((r["input"], r["error"]))
        # failures are kept past the limit's first photos so that a report can list them
        if len(self.rows) < self.keep_rows:
            self.rows.append(r)

    def __len__(self) -> int:
        return self.ok + self.failed
