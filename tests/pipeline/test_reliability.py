"""What a scheduled job and its operator need: no silent loss (name collisions, lost
manifest rows, writes that do not survive a crash), no silent success (missing SRC, storage
errors), no recursive runs (DST inside SRC), one rule for symlinks and skipped entries, a
quiet and fast command line, and progress inside an image. Tiny model, tiny images; the
in-process engine wherever the rule lives in code both engines share."""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from helpers import encode, photo, write_tree

ROOT = Path(__file__).parents[2]


def opts_for(src, dst, ckpt, **kw):
    from pipeline.options import UpscaleOptions
    base = dict(checkpoint=ckpt, precision="fp32", max_pixels=250_000, max_batch=16,
                thresholds=(0.6, 0.4), report=False)
    base.update(kw)
    return UpscaleOptions(str(src), str(dst), **base)


def manifest_rows(dst) -> list[dict]:
    return [r for p in sorted(Path(dst, "_manifest").glob("manifest-*.parquet")) for r in pq.read_table(p).to_pylist()]


def cli(*args, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), **kw.pop("env", {}))
    return subprocess.run([sys.executable, "-m", "jobs.cli", *args], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=kw.pop("timeout", 300), **kw)


# --- 2. two inputs, one output name ------------------------------------------------------

def test_colliding_names_keep_their_extension_and_never_overwrite(checkpoint, tmp_path):
    from pipeline.local import run_local
    src, dst = tmp_path / "in", tmp_path / "out"
    write_tree(src, {
        "b.gif": encode(photo(16, 12, seed=1).convert("P"), "GIF"),   # GIF is written as PNG
        "b.png": encode(photo(20, 16, seed=2)),
        "c.jpg": encode(photo(12, 12, seed=3)),                        # PNG bytes named .jpg
        "c.png": encode(photo(8, 12, seed=4)),
        "d.gif": encode(photo(8, 8, seed=5).convert("P"), "GIF"),     # beside d.png its kept-
        "d.png": encode(photo(8, 4, seed=9)),                          # extension name d.gif.png
        "d.gif.png": encode(photo(12, 8, seed=6)),                     # is another input's name
        "e.gif": encode(photo(16, 8, seed=7).convert("P"), "GIF"),    # alone: plain e.png
    })
    s = run_local(opts_for(src, dst, checkpoint, run_id="n1"))
    rows = {r["input"]: r for r in s["rows"]}
    out = {k: r["output"] for k, r in rows.items() if r["status"] == "ok"}
    assert out == {"b.gif": "b.gif.png", "b.png": "b.png", "c.jpg": "c.jpg.png", "c.png": "c.png",
                   "d.gif.png": "d.gif.png", "d.png": "d.png", "e.gif": "e.png"}
    assert rows["d.gif"]["status"] == "error" and "output name collision" in rows["d.gif"]["error"]
    assert "d.gif.png" in rows["d.gif"]["error"]
    sizes = {"b.gif.png": (64, 48), "b.png": (80, 64), "c.jpg.png": (48, 48), "c.png": (32, 48),
             "d.gif.png": (48, 32), "d.png": (32, 16), "e.png": (64, 32)}
    for name, size in sizes.items():  # each output is its own input's image
        assert Image.open(dst / name).size == size, name
    assert s["failed"] == 1

    # resume: everything written is done, only the collision is retried (and refused again)
    again = run_local(opts_for(src, dst, checkpoint, run_id="n2"))
    assert again["ok"] == 0 and again["skipped"] == 7 and [r["input"] for r in again["rows"]] == ["d.gif"]

    # a later input wants a name an earlier input's output holds: refused, nothing overwritten
    before = (dst / "e.png").read_bytes()
    (src / "e.png").write_bytes(encode(photo(24, 24, seed=8)))
    third = run_local(opts_for(src, dst, checkpoint, run_id="n3"))
    r = {x["input"]: x for x in third["rows"]}["e.png"]
    assert r["status"] == "error" and "already holds the output of e.gif" in r["error"]
    assert (dst / "e.png").read_bytes() == before


