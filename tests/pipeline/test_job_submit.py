"""`ray job submit --working-dir . -- python -m jobs.upscale ...` against a real local head
(ray[default]; token auth as Ray 2.60 turns it on), with no model options: the committed default
checkpoint, whose pixels through the job equal the in-process engine's. A repeated dated submission
id is refused, and a submission without the token, or with another one, is refused.

The head here is this test's own: in its own temp dir, on free ports, in the foreground (`ray
start --block`), and stopped by ending exactly the processes it started, never with `ray stop`,
which stops every Ray on the host (someone's running job included: here the test session's own
Ray stands for it)."""
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
pytestmark = pytest.mark.slow


def _free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every live process we can see (Linux /proc; a
    zombie has ended: only its parent's reaping is left)."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state, ppid = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError, IndexError):
            continue
        if state != "Z":
            out[int(d)] = (int(ppid), cmd)
    return out


class Head:
    """A Ray head node of a test's own (see the module docstring)."""

    def __init__(self, ray_bin: str, env: dict):
        self.ray_bin, self.env = ray_bin, env
        self.temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths
        (self.gcs, self.dash, self.client, self.nm, self.om, self.agent_http, self.agent_grpc,
         self.renv, self.metrics) = _free_ports(9)
        self.proc = None
        self.seen: dict[int, str] = {}  # every process of ours ever seen: pid -> command line

    def start(self) -> "Head":
        cmd = [self.ray_bin, "start", "--head", "--block", "--num-cpus=1", f"--temp-dir={self.temp}",
               f"--port={self.gcs}", f"--node-manager-port={self.nm}", f"--object-manager-port={self.om}",
               f"--ray-client-server-port={self.client}", f"--dashboard-agent-listen-port={self.agent_http}",
               f"--dashboard-agent-grpc-port={self.agent_grpc}", f"--runtime-env-agent-port={self.renv}",
               f"--metrics-export-port={self.metrics}", "--disable-usage-stats", "--include-dashboard=true",
               "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dash}"]
        self.log = open(os.path.join(self.temp, "ray-start.log"), "w")
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        try:
            deadline = time.monotonic() + 180
            while not self._core_up():
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"ray start failed: {Path(self.log.name).read_text()[-2000:]}")
                time.sleep(0.5)
        except BaseException:  # never leave a half-started head behind
            self.stop()
            raise
        return self

    def _core_up(self) -> bool:
        names = " ".join(self.pids().values())
        if "gcs_server" not in names or "raylet" not in names:
            return False
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.gcs)) == 0

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.dash}"

    def pids(self) -> dict[int, str]:
        """This head's processes: `ray start` itself, everything naming its temp dir, and all
        their descendants (workers rename themselves; job drivers are their children)."""
        procs = _processes()
        mine = {p for p, (_, cmd) in procs.items() if self.temp in cmd}
        if self.proc is not None and self.proc.pid in procs:
            mine.add(self.proc.pid)
        grew = True
        while grew:
            kids = {p for p, (pp, _) in procs.items() if pp in mine} - mine
            mine |= kids
            grew = bool(kids)
        # a process whose parent died is re-parented to init: still ours if we saw it before
        mine |= {p for p, cmd in self.seen.items() if p in procs and procs[p][1] == cmd}
        self.seen.update({p: procs[p][1] for p in mine})
        return {p: procs[p][1] for p in mine}

    def logs(self, tail: int = 3000) -> str:
        """The end of the head's own logs (`ray start`, the dashboard), for a failure's message:
        the temp dir goes with the head."""
        out = []
        for path in (Path(self.log.name), Path(self.temp, "session_latest", "logs", "dashboard.log")):
            try:
                out.append(f"\n--- {path.name}:\n" + path.read_text(errors="replace")[-tail:])
            except OSError:
                continue
        return "".join(out)

    def wait_for_job_agent(self, timeout: float = 180) -> None:
        """Under load the dashboard answers before its job agent has registered ("No available
        agent to submit job"): submit a no-op job until one is accepted."""
        deadline, n = time.monotonic() + timeout, 0
        while True:
            n += 1
            r = subprocess.run([self.ray_bin, "job", "submit", "--address", self.address, "--no-wait",
                                "--submission-id", f"probe-{n}", "--", "true"],
                               env=self.env, capture_output=True, text=True, timeout=120)
            if r.returncode == 0:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"the job agent never answered: {(r.stdout + r.stderr)[-2000:]}")
            time.sleep(2)

    def stop(self) -> None:
        """End this head's processes and no others: SIGTERM to `ray start --block` (it stops
        what it started), then whatever of ours is left, by pid. After a job has run, `ray
        start` takes ~30 s to stop its dashboard's modules; a few seconds' grace is enough for
        the rest (more only made the test wait: some always need SIGKILL), and ours are ended by
        pid anyway."""
        self.pids()  # remember the whole tree before parents go
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        for sig, wait in ((signal.SIGTERM, 3), (signal.SIGKILL, 10)):
            left = self.pids()
            for pid in left:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.2)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            self.log.close()
        shutil.rmtree(self.temp, ignore_errors=True)

    def __enter__(self):
        return self.start()  # a failed start stops what it started

    def __exit__(self, *exc):
        self.stop()


