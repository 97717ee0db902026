"""Storage faults mid-run, against a real S3 API (moto server) behind a fault-injecting proxy:
transient faults (503 SlowDown, dropped connections) are retried per object with backoff and
every photo is written exactly once; storage that stays down stops the run with exit 4 and one
line, in both engines, and the next run redoes only what was not written."""
import s3fs
from faulty_s3 import FaultyProxy
from helpers import encode, photo

N = 6


def _archive(s3):
    s3.create_bucket(Bucket="archive")
    for i in range(N):
        s3.put_object(Bucket="archive", Key=f"in/p{i}.png", Body=encode(photo(20, 16, seed=i)))


def _outputs(proxy):
    return {k: n for k, n in proxy.puts.items() if k.startswith("archive/out/p")}


def _cmd(proxy, checkpoint, engine, *extra):
    return ["upscale", "s3://archive/in", "s3://archive/out", "--s3-endpoint", proxy.endpoint, "--engine", engine,
            "--checkpoint", checkpoint, "--precision", "fp32", "--no-report", *extra]


def test_transient_faults_are_retried_and_every_photo_is_written_once(checkpoint, s3_endpoint, capsys):
    """The retries live in the Store both engines use; the Ray engine's stop is the next test."""
    from jobs.cli import main
    engine = "local"
    s3, endpoint, _ = s3_endpoint
    _archive(s3)
    proxy = FaultyProxy(endpoint)
    s3fs.S3FileSystem.clear_instance_cache()
    proxy.every = 4                                   # every 4th request: 503 SlowDown or a dropped connection
    # and after the second output, the store answers SlowDown to everything for 3 s
    proxy.on_put = lambda key: (len(_outputs(proxy)) == 2 and proxy.mode == "pass" and not proxy.until
                                and proxy.fault("slowdown", 3.0))
    rc = main(_cmd(proxy, checkpoint, engine, "--storage-retry", "60"))
    assert rc == 0, capsys.readouterr().out[-3000:]
    assert proxy.faults > 5
    assert _outputs(proxy) == {f"archive/out/p{i}.png": 1 for i in range(N)}
    proxy.shutdown()


def test_storage_that_stays_down_stops_a_local_run_with_exit_4_and_the_next_run_resumes(checkpoint, s3_endpoint,
                                                                                         capsys):
    _stays_down("local", checkpoint, s3_endpoint, capsys)


def test_storage_that_stays_down_stops_a_ray_run_with_exit_4_and_the_next_run_resumes(ray_session, checkpoint,
                                                                                       s3_endpoint, capsys):
    _stays_down("ray", checkpoint, s3_endpoint, capsys)


def _stays_down(engine, checkpoint, s3_endpoint, capsys):
    from jobs.cli import main
    s3, endpoint, _ = s3_endpoint
    _archive(s3)
    proxy = FaultyProxy(endpoint)
    s3fs.S3FileSystem.clear_instance_cache()
    proxy.on_put = lambda key: len(_outputs(proxy)) == 2 and proxy.fault("slowdown")   # down for good
    capsys.readouterr()
    assert main(_cmd(proxy, checkpoint, engine, "--storage-retry", "2", "--run-id", "down")) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did not answer" in err[0] and "run the same command again" in err[0], err
    assert "\x1b[" not in err[0] and "RayTaskError" not in err[0]
    written = set(_outputs(proxy))
    assert len(written) >= 2
    proxy.fault("pass")
    proxy.on_put = None
    s3fs.S3FileSystem.clear_instance_cache()
    # the next run (the plan is the same code in both engines: the in-process one here)
    assert main(_cmd(proxy, checkpoint, "local", "--run-id", "back")) == 0
    assert _outputs(proxy) == {f"archive/out/p{i}.png": 1 for i in range(N)}    # the first ones not again
    proxy.shutdown()