@pytest.mark.fast
def test_naming_rules_never_give_two_inputs_one_name():
    """Every input and every format an output may get: no two inputs of a run share an
    output name that the naming rules let them write."""
    from itertools import product

    from pipeline.naming import OutputCollision, check_output_name, naming_rules, output_relpath
    inputs = ["a.gif", "a.png", "a.jpg", "a.gif.png", "a", "b.tif", "b.TIF", "c.jpeg", "c.jpg.png",
              "d/x.png", "d/x.webp", "d/x.gif.png", "e.bmp"]
    rules = naming_rules(inputs, owners={})
    formats = ["PNG", "JPEG", "WEBP", "TIFF", "BMP"]
    for choice in product(formats, repeat=3):  # a sample of content-dependent formats
        names = {}
        for i, rel in enumerate(inputs):
            fmt = choice[i % 3]
            try:
                name = check_output_name(rel, output_relpath(rel, fmt, rules[rel]["keep_ext"]), rules[rel])
            except OutputCollision:
                continue
            assert name not in names, (rel, names.get(name), name)
            names[name] = rel


# --- 3. output inside the input -------------------------------------------------------

def test_dst_inside_src_is_refused_local_and_s3(checkpoint, tmp_path, capsys, s3_endpoint):
    from jobs.cli import main
    src = tmp_path / "in"
    write_tree(src, {"a.png": encode(photo(16, 16))})
    base = ["--engine", "local", "--checkpoint", checkpoint]
    for dst in (src / "up", src, src / "deep" / "er"):
        assert main(["upscale", str(src), str(dst), *base]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "SRC" in err[0], err
    assert main(["upscale", str(src / "a.png"), str(src), *base]) == 2  # one file, written beside itself
    capsys.readouterr()
    assert sorted(p.name for p in src.rglob("*")) == ["a.png"]  # nothing written, nothing read back
    # a sibling whose name merely starts like SRC is fine
    assert main(["upscale", str(src), str(tmp_path / "in-up"), *base]) == 0
    capsys.readouterr()

    s3, endpoint, _ = s3_endpoint
    s3.create_bucket(Bucket="archive")
    s3.put_object(Bucket="archive", Key="in/a.png", Body=encode(photo(16, 16)))
    assert main(["upscale", "s3://archive/in", "s3://archive/in/up", "--s3-endpoint", endpoint, *base]) == 2
    assert "inside SRC" in capsys.readouterr().err
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="archive")["Contents"]] == ["in/a.png"]


# --- 4. silent success on a wrong path ---------------------------------------------------

def test_missing_src_is_exit_2_and_empty_src_says_so(checkpoint, tmp_path, capsys):
    from jobs.cli import main
    base = ["--engine", "local", "--checkpoint", checkpoint]
    assert main(["upscale", str(tmp_path / "does" / "not" / "exist"), str(tmp_path / "o"), *base]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]
    assert not (tmp_path / "o").exists()
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    assert main(["upscale", str(tmp_path / "empty"), str(tmp_path / "o"), *base]) == 0
    out = capsys.readouterr()
    assert "SRC has no images" in out.out and "inputs                0" in out.out


# --- 5. one-line errors, bounded waits, Ctrl-C ----------------------------------------------