@pytest.fixture()
def ray_cli():
    ray_bin = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")
    if ray_bin is None:
        pytest.skip("the ray CLI is not installed")
    if not os.path.isdir("/proc"):
        pytest.skip("finds its own Ray processes in /proc (Linux)")
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16),
               RAY_ENABLE_UV_RUN_RUNTIME_ENV="0", RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    return ray_bin, env


def _shipped_model_inputs(src: Path) -> None:
    """Two crops of the bundled samples, small enough for the committed model on 2 cores."""
    from PIL import Image
    src.mkdir()
    samples = ROOT / "patchscaler" / "samples"
    for name, box in (("astronaut.jpg", (20, 10, 84, 58)), ("coffee.png", (30, 40, 78, 88))):
        im = Image.open(samples / ("skimage__" + name.split(".")[0] + ".jpg")).convert("RGB")
        im.crop(box).save(src / name)


def test_job_submit_runs_the_shipped_model_like_in_process_and_stops_only_its_own_ray(ray_session, ray_cli, tmp_path):
    import pyarrow.parquet as pq
    import torch
    from patchscaler.checkpoint import checkpoint_info
    from patchscaler.upscale import DEFAULT_CHECKPOINT
    from pipeline.local import run_local
    from pipeline.options import UpscaleOptions
    ray_bin, env = ray_cli
    assert DEFAULT_CHECKPOINT.exists(), "the default checkpoint is a committed product artifact"
    src, out = tmp_path / "in", tmp_path / "out"
    _shipped_model_inputs(src)
    with Head(ray_bin, env) as head:
        head.wait_for_job_agent()
        # the venv's own interpreter, as a user's activated venv gives `python`: not whichever is on PATH
        sub = [ray_bin, "job", "submit", "--address", head.address, "--working-dir", str(ROOT),
               "--submission-id", "upscale-2026-11-22", "--", sys.executable, "-m", "jobs.upscale",
               str(src), str(out), "--no-report"]
        r = subprocess.run(sub, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:] + head.logs()
        assert "succeeded" in (r.stdout + r.stderr)
        again = subprocess.run(sub, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert again.returncode != 0  # the same dated id cannot run twice
        # without the token, or with another one, the Jobs API refuses the submission
        home = tmp_path / "home"     # no ~/.ray/auth_token to fall back on
        home.mkdir()
        for name, client in (("no token", {k: v for k, v in env.items() if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_MODE")}),
                             ("a wrong token", dict(env, RAY_AUTH_TOKEN=secrets.token_hex(16)))):
            client = dict(client, HOME=str(home))
            r = subprocess.run([ray_bin, "job", "submit", "--address", head.address, "--no-wait",
                                "--submission-id", f"intruder-{len(name)}", "--", "touch", str(tmp_path / "pwned")],
                               env=client, capture_output=True, text=True, timeout=120, cwd=ROOT)
            said = r.stdout + r.stderr
            assert r.returncode != 0, (name, said[-2000:])
            assert "401" in said or "Authentication" in said or "authentication" in said, (name, said[-2000:])
        time.sleep(2)
        assert not (tmp_path / "pwned").exists()
        own = head.pids()
    # the test's head is gone, all of it, and the other Ray on this host (the session's) is untouched
    now = _processes()
    left = [cmd for pid, cmd in own.items() if pid in now and now[pid][1] == cmd]
    assert not left, f"processes of the test's head outlived its teardown: {left}"
    probe = ray_session.remote(num_cpus=0)(lambda: "up")
    assert ray_session.get(probe.remote(), timeout=120) == "up", "stopping the test's head must leave other Rays alone"

    # the job's photos: the committed model's, byte for byte the in-process engine's. Bitwise
    # equality needs the same float summation order: the actors run one intra-op thread each
    # (PATCHSCALER_THREADS=1), so the oracle does too (at other thread counts a pixel here and
    # there can differ by 1/255: measured, 1 pixel of 147k)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = run_local(UpscaleOptions(str(src), str(tmp_path / "local"), run_id="oracle"))
    finally:
        torch.set_num_threads(threads)
    [manifest] = (out / "_manifest").glob("manifest-*.parquet")
    rows = pq.read_table(manifest).to_pylist()
    assert local["ok"] == 2 and sorted(r["status"] for r in rows) == ["ok", "ok"]
    version = checkpoint_info(str(DEFAULT_CHECKPOINT))["config"]["version"]
    for row in rows:
        assert row["model_version"] == version
        assert (out / row["output"]).read_bytes() == (tmp_path / "local" / row["output"]).read_bytes(), row["output"]
    # the trained confidence head sends some patches to the cheaper groups
    assert sum(sum(r["group_counts"][:-1]) for r in rows) > 0
