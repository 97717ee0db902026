"""cluster.yaml validates against the schema the ray package ships, and has one worker type
per pool with whole-number custom resources."""
import json
from pathlib import Path

import pytest
import yaml

jsonschema = pytest.importorskip("jsonschema")


def test_cluster_yaml_matches_ray_schema():
    import ray
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    cfg = yaml.safe_load((Path(__file__).parents[2] / "cluster.yaml").read_text())
    jsonschema.validate(cfg, schema)
    types = cfg["available_node_types"]
    for pool in ("grm", "dit_hard", "dit_easy"):
        owners = [n for n, t in types.items() if pool in t["resources"]]
        assert len(owners) == 1, pool
        assert isinstance(types[owners[0]]["resources"][pool], int)
        assert types[owners[0]]["resources"].get("GPU", 0) >= 1
    assert cfg["head_node_type"] == "head" and "GPU" not in types["head"]["resources"]
