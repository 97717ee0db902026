"""A storage that cannot be reached or used ends the run with one line and its exit code, after a
bounded wait; no secret is taken on the command line, and credentials come from the
environment or a named profile."""
import socket
import threading

import pytest

from helpers import encode, photo


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


@pytest.mark.fast
def test_a_storage_down_for_a_whole_budget_is_met_once_not_once_per_operation(monkeypatch):
    """One object's retries spent: the store counts as down, and its next operations get one try
    each (no second wait) until one is answered; then a fault is waited out again."""
    import storage.store as store_module
    from storage import Store, StorageError
    slept, clock = [], [0.0]     # a clock that only pauses (and slow tries, below) move

    def sleep(s):
        slept.append(s)
        clock[0] += s
    monkeypatch.setattr(store_module.time, "sleep", sleep)
    monkeypatch.setattr(store_module.time, "monotonic", lambda: clock[0])
    st = Store("s3://bucket/out", {"client_kwargs": {"endpoint_url": "http://127.0.0.1:9"}}, retry_budget=3.0)
    calls = []

    def down():
        calls.append(1)
        raise ConnectionResetError("connection reset by peer")
    with pytest.raises(StorageError, match=r"did not answer a write of a.png for 3 s of retries"):
        st.retrying("a write of a.png", down)
    assert sum(slept) == pytest.approx(3.0) and len(calls) > 1 and st.down
    slept.clear(), calls.clear()
    with pytest.raises(StorageError, match=r"did not answer a read of b.png \(no retries"):
        st.retrying("a read of b.png", down)
    assert slept == [] and len(calls) == 1
    assert st.retrying("a read of c.png", lambda: "answered") == "answered" and not st.down
    with pytest.raises(StorageError, match="for 3 s of retries"):    # waited out again
        st.retrying("a write of d.png", down)
    assert sum(slept) == pytest.approx(3.0)
    with pytest.raises(ValueError):          # not a storage fault: raised as it is, never waited on
        Store("s3://bucket/out", retry_budget=3.0).retrying("x", lambda: int("x"))
    # the budget is wall time, the tries included: tries of 2 s each leave room for 2 tries of a
    # 3 s budget and less than a second of pauses, not 3 s of pauses and as many tries as fit

    def slow_down():
        clock[0] += 2.0
        down()
    st, calls[:], slept[:] = Store("s3://bucket/out", retry_budget=3.0), [], []
    with pytest.raises(StorageError, match="for 4 s of retries"):
        st.retrying("a write of e.png", slow_down)
    assert len(calls) == 2 and sum(slept) <= 1.0
