"""Storage is the one I/O layer: a checkpoint (and a variant beside its base) on a private
object store loads with the run's --s3-endpoint, as SRC, DST and --rtm do (a real S3 API over
HTTP: the moto server)."""
import os

from helpers import encode, photo


def test_a_checkpoint_on_s3_loads_with_the_runs_endpoint(checkpoint, tmp_path, capsys, s3_endpoint):
    from jobs.cli import main
    client, endpoint, _ = s3_endpoint
    client.create_bucket(Bucket="models")
    with open(checkpoint, "rb") as f:
        client.put_object(Bucket="models", Key="v1/tiny.safetensors", Body=f.read())
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    (src / "a.png").write_bytes(encode(photo(20, 16)))
    argv = ["upscale", str(src), str(dst), "--engine", "local", "--precision", "fp32", "--no-report",
            "--checkpoint", "s3://models/v1/tiny.safetensors", "--s3-endpoint", endpoint]
    assert main(argv) == 0, capsys.readouterr().err
    local = tmp_path / "local"
    assert main(["upscale", str(src), str(local), "--engine", "local", "--precision", "fp32", "--no-report",
                 "--checkpoint", checkpoint]) == 0
    assert (dst / "a.png").read_bytes() == (local / "a.png").read_bytes()   # the same model, read from S3


def test_checkpoint_load_save_and_info_go_through_storage_with_their_options(checkpoint, s3_endpoint):
    from patchscaler.checkpoint import checkpoint_info, load, save
    client, endpoint, options = s3_endpoint
    client.create_bucket(Bucket="checkpoints")
    model = load(checkpoint)
    save(model, "s3://checkpoints/a/base.safetensors", half=False, storage_options=options)
    info = checkpoint_info("s3://checkpoints/a/base.safetensors", options)
    assert info["config"]["version"] == model.cfg.version
    again = load("s3://checkpoints/a/base.safetensors", storage_options=options)
    assert all(bool((a == b).all()) for a, b in zip(again.dit.parameters(), model.dit.parameters()))
    assert os.environ.get("AWS_ACCESS_KEY_ID") == "testing"   # credentials from the environment, as a run's
