"""Several nodes (ray.cluster_utils.Cluster): each pool lands on its own node type and hard
patches are refined only by the hard pool."""
import json

import pytest

from helpers import encode, photo

ray = pytest.importorskip("ray")


@pytest.mark.slow
def test_pools_placed_by_custom_resources(checkpoint, tmp_path):
    from ray.cluster_utils import Cluster

    from pipeline.graph import run_pipeline
    from pipeline.options import UpscaleOptions
    was_up = ray.is_initialized()
    if was_up:
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    nodes = {name: cluster.add_node(num_cpus=1, resources={name: 1}) for name in ("grm", "dit_hard", "dit_easy")}
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        cluster.wait_for_nodes()
        by_id = {n["NodeID"][:12]: n["Resources"] for n in ray.nodes() if n["Alive"]}
        src = tmp_path / "in"
        src.mkdir()
        for i in range(4):
            (src / f"p{i}.png").write_bytes(encode(photo(24, 24, seed=i)))
        opts = UpscaleOptions(str(src), str(tmp_path / "out"), checkpoint=checkpoint, precision="fp32",
                              thresholds=(0.6, 0.4), report=False, actor_cpus=0.25,
                              grm_resources={"grm": 0.5}, hard_resources={"dit_hard": 0.5},
                              easy_resources={"dit_easy": 0.5})
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
        assert all("grm" in by_id[n] for n in seen["grm"])
        assert seen["hard"] and all("dit_hard" in by_id[n] for n in seen["hard"])
        assert seen["easy"] and all("dit_easy" in by_id[n] for n in seen["easy"])
        # three distinct worker nodes were up, and each pool ran on its own node and no other
        node_of = {name: n.node_id[:12] for name, n in nodes.items()}
        assert len(set(node_of.values())) == 3 and set(node_of.values()) <= set(by_id)
        assert seen == {"grm": {node_of["grm"]}, "hard": {node_of["dit_hard"]}, "easy": {node_of["dit_easy"]}}, \
            (seen, node_of)
    finally:
        ray.shutdown()
        cluster.shutdown()
        if was_up:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