class _Dropper(threading.Thread):
    """A TCP server that accepts every connection and closes it at once (a wrong endpoint
    that answers), counting the attempts."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port, self.count = self.sock.getsockname()[1], 0

    def run(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.count += 1
            c.close()


def test_storage_errors_are_one_line_with_their_exit_code(checkpoint, tmp_path, capsys, s3_endpoint):
    import s3fs

    from jobs.cli import main
    base = ["--engine", "local", "--checkpoint", checkpoint]
    dropper = _Dropper()
    dropper.start()
    try:
        rc = main(["upscale", "s3://archive/in", str(tmp_path / "o"), "--s3-endpoint",
                   f"http://127.0.0.1:{dropper.port}", *base])
    finally:
        dropper.sock.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 4 and len(err) == 1 and "cannot reach the storage" in err[0] and str(dropper.port) in err[0], err
    # bounded: one probe call of S3_ATTEMPTS attempts, then the run stops (aiohttp opens a
    # second connection when a pooled one is dropped, so at most two connections an attempt)
    from storage import S3_ATTEMPTS
    assert 1 <= dropper.count <= 2 * S3_ATTEMPTS, dropper.count

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: connection refused
    assert main(["upscale", "s3://archive/in", str(tmp_path / "o"), "--s3-endpoint", f"http://127.0.0.1:{port}", *base]) == 4
    assert len(capsys.readouterr().err.strip().splitlines()) == 1

    s3, endpoint, _ = s3_endpoint
    s3fs.S3FileSystem.clear_instance_cache()
    assert main(["upscale", "s3://no-such-bucket/in", str(tmp_path / "o"), "--s3-endpoint", endpoint, *base]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no bucket 'no-such-bucket'" in err[0], err
    s3.create_bucket(Bucket="archive")
    s3.put_object(Bucket="archive", Key="in/a.png", Body=encode(photo(16, 16)))
    assert main(["upscale", "s3://archive/in", "s3://no-such-bucket/out", "--s3-endpoint", endpoint, *base]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "DST" in err[0] and "no bucket" in err[0], err


def test_ctrl_c_ends_with_one_line_and_exit_130(checkpoint, tmp_path):
    src = tmp_path / "in"
    write_tree(src, {f"p{i:02d}.png": encode(photo(24, 20, seed=i)) for i in range(40)})
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "jobs.cli", "upscale", str(src), str(tmp_path / "out"),
                             "--engine", "local", "--checkpoint", checkpoint, "--thresholds", "0.6,0.4"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # as in a terminal: a test run started in the background (`cmd &`) ignores
                            # SIGINT, and the child would inherit that and never see the Ctrl-C
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    t = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    t.start()
    deadline = time.monotonic() + 240
    while not (tmp_path / "out" / "p00.png").exists():  # mid-run: the first image is written
        assert proc.poll() is None and time.monotonic() < deadline, "".join(lines[-20:])
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    rc = proc.wait(timeout=120)
    t.join(timeout=10)
    text = "".join(lines)
    assert rc == 130, text[-3000:]
    assert "Traceback" not in text
    assert lines[-1].startswith("patchscaler: error: interrupted")
    assert not list((tmp_path / "out").rglob(".part-*"))


# --- 6. rows a killed run left behind ----------------------------------------------------

def test_next_run_folds_the_rows_a_killed_run_left(checkpoint, tmp_path):
    from pipeline.local import run_local
    from pipeline.manifest import ManifestRow, write_row
    from storage import Store
    src, dst = tmp_path / "in", tmp_path / "out"
    write_tree(src, {"a.png": encode(photo(16, 16, seed=1)), "b.png": encode(photo(16, 16, seed=2))})
    # what a run killed mid-image leaves: a's output and its row; b's row (written just
    # before its output) but no output
    store = Store(str(dst))
    store.write_atomic("a.png", encode(photo(64, 64)))
    write_row(store, ManifestRow(run_id="killed", input="a.png", output="a.png"))
    write_row(store, ManifestRow(run_id="killed", input="b.png", output="b.png"))
    s = run_local(opts_for(src, dst, checkpoint, run_id="next"))
    killed = {r["input"]: r for r in pq.read_table(dst / "_manifest" / "manifest-killed.parquet").to_pylist()}
    assert s["recovered"] == {"killed": 2}
    assert killed["a.png"]["status"] == "ok"
    assert killed["b.png"]["status"] == "interrupted" and "stopped before" in killed["b.png"]["error"]
    assert [r["input"] for r in s["rows"]] == ["b.png"] and s["skipped"] == 1  # only b is redone
    assert not list((dst / "_manifest").rglob("*.json"))  # no loose rows left


# --- 7. durability -------------------------------------------------------------------------

def test_outputs_and_manifests_are_fsynced_before_and_after_the_rename(checkpoint, tmp_path, monkeypatch):
    from pipeline.local import run_local
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(a, b, **kw):
        events.append(("replace", os.fspath(a), os.fspath(b)))
        return real_replace(a, b, **kw)

    if not os.path.exists("/proc/self/fd"):
        pytest.skip("needs /proc to name the fsync'd file")
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    src, dst = tmp_path / "in", tmp_path / "out"
    write_tree(src, {"sub/a.png": encode(photo(16, 16))})
    s = run_local(opts_for(src, dst, checkpoint, run_id="d1"))
    assert s["ok"] == 1
    renames = [e for e in events if e[0] == "replace"]
    targets = {os.path.relpath(e[2], dst) for e in renames}
    assert {"sub/a.png", "_manifest/manifest-d1.parquet"} <= targets
    assert any(t.startswith("_manifest/rows/d1/") for t in targets)
    for _, tmp, final in renames:
        i = events.index(("replace", tmp, final))
        assert ("fsync", tmp) in events[:i], f"{final}: temp file not fsync'd before the rename"
        assert ("fsync", os.path.dirname(final)) in events[i + 1:], f"{final}: folder not fsync'd after the rename"
    assert ("fsync", str(tmp_path)) in events  # the new output folder's own entry


# --- 8. symlinks, hidden names, keys with '..' ------------------------------------------------

def test_symlinks_stay_inside_src_and_skipped_entries_are_recorded(checkpoint, tmp_path):
    from pipeline.local import run_local
    src, outside, dst = tmp_path / "in", tmp_path / "outside", tmp_path / "out"
    write_tree(src, {"a.png": encode(photo(16, 16, seed=1)), "sub/b.png": encode(photo(12, 12, seed=2)),
                     ".hidden.png": encode(photo(8, 8)), ".cache/c.png": encode(photo(8, 8))})
    write_tree(outside, {"secret.png": encode(photo(8, 8, seed=3)), "album/x.png": encode(photo(8, 8, seed=4))})
    os.symlink(src / "a.png", src / "link_in.png")                 # inside SRC: read, own name
    os.symlink(src / "sub", src / "sublink")                       # folder inside SRC: followed
    os.symlink(outside / "secret.png", src / "link_out.png")       # leaves SRC
    os.symlink(outside / "album", src / "album")                   # folder leaving SRC
    os.symlink(src, src / "sub" / "loop")                          # loops back
    os.symlink(tmp_path / "nowhere.png", src / "broken.png")       # broken
    s = run_local(opts_for(src, dst, checkpoint, run_id="s1"))
    assert sorted(r["input"] for r in s["rows"]) == ["a.png", "link_in.png", "sub/b.png", "sublink/b.png"]
    assert all(r["status"] == "ok" for r in s["rows"])
    reasons = dict(s["not_read"])
    assert set(reasons) == {".hidden.png", ".cache/", "link_out.png", "album/", "sub/loop/", "sublink/loop/",
                            "broken.png"}
    assert "leaves SRC" in reasons["link_out.png"] and "leaves SRC" in reasons["album/"]
    assert "loops" in reasons["sub/loop/"] and "broken" in reasons["broken.png"]
    assert "hidden" in reasons[".hidden.png"] and "hidden" in reasons[".cache/"]
    manifest = {r["input"]: r for r in manifest_rows(dst)}
    for name, why in reasons.items():
        assert manifest[name]["status"] == "skipped" and manifest[name]["error"] == why
    assert not (dst / "link_out.png").exists() and not (dst / "album").exists()
    # a skipped entry is not an image: it never counts as done or failed
    again = run_local(opts_for(src, dst, checkpoint, run_id="s2"))
    assert again["ok"] == again["failed"] == 0 and again["skipped"] == 4 and len(again["not_read"]) == 7


# --- 9. operator comfort ----------------------------------------------------------------------

def test_help_imports_no_heavy_module_and_documents_exit_codes_and_credentials():
    code = ("import sys\nfrom jobs.cli import main\n"
            "for argv in (['--help'], ['upscale', '--help']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "heavy = [m for m in ('torch', 'ray', 'jobs.train', 'jobs.evaluate', 'jobs.build_rtm', 'patchscaler')"
            " if m in sys.modules]\nprint('HEAVY', heavy)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stdout, r.stdout[-500:]
    for text in ("--resume", "--no-resume", "--s3-profile", "AWS_ACCESS_KEY_ID", "AWS_PROFILE", "130",
                 "storage unreachable", "DST inside SRC"):
        assert text in r.stdout, text
    # the other commands still get their own arguments
    r = cli("build-rtm", "--help", timeout=120)
    assert r.returncode == 0 and "--crops-per-image" in r.stdout


def test_resume_flag_both_ways(checkpoint, tmp_path, capsys):
    from jobs.cli import main
    src = tmp_path / "in"
    write_tree(src, {"a.png": encode(photo(16, 16))})
    base = [str(src), str(tmp_path / "o"), "--engine", "local", "--checkpoint", checkpoint]
    assert main(["upscale", *base, "--resume"]) == 0
    assert "images written        1" in capsys.readouterr().out
    assert main(["upscale", *base, "--resume"]) == 0
    assert "already done          1" in capsys.readouterr().out
    assert main(["upscale", *base, "--no-resume"]) == 0
    assert "images written        1" in capsys.readouterr().out


def test_no_secret_on_the_command_line_and_credentials_from_env_or_profile(checkpoint, tmp_path, capsys,
                                                                          monkeypatch, s3_endpoint):
    import s3fs

    from jobs.cli import main
    s3, endpoint, _ = s3_endpoint
    s3.create_bucket(Bucket="archive")
    s3.put_object(Bucket="archive", Key="in/a.png", Body=encode(photo(16, 16)))
    base = ["upscale", "s3://archive/in", str(tmp_path / "o"), "--engine", "local", "--checkpoint", checkpoint,
            "--s3-endpoint", endpoint]
    with pytest.raises(SystemExit) as e:
        main([*base, "--storage-options", '{"secret": "hunter2-do-not-print"}'])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "hunter2" not in err and "AWS_ACCESS_KEY_ID" in err

    # the usual environment variables (conftest sets them, as an operator would)
    assert main(base) == 0
    capsys.readouterr()
    # no credentials anywhere: one line, exit 4, says where credentials come from
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    s3fs.S3FileSystem.clear_instance_cache()
    assert main(base) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no S3 credentials" in err[0] and "--s3-profile" in err[0], err
    # a named profile from the credentials file
    (tmp_path / "credentials").write_text("[nightly]\naws_access_key_id = AKIDNIGHTLY\naws_secret_access_key = s\n")
    s3fs.S3FileSystem.clear_instance_cache()
    assert main([*base, "--s3-profile", "nightly"]) == 0
    assert "AKIDNIGHTLY" not in capsys.readouterr().out


def test_ray_run_logs_one_line_per_stage_and_no_ray_noise(ray_session, checkpoint, tmp_path):
    """A run of the Ray engine as cron sees it (stderr not a terminal): our lines only, the
    per-stage totals in images and patches, none of Ray Data's progress logs, no core_worker
    E line (ray-project/ray#57733)."""
    src = tmp_path / "in"
    write_tree(src, {"a.png": encode(photo(24, 20, seed=1)), "b.png": encode(photo(20, 24, seed=2))})
    address = ray_session.get_runtime_context().gcs_address
    r = cli("upscale", str(src), str(tmp_path / "out"), "--checkpoint", checkpoint, "--thresholds", "0.6,0.4",
            "--address", address, "--no-report", "--progress-interval", "600", timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    err = r.stderr.strip().splitlines()
    assert not [x for x in err if "core_worker" in x or "logging_progress" in x or "streaming_executor" in x], err
    assert len(err) <= 8, err   # the plan, one line per stage, the actors' peak memory
    stage_lines = {x.split("patchscaler.progress: ")[1].split(":")[0]: x for x in err if "patchscaler.progress" in x}
    assert set(stage_lines) == {"decode + GRM", "hard Patch-DiT", "easy Patch-DiT", "stitch", "photos written"}, err
    assert "2/2 img" in stage_lines["photos written"] and "2/2 piece" in stage_lines["stitch"]
    groups = json.loads(r.stdout.split("patches per group")[1].splitlines()[0].strip())
    assert f"{groups[2]}/{groups[2]} patch" in stage_lines["hard Patch-DiT"]
    assert f"{groups[0] + groups[1]}/{groups[0] + groups[1]} patch" in stage_lines["easy Patch-DiT"]


def test_stderr_filter_drops_only_the_known_ray_line_and_survives_a_hard_exit():
    code = ("import os, sys\nfrom pipeline.quiet import drop_known_noise\n"
            "with drop_known_noise():\n"
            "    os.write(2, b\"keep 1\\n[2026-11-27 18:08:59,030 E 3793 3793] core_worker.cc:2465: Actor with class "
            "name: 'MapWorker(MapBatches(DecodeGRM))' and ID: 'ab' has constructor arguments in the object store and "
            "max_restarts > 0. See ...\\n\")\n"
            "    os.write(2, b\"bar 1/2\\rbar 2/2\\r[2026 E] a C++ line \")\n"
            "    os.write(2, b\"in two writes\\n\")\n"
            "print('between', file=sys.stderr)\n"
            "with drop_known_noise():\n"
            "    os.write(2, b'last words before a hard exit\\n')\n"
            "    os._exit(7)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, timeout=60)
    assert r.returncode == 7
    assert r.stderr == (b"keep 1\nbar 1/2\rbar 2/2\r[2026 E] a C++ line in two writes\nbetween\n"
                        b"last words before a hard exit\n"), r.stderr


# --- 10. progress inside an image ----------------------------------------------------------

def test_local_engine_shows_patches_done_and_eta_per_image(checkpoint, tmp_path, caplog):
    from pipeline.local import run_local
    from pipeline.progress import Progress
    src = tmp_path / "in"
    write_tree(src, {"big.png": encode(photo(40, 32, seed=1))})
    caplog.set_level("INFO", logger="patchscaler.progress")
    s = run_local(opts_for(src, tmp_path / "out", checkpoint, run_id="p1", max_batch=2),
                  progress=Progress(interval=0, tty=False))
    n = sum(s["patches_per_group"])
    lines = [r.getMessage() for r in caplog.records if r.name == "patchscaler.progress"]
    patch_lines = [x for x in lines if x.startswith("  piece 1/1: Patch-DiT")]
    assert len(patch_lines) >= 3, lines  # updated per Patch-DiT batch, not once per image
    assert any("ETA" in x for x in patch_lines)
    assert patch_lines[-1].startswith(f"  piece 1/1: Patch-DiT: {n}/{n} patch")
    assert any(x.startswith("  piece 1/1: GRM: 1/1 tile") for x in lines), lines   # the GRM shows progress too
    assert any(x.startswith("big.png (40x32): 0/1 piece") for x in lines), lines
    assert any(x.startswith("upscale: 1/1 img") for x in lines)
