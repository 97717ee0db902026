"""Resume by content and settings: an output is done only if it was made from the same input
(size and mtime here; an object's ETag on S3) with the same output settings; a changed input or
setting is redone and the manifest says why; a bad input that has not changed is not tried
again (exit 0) unless --retry-failed."""
import os

import pyarrow.parquet as pq
from helpers import encode, photo


def _manifest(dst, run):
    return {r["input"]: r for r in pq.read_table(dst / "_manifest" / f"manifest-{run}.parquet").to_pylist()}


def test_changed_input_and_settings_are_redone_and_bad_inputs_rest(checkpoint, tmp_path, capsys):
    from jobs.cli import main
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    (src / "jellyfish.jpg").write_bytes(encode(photo(24, 20, seed=1), "JPEG"))
    (src / "b.png").write_bytes(encode(photo(20, 16, seed=2)))
    (src / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    base = ["upscale", str(src), str(dst), "--engine", "local", "--checkpoint", checkpoint, "--precision", "fp32",
            "--no-report"]

    assert main(base + ["--run-id", "n1"]) == 3            # bad.jpg fails: a new failure
    first = (dst / "jellyfish.jpg").read_bytes()
    assert _manifest(dst, "n1")["jellyfish.jpg"]["input_sig"]

    # nothing changed: nothing to do, and the known-bad input is not tried again: exit 0
    assert main(base + ["--run-id", "n2"]) == 0
    m = _manifest(dst, "n2")
    assert set(m) == {"bad.jpg"} and m["bad.jpg"]["status"] == "skipped"
    assert m["bad.jpg"]["error"].startswith("still bad (unchanged since run n1): bad image")
    assert "STILL BAD bad.jpg" in capsys.readouterr().out

    # the photo is replaced by another picture under the same name: redone, and the row says why
    (src / "jellyfish.jpg").write_bytes(encode(photo(24, 20, seed=9), "JPEG"))
    os.utime(src / "jellyfish.jpg", ns=(1, 2_000_000_000))
    assert main(base + ["--run-id", "n3"]) == 0
    m = _manifest(dst, "n3")
    assert m["jellyfish.jpg"]["status"] == "ok" and "redone: input changed since run n1" in m["jellyfish.jpg"]["notes"]
    assert "b.png" not in m and (dst / "jellyfish.jpg").read_bytes() != first

    # another output setting: every output is made again, the rows say why
    assert main(base + ["--run-id", "n4", "--format", "webp"]) == 0
    m = _manifest(dst, "n4")
    assert {k for k, r in m.items() if r["status"] == "ok"} == {"jellyfish.jpg", "b.png"}
    assert all("settings changed" in m[k]["notes"] for k in ("jellyfish.jpg", "b.png"))
    assert (dst / "b.webp").exists() and (dst / "jellyfish.webp").exists()
    assert main(base + ["--run-id", "n5", "--format", "webp"]) == 0
    assert set(_manifest(dst, "n5")) == {"bad.jpg"}

    # --retry-failed tries the bad input again (and it fails again: exit 3); fixed, it is written
    assert main(base + ["--run-id", "n6", "--format", "webp", "--retry-failed"]) == 3
    (src / "bad.jpg").write_bytes(encode(photo(20, 20, seed=3), "JPEG"))
    assert main(base + ["--run-id", "n7", "--format", "webp"]) == 0
    assert _manifest(dst, "n7")["bad.jpg"]["status"] == "ok"
