"""Which device each stage computes on: the rule (patchscaler.model.resolve_device), and a Ray
cluster that declares GPUs (ray.cluster_utils.Cluster; torch sees no CUDA here): the README's
cluster command stops at start with one line, and with the CPU override every stage reports
its device and the GPU ids Ray gave it."""
import json

import pytest

from helpers import encode, photo

from patchscaler.model import NoCUDA, resolve_device

ray = pytest.importorskip("ray")


def test_the_rule():
    # in-process: auto follows torch; an explicit device is used as given
    assert resolve_device("auto", None, cuda_available=True) == "cuda"
    assert resolve_device("auto", None, cuda_available=False) == "cpu"
    assert resolve_device("cuda:1", None, cuda_available=True) == "cuda:1"
    # a Ray stage: GPUs reserved -> cuda, none -> cpu whatever was asked (Ray hides GPUs from it)
    assert resolve_device("auto", 1.0, cuda_available=True) == "cuda"
    assert resolve_device("auto", 0.5, cuda_available=True) == "cuda"
    assert resolve_device("auto", 0.0, cuda_available=True) == "cpu"
    assert resolve_device("cuda", 0.0, cuda_available=True) == "cpu"
    # an explicit CPU overrides a GPU stage
    assert resolve_device("cpu", 1.0, cuda_available=False) == "cpu"
    with pytest.raises(NoCUDA, match="reserved 1 GPU"):
        resolve_device("auto", 1.0, cuda_available=False)
    with pytest.raises(NoCUDA, match="--device cuda"):
        resolve_device("cuda", None, cuda_available=False)


def test_precision_auto_follows_the_stage_device():
    from patchscaler.model import Runtime, native_bf16
    assert Runtime(device=resolve_device("auto", 0.0)).precision == ("bf16-dit" if native_bf16("cpu") else "fp32")


@pytest.fixture()
def gpu_cluster():
    """A one-node Ray that declares 3 GPUs (none exist): the GRM, hard and easy actors get one each."""
    from ray.cluster_utils import Cluster
    was_up = ray.is_initialized()
    if was_up:
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": 3})
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        if was_up:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)


@pytest.mark.slow
def test_gpu_stages_on_a_cluster_that_declares_gpus(gpu_cluster, checkpoint, tmp_path, capsys):
    from jobs.cli import main
    src = tmp_path / "in"
    src.mkdir()
    for i in range(2):
        (src / f"p{i}.png").write_bytes(encode(photo(24, 20, seed=i)))

    # the seam the actors use: inside an actor that holds a GPU, auto resolves to cuda, and Ray
    # gave it a GPU id (CUDA itself does not exist here, so it is passed in)
    @ray.remote(num_gpus=1, num_cpus=0)
    def where():
        return resolve_device("auto", 1.0, cuda_available=True), ray.get_gpu_ids()
    dev, ids = ray.get(where.remote())
    assert dev == "cuda" and len(ids) == 1

    # the README's cluster command as written: the GPU stages find no CUDA -> one line, exit 1,
    # before any image is read
    cmd = ["upscale", str(src), str(tmp_path / "out"), "--address", "auto", "--grm-gpus", "1", "--dit-gpus", "1",
           "--checkpoint", checkpoint]
    assert main(cmd) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "GRM stage" in err[0] and "sees no CUDA" in err[0], err
    assert not (tmp_path / "out" / "p0.png").exists()

    # the same with the CPU override: every stage reports its device and its GPU ids
    from pipeline.graph import run_pipeline
    from pipeline.options import UpscaleOptions
    s = run_pipeline(UpscaleOptions(str(src), str(tmp_path / "out2"), checkpoint=checkpoint, device="cpu",
                                    grm_gpus=1, dit_gpus=1, thresholds=(0.6, 0.4), report=False, actor_cpus=0.2))
    assert s["ok"] == 2
    for r in s["rows"]:
        d = json.loads(r["trace"])["devices"]
        assert d["grm"]["device"] == "cpu" and len(d["grm"]["gpu_ids"]) == 1
        for pool in ("hard", "easy"):
            if pool in d:
                assert d[pool]["device"] == "cpu" and len(d[pool]["gpu_ids"]) == 1
        assert d["stitch"] == {"device": "cpu", "precision": d["stitch"]["precision"], "gpu_ids": []}
