"""Several nodes (ray.cluster_utils.Cluster) of the kind the README's cluster runs on: a head
and one node per pool type, each with its custom resource and a GPU it declares (none exists:
torch sees no CUDA here). The README's cluster command stops at start with one line; with the
CPU override each pool lands on its own node type, hard patches are refined only by the hard
pool, and every stage reports its device and the GPU ids Ray gave it."""
import json

import pytest

from helpers import encode, photo

from patchscaler.model import resolve_device

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow
POOL_NODES = ("grm", "dit_hard", "dit_easy")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The cluster for this module's tests (one start: a cluster costs seconds of CPU per node),
    then the test run's own local Ray (conftest's ray_session) again."""
    from ray.cluster_utils import Cluster
    was_up = ray.is_initialized()
    if was_up:
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    nodes = {name: c.add_node(num_cpus=1, num_gpus=1, resources={name: 1}) for name in POOL_NODES}
    try:
        ray.init(address=c.address, log_to_driver=False)
        c.wait_for_nodes()
        src = tmp_path_factory.mktemp("cluster") / "in"
        src.mkdir()
        for i in range(4):
            (src / f"p{i}.png").write_bytes(encode(photo(24, 24, seed=i)))
        yield c, nodes, src
    finally:
        ray.shutdown()
        c.shutdown()
        if was_up:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)


def test_the_readme_cluster_command_stops_at_start_where_no_cuda_is(cluster, checkpoint, tmp_path, capsys):
    from jobs.cli import main
    _, _, src = cluster

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


def test_pools_placed_by_custom_resources_and_gpus_reported(cluster, checkpoint, tmp_path):
    from pipeline.graph import run_pipeline
    from pipeline.options import UpscaleOptions
    _, nodes, src = cluster
    by_id = {n["NodeID"][:12]: n["Resources"] for n in ray.nodes() if n["Alive"]}
    opts = UpscaleOptions(str(src), str(tmp_path / "out"), checkpoint=checkpoint, precision="fp32",
                          thresholds=(0.6, 0.4), report=False, actor_cpus=0.25, device="cpu",
                          grm_gpus=1, dit_gpus=1, grm_resources={"grm": 0.5},
                          hard_resources={"dit_hard": 0.5}, easy_resources={"dit_easy": 0.5})
    s = run_pipeline(opts)
    ppg = s["patches_per_group"]
    assert s["ok"] == 4 and len(ppg) == 3 and all(c > 0 for c in ppg), ppg
    seen = {"grm": set(), "hard": set(), "easy": set()}
    for r in s["rows"]:
        t = json.loads(r["trace"])
        seen["grm"].add(t["grm"])
        for g, (pool, node) in t["groups"].items():
            assert pool == ("hard" if g == "2" else "easy")
            seen[pool].add(node)
        # with the CPU override, each GPU stage computes on the CPU and holds the GPU Ray gave it
        d = t["devices"]
        assert d["grm"]["device"] == "cpu" and len(d["grm"]["gpu_ids"]) == 1
        for pool in ("hard", "easy"):
            if pool in d:
                assert d[pool]["device"] == "cpu" and len(d[pool]["gpu_ids"]) == 1
        assert d["stitch"] == {"device": "cpu", "precision": d["stitch"]["precision"], "gpu_ids": []}
    assert all("grm" in by_id[n] for n in seen["grm"])
    assert seen["hard"] and all("dit_hard" in by_id[n] for n in seen["hard"])
    assert seen["easy"] and all("dit_easy" in by_id[n] for n in seen["easy"])
    # three distinct worker nodes were up, and each pool ran on its own node and no other
    node_of = {name: n.node_id[:12] for name, n in nodes.items()}
    assert len(set(node_of.values())) == 3 and set(node_of.values()) <= set(by_id)
    assert seen == {"grm": {node_of["grm"]}, "hard": {node_of["dit_hard"]}, "easy": {node_of["dit_easy"]}}, \
        (seen, node_of)
