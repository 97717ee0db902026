import os
import sys

from actors.runtime import passive_openmp

# before torch loads: the Ray workers, the driver and the moto server do not fight over the 2 cores
passive_openmp()

import pytest  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
torch.set_num_threads(2)
# S3 credentials as an operator gives them (the environment), for the moto server, which takes
# any; set before the session's Ray starts so its workers inherit them. Never real ones.
for _k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
    os.environ.setdefault(_k, "testing")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(scope="session")
def tiny_model():
    from patchscaler import PatchScaler, Runtime, tiny_config
    from patchscaler.rtm import RTM
    torch.manual_seed(0)
    m = PatchScaler(tiny_config())
    m.rtm = RTM(torch.randn(16, m.cfg.texture.feature_dim), torch.randn(16, m.cfg.latent_channels, 8, 8))
    return m.configure(Runtime(precision="fp32", max_batch=8))


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole test session (ray.init costs ~8 s here): a Ray of its own
    ("local"), never one that someone else's `ray start` left running on this host."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """A tiny model saved as a checkpoint, with a non-trivial Patch-DiT (so pixels depend on
    the noise) and a confidence head whose output spreads over all groups."""
    from patchscaler import PatchScaler, tiny_config
    from patchscaler.checkpoint import save
    from patchscaler.rtm import RTM
    torch.manual_seed(0)
    m = PatchScaler(tiny_config())
    m.rtm = RTM(torch.randn(16, m.cfg.texture.feature_dim), torch.randn(16, m.cfg.latent_channels, 8, 8))
    for p in m.dit.out.parameters():
        p.data.normal_(0, 0.02)
    for p in m.grm.c_head.parameters():
        p.data.normal_(0, 0.3)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save(m, str(path), half=False)
    return str(path)


@pytest.fixture()
def s3_endpoint():
    """A real S3 API over HTTP on loopback (moto server), reachable from Ray workers, with
    credentials passed explicitly in the returned fsspec options."""
    moto_server = pytest.importorskip("moto.server")
    import boto3
    import urllib.request
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    # moto keeps its buckets in process-wide state, shared by every server in this process:
    # each test starts from an empty S3
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=30).close()
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")
    options = {"client_kwargs": {"endpoint_url": endpoint}, "key": "test", "secret": "test"}
    yield client, endpoint, options
    server.stop()


# The fast loop (`scripts/test.sh --fast`; its time: README.md): the method's parts, planning, naming, the
# manifest and the report, on tiny models; no Ray start, no full model run. A test file joins it
# as a whole with `pytestmark = pytest.mark.fast`, a single test with @pytest.mark.fast.
def pytest_collection_modifyitems(config, items):
    """A test marked slow stays out of the fast loop, also in a file marked fast as a whole: the
    file's mark moves onto its other tests. The files whose tests use the session's Ray run last,
    together: the Ray starts once, late, and the tests that start Rays of their own (a multi-node
    cluster) run before it, so it is never stopped and started again for them."""
    for module in {item.getparent(pytest.Module) for item in items if item.get_closest_marker("slow")}:
        if module is None or not any(m.name == "fast" for m in module.own_markers):
            continue
        module.own_markers[:] = [m for m in module.own_markers if m.name != "fast"]
        for item in items:
            if item.getparent(pytest.Module) is module and not item.get_closest_marker("slow"):
                item.add_marker(pytest.mark.fast)
    with_ray = {item.getparent(pytest.Module) for item in items if "ray_session" in item.fixturenames}
    items.sort(key=lambda item: item.getparent(pytest.Module) in with_ray)   # stable: each group keeps its order
