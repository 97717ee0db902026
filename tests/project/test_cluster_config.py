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


def test_every_node_starts_ray_with_token_auth_and_the_token_comes_from_a_secret():
    import re
    root = Path(__file__).parents[2]
    cfg = yaml.safe_load((root / "cluster.yaml").read_text())
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in cfg[key] if "ray start" in c]
        assert starts and all(c.startswith("RAY_AUTH_MODE=token ray start") for c in starts), key
    setup = " ".join(cfg["setup_commands"])
    assert "~/.ray/auth_token" in setup and "umask 077" in setup and "secretsmanager get-secret-value" in setup
    # no token in the repository: nothing that looks like one in the config or the README
    for f in ("cluster.yaml", "README.md"):
        text = (root / f).read_text()
        assert not re.search(r"RAY_AUTH_TOKEN=[0-9a-fA-F]{16,}", text), f
        assert not re.search(r"\b[0-9a-f]{32,}\b", text), f
