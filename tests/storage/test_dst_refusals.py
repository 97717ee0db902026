"""A DST that refuses writes is a clear stop, on real small filesystems: a read-only one fails
before any photo is computed (exit 4, one line, both engines, DST or a folder below it); a disk
that fills mid-run stops the run with exit 4 and one line, keeps every output written whole and
leaves the photo being written as nothing, and the next run does only the rest; a report that
cannot be written is a warning. The filesystems are tmpfs mounts (this needs root and a kernel
that lets the test mount; elsewhere these tests are skipped with the reason)."""
import errno
import logging
import os
import subprocess
import time

import numpy as np
import pytest
from PIL import Image

from helpers import encode, photo, tmpfs, write_tree


def _err_lines(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def test_a_read_only_dst_fails_before_any_compute_in_both_engines(checkpoint, tmp_path, capsys, monkeypatch):
    import pipeline.local
    import pipeline.run_model
    from jobs.cli import main

    def computed(*a, **k):
        raise AssertionError("a model was loaded: the run computed before finding DST read-only")
    # the in-process engine's model, and every model the Ray driver reads (its run's config)
    for module in (pipeline.local, pipeline.run_model):
        monkeypatch.setattr(module, "load_model", computed)
    src = tmp_path / "in"
    write_tree(src, {"a.png": encode(photo(16, 16))})
    with tmpfs(tmp_path / "ro", read_only=True) as ro:
        for engine in ("local", "ray"):
            for dst in (ro, ro / "sub"):
                t = time.monotonic()
                rc = main(["upscale", str(src), str(dst), "--engine", engine, "--checkpoint", checkpoint])
                err = _err_lines(capsys)
                assert rc == 4 and len(err) == 1, (engine, dst, rc, err)
                assert f"DST {dst} cannot be written: Read-only file system" in err[0], err
                assert time.monotonic() - t < 30
        assert os.listdir(ro) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to any folder: a folder without write permission "
                                               "refuses only other users")
def test_a_dst_without_write_permission_fails_before_any_compute(checkpoint, tmp_path, capsys):
    from jobs.cli import main
    src, dst = tmp_path / "in", tmp_path / "locked"
    write_tree(src, {"a.png": encode(photo(16, 16))})
    dst.mkdir(mode=0o555)
    for target in (dst, dst / "sub"):
        assert main(["upscale", str(src), str(target), "--engine", "local", "--checkpoint", checkpoint]) == 4
        err = _err_lines(capsys)
        assert len(err) == 1 and "cannot be written: Permission denied" in err[0], err


def _noise(i: int) -> bytes:
    """48 px of noise: its x4 PNG output hardly compresses (about 100 KB)."""
    return encode(Image.fromarray(np.random.default_rng(i).integers(0, 256, (48, 48, 3), dtype=np.uint8)))


def test_a_full_disk_stops_the_run_and_the_next_run_does_the_rest(checkpoint, tmp_path, capsys):
    from jobs.cli import main
    from pipeline.status import archive_status
    from storage import Store
    src = tmp_path / "in"
    names = [f"p{i}.png" for i in range(5)]
    write_tree(src, {n: _noise(i) for i, n in enumerate(names)})
    base = ["--engine", "local", "--checkpoint", checkpoint, "--precision", "fp32", "--no-report"]
    with tmpfs(tmp_path / "small", size="1m") as dst:
        # most of the 1 MiB taken already, so that a few small photos fill the rest
        (dst / "filler").write_bytes(b"\0" * (640 << 10))
        rc = main(["upscale", str(src), str(dst), *base, "--run-id", "full"])
        err = _err_lines(capsys)
        assert rc == 4 and len(err) == 1, (rc, err)
        assert "No space left on device" in err[0] and "stopped after" in err[0], err
        assert "run the same command again when DST takes writes again" in err[0]
        written = sorted(n for n in names if (dst / n).exists())
        print("written before the disk was full:", written, [os.path.getsize(dst / n) for n in written])
        assert 0 < len(written) < len(names)
        for n in written:   # every output there is whole
            Image.open(dst / n).load()
        assert not [p for p in dst.rglob(".part-*")], "a half-written temp file was left"
        # the photo being written counts as not written anywhere (its row landed, its output did not)
        st = archive_status(Store(str(dst)))
        assert sorted(n for n, v in st["inputs"].items() if v[0] == "written") == written
        # room again: the next run does only what is not written
        subprocess.run(["mount", "-o", "remount,size=16m", str(dst)], check=True)
        assert main(["upscale", str(src), str(dst), *base, "--run-id", "again"]) == 0
        out = capsys.readouterr().out
        assert f"images written        {len(names) - len(written)}" in out, out
        assert f"already done          {len(written)}" in out, out
        assert sorted(n for n in names if (dst / n).exists()) == names


def test_a_report_that_cannot_be_written_is_a_warning(checkpoint, tmp_path, capsys, caplog, monkeypatch):
    import storage.durable
    from jobs.cli import main
    real = storage.durable.write_durable

    def full_for_reports(path, data):
        if "/_manifest/report-" in path:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data)
    monkeypatch.setattr(storage.durable, "write_durable", full_for_reports)
    src, dst = tmp_path / "in", tmp_path / "out"
    write_tree(src, {"a.png": encode(photo(16, 16))})
    with caplog.at_level(logging.WARNING, logger="patchscaler"):
        rc = main(["upscale", str(src), str(dst), "--engine", "local", "--checkpoint", checkpoint])
    assert rc == 0 and (dst / "a.png").exists()
    assert any("the report was not written" in r.getMessage() and "No space left" in r.getMessage()
               for r in caplog.records)
    assert "report " not in capsys.readouterr().out
