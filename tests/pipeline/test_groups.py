"""Any number of PGS groups through the whole product: a 5-group model (4 thresholds, 5 taus,
5 steps) through the Ray pipeline, the manifest, the summary and the report, with the hard pool
serving two groups (--hard-groups, a run option that leaves the model version alone); and
the CLI's per-pool custom resources."""
import json

import pyarrow.parquet as pq
import pytest
import torch

from helpers import encode, photo, write_tree

ray = pytest.importorskip("ray")

N = 5


def images() -> dict[str, bytes]:
    return {f"p{i}.png": encode(photo(28, 24, seed=20 + i)) for i in range(4)}


@pytest.fixture(scope="module")
def five_groups(tmp_path_factory):
    """A tiny 5-group checkpoint whose thresholds are the Qmap quintiles of the test images,
    so that every group gets patches."""
    from patchscaler import PatchScaler, Runtime, flow, imageio, tiny_config
    from patchscaler.checkpoint import save
    from patchscaler.config import override
    from patchscaler.rtm import RTM
    torch.manual_seed(0)
    cfg = tiny_config(pgs={"thresholds": (0.8, 0.6, 0.4, 0.2), "taus": (100, 200, 400, 700, 1000),
                           "steps": (2, 4, 8, 14, 20), "hard_groups": (N - 1,)}, version="five-groups")
    m = PatchScaler(cfg)
    m.rtm = RTM(torch.randn(16, cfg.texture.feature_dim), torch.randn(16, cfg.latent_channels, 8, 8))
    for p in m.dit.out.parameters():
        p.data.normal_(0, 0.02)
    for p in m.grm.c_head.parameters():
        p.data.normal_(0, 0.3)
    m.configure(Runtime())
    q = torch.cat([flow.begin(m, imageio.decode(data)).coarse.qmap for data in images().values()])
    cuts = tuple(float(x) for x in torch.quantile(q, torch.tensor([0.8, 0.6, 0.4, 0.2])))
    m.cfg = override(m.cfg, pgs={"thresholds": cuts})
    path = tmp_path_factory.mktemp("five") / "five.safetensors"
    save(m, str(path), half=False)
    return str(path)


def test_five_groups_through_ray_manifest_and_report(ray_session, five_groups, tmp_path):
    from pipeline.graph import run_pipeline
    from pipeline.local import run_local
    from pipeline.options import UpscaleOptions
    src = tmp_path / "in"
    write_tree(src, images())
    s = run_pipeline(UpscaleOptions(str(src), str(tmp_path / "ray"), checkpoint=five_groups, max_batch=16,
                                    hard_groups=(3, 4), run_id="five"))
    assert s["ok"] == 4 and s["failed"] == 0
    ppg = s["patches_per_group"]
    assert len(ppg) == N and all(c > 0 for c in ppg), ppg
    # the hard pool served groups 3 and 4, the easy pool the others, and each counted its patches
    for r in s["rows"]:
        pools = {int(g): pool for g, (pool, _) in json.loads(r["trace"])["groups"].items()}
        assert pools and all(pool == ("hard" if g >= 3 else "easy") for g, pool in pools.items()), pools
    assert s["stages"]["hard"] == [ppg[3] + ppg[4]] * 2 and s["stages"]["easy"] == [sum(ppg[:3])] * 2
    # manifest: five counts per image; the n_* columns summarise them
    rows = pq.read_table(s["manifest"]).to_pylist()
    assert len(rows) == 4
    for r in rows:
        gc = r["group_counts"]
        assert len(gc) == N and (r["n_simple"], r["n_medium"], r["n_hard"]) == (gc[0], sum(gc[1:-1]), gc[-1])
        assert r["model_version"] == "five-groups"   # --hard-groups is not part of the model
    assert [sum(r["group_counts"][g] for r in rows) for g in range(N)] == ppg
    page = (tmp_path / "ray" / "_manifest" / "report-five.html").read_text()
    assert "simple / medium 1 / medium 2 / medium 3 / hard" in page
    assert " / ".join(str(c) for c in ppg) in page
    # the same bytes as the in-process engine
    ref = run_local(UpscaleOptions(str(src), str(tmp_path / "local"), checkpoint=five_groups, max_batch=16,
                                   run_id="five-local", report=False))
    assert ref["patches_per_group"] == ppg
    for name in images():
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name


def test_cli_run_options_for_groups_and_pool_resources():
    from jobs.cli import build_parser
    from pipeline.fields import resources as resources_arg
    a = build_parser("upscale").parse_args(
        ["upscale", "in", "out", "--hard-groups", "3,4", "--grm-resources", "grm=1",
         "--hard-resources", '{"dit_hard": 1}', "--easy-resources", "dit_easy=1,ssd=0.5"])
    assert a.hard_groups == (3, 4)
    assert (a.grm_resources, a.hard_resources, a.easy_resources) == (
        {"grm": 1.0}, {"dit_hard": 1.0}, {"dit_easy": 1.0, "ssd": 0.5})
    import argparse
    for bad in ("grm", '["grm"]', "grm=many"):
        with pytest.raises(argparse.ArgumentTypeError):
            resources_arg(bad)


def test_a_hard_group_the_model_lacks_fails_before_the_run(five_groups, tmp_path):
    from pipeline.graph import run_pipeline
    from pipeline.options import UpscaleOptions
    src = tmp_path / "in"
    write_tree(src, images())
    with pytest.raises(ValueError, match=r"hard groups \[7\] do not exist"):
        run_pipeline(UpscaleOptions(str(src), str(tmp_path / "ray"), checkpoint=five_groups, hard_groups=(7,)))
    assert not list((tmp_path / "ray").glob("*.png"))
