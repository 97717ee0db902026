"""Progress a person can read: per stage, in images or patches, with a rate and an ETA.

On a terminal each stage is a tqdm bar. Anywhere else (cron mail, `ray job logs`, a file)
bars would be one endless line of carriage returns, so each stage writes one log line every
`interval` seconds (PATCHSCALER_PROGRESS_INTERVAL, default 30) and one when it ends.

The Ray pipeline's actors report to a RunHub actor (actors/hub.py, fire and
forget); a thread on the driver reads its counters once a second."""
from __future__ import annotations

import logging
import os
import sys
import threading
import time

log = logging.getLogger("patchscaler.progress")

STAGES = {  # key -> (label, unit) for the pipeline's stages; a photo is one piece or several
    "grm": ("decode + GRM", "piece"),
    "hard": ("hard Patch-DiT", "patch"),
    "easy": ("easy Patch-DiT", "patch"),
    "stitch": ("stitch", "piece"),
    "photos": ("photos written", "img"),
}


def default_interval() -> float:
    return float(os.environ.get("PATCHSCALER_PROGRESS_INTERVAL", "30"))


def _duration(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else (f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s")


class _Stage:
    def __init__(self, desc: str, unit: str, total: int | None):
        self.desc, self.unit, self.total = desc, unit, total
        self.done = 0
        self.t0 = self.last = time.monotonic()  # the first log line comes after one interval
        self.first: tuple[float, int, float] | None = None   # (when, done, work done) at the first finished unit
        # the work in units of its own (input pixels): where units differ in size (photos), the
        # ETA is the work left at the work's rate, not the units left at the units' rate
        self.work_done, self.work_total = 0.0, None
        self.shown = (0, total)  # what the last log line said: unchanged stages stay quiet
        self.bar = None
        self.eta_note = ""       # said after the ETA, e.g. "(whole run)"
        self.eta_of_run: float | None = None   # set on the stage that shows the whole run's ETA

    def rate(self) -> float | None:
        """Units per second since the first unit finished: start-up (Ray, model loads, the first
        photo through every stage) is not work the rest of the run will repeat. None until a
        unit has finished after the first: no ETA is better than one that start-up inflates."""
        if self.first is None:
            return None
        dt, dn = time.monotonic() - self.first[0], self.done - self.first[1]
        return dn / dt if dn > 0 and dt > 0 else None

    def work_rate(self) -> float | None:
        """Work per second since the first unit finished (as `rate`)."""
        if self.first is None or self.done <= self.first[1]:
            return None
        dt, dw = time.monotonic() - self.first[0], self.work_done - self.first[2]
        return dw / dt if dw > 0 and dt > 0 else None

    def eta(self) -> float | None:
        if self.eta_of_run is not None:
            return self.eta_of_run if self.total is None or self.done < self.total else None
        if self.total is None or self.total <= self.done:
            return None
        if self.work_total is not None:
            r = self.work_rate()
            return None if r is None else max(0.0, self.work_total - self.work_done) / r
        r = self.rate()
        return None if r is None else (self.total - self.done) / r

    def line(self) -> str:
        el = time.monotonic() - self.t0
        total = "?" if self.total is None else self.total
        text = f"{self.desc}: {self.done}/{total} {self.unit}"
        rate = self.rate()
        if rate:
            text += f", {rate:.2f} {self.unit}/s" if rate >= 1 else f", {1 / rate:.1f} s/{self.unit}"
        eta = self.eta()
        if eta is not None:
            text += f", ETA {_duration(eta)}{self.eta_note}"
        return text + f", {_duration(el)} elapsed"


class Progress:
    """A set of named stages. tty=None: bars if stderr is a terminal, else log lines."""

    def __init__(self, interval: float | None = None, tty: bool | None = None, file=None):
        self.file = file or sys.stderr
        self.tty = bool(getattr(self.file, "isatty", lambda: False)()) if tty is None else tty
        self.interval = default_interval() if interval is None else interval
        self.stages: dict[str, _Stage] = {}

    def add(self, key: str, desc: str, unit: str, total: int | None = None, leave: bool = True) -> None:
        self.finish(key, quiet=True)
        st = self.stages[key] = _Stage(desc, unit, total)
        if self.tty:
            from tqdm import tqdm
            st.bar = tqdm(total=total, desc=desc, unit=unit, leave=leave, file=self.file, dynamic_ncols=True)

    def set(self, key: str, done: int | None = None, total: int | None = None, desc: str | None = None,
            work: tuple[float, float] | None = None) -> None:
        """`work`: (done, total) of the stage's work in its own measure (input pixels), for the
        ETA; give it with `done`."""
        st = self.stages[key]
        if total is not None:
            st.total = total
        if desc is not None:
            st.desc = desc
        if work is not None:
            st.work_done, st.work_total = work
        if done is not None:
            st.done = min(done, st.total) if st.total is not None else done
            if st.first is None and st.done > 0:
                st.first = (time.monotonic(), st.done, st.work_done)
        if st.bar is not None:
            if total is not None:
                st.bar.total = total
            if desc is not None:
                st.bar.set_description(desc, refresh=False)
            st.bar.n = st.done
            eta = st.eta()
            st.bar.set_postfix_str(f"ETA {_duration(eta)}{st.eta_note}" if eta is not None else "", refresh=False)
            st.bar.refresh()
        elif (st.done, st.total) != st.shown and time.monotonic() - st.last >= self.interval:
            st.last, st.shown = time.monotonic(), (st.done, st.total)
            log.info("%s", st.line())

    def update(self, key: str, n: int = 1) -> None:
        self.set(key, done=self.stages[key].done + n)

    def finish(self, key: str, quiet: bool = False) -> None:
        st = self.stages.pop(key, None)
        if st is None:
            return
        if st.bar is not None:
            st.bar.close()
        elif not quiet and (st.done, st.total) != st.shown:
            log.info("%s", st.line())

    def close(self) -> None:
        for key in list(self.stages):
            self.finish(key)


class PipelineProgress:
    """The driver's view of the pipeline: one line (or bar) per stage, read from the hub."""

    def __init__(self, hub, images: int, progress: Progress, poll: float = 1.0):
        self.hub, self.images, self.p, self.poll = hub, images, progress, poll
        self.final: dict[str, list[int]] = {}
        for key, (label, unit) in STAGES.items():
            self.p.add(key, label, unit, images if unit in ("img", "piece") else 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)

    def _pieces(self, snap: dict) -> tuple[int, bool]:
        """(the run's pieces, whether that is known): known once every photo's header is read
        (the split counts each photo it reads as a "pieces" unit done); until then the pieces so far and, for the photos
        still to read, as many each as the read ones had (at least one). Photos run in waves, so
        the headers of later waves are read only when their wave starts."""
        read, known = snap.get("pieces", [0, 0])
        if read >= self.images:
            return known, True
        per = known / read if read else 1.0
        return max(self.images, round(known + per * (self.images - read))), False

    def _total(self, snap: dict, key: str, unit: str) -> int:
        if unit == "img":
            return self.images
        if unit == "piece":
            return self._pieces(snap)[0]
        # patches are known once the GRM has cut a piece: until every piece is cut, the total
        # so far extrapolated over the pieces still to cut (the bar says "so far")
        known = snap.get(key, [0, 0])[1]
        cut, pieces = snap.get("grm", [0, 0])[0], self._total(snap, "grm", "piece")
        return round(known * pieces / cut) if 0 < cut < pieces else known

    def _apply(self, snap: dict) -> None:
        pieces, certain = self._pieces(snap)
        all_cut = certain and snap.get("grm", [0, 0])[0] >= pieces
        for key, (label, unit) in STAGES.items():
            desc = f"{label} (total estimated until the GRM has cut every piece)" if unit == "patch" and not all_cut \
                else label
            self.p.set(key, done=snap.get(key, [0, 0])[0], total=self._total(snap, key, unit), desc=desc)
        # the whole run ends when its slowest stage does: the photos' bar carries that ETA. Its
        # own count of photos is left out: photos differ in size, pieces and patches much less
        photos = self.p.stages.get("photos")
        if photos is None:
            return
        photos.eta_of_run = None
        etas = [e for key, st in self.p.stages.items()
                if key in STAGES and key != "photos" and (e := st.eta()) is not None]
        if etas:
            photos.eta_of_run, photos.eta_note = max(etas), " (whole run)"

    def _read(self) -> dict:
        import ray
        return ray.get(self.hub.snapshot.remote(), timeout=10)

    def _loop(self):
        while not self._stop.wait(self.poll):
            try:
                self._apply(self._read())
            except Exception as e:   # a slow or dead hub: keep the last numbers, try again
                log.debug("progress poll failed: %s", e)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=15)
        if exc[0] is None:
            # the actors' last reports may still be on their way: wait briefly for them
            deadline = time.monotonic() + 5
            while True:
                try:
                    self.final = self._read()
                except Exception:
                    break
                if self._complete(self.final) or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            self._apply(self.final)
            self.p.close()
        return False

    def _complete(self, snap: dict) -> bool:
        return all(snap.get(key, [0, 0])[0] >= self._total(snap, key, unit) for key, (_, unit) in STAGES.items())
