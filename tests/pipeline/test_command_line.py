"""The command line as an operator meets it: --help loads nothing heavy and documents the exit
codes and credentials, --resume works both ways, and Ctrl-C ends with one line and exit 130."""
import os
import signal
import subprocess
import sys
import threading
import time

from helpers import ROOT, cli, encode, photo, write_tree


def test_help_imports_no_heavy_module_and_documents_exit_codes_and_credentials():
    code = ("import sys\nfrom jobs.cli import main\n"
            "for argv in (['--help'], ['upscale', '--help']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "heavy = [m for m in ('torch', 'ray', 'jobs.train', 'jobs.evaluate', 'jobs.rtm_job', 'patchscaler')"
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
