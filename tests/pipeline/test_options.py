"""Options are declared once (the dataclasses) and the command lines are built from them: the
defaults a command line parses to are the dataclass's, every option has help, and the import
graph of our packages has no circle."""
import argparse
import ast
import dataclasses
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("storage", "patchscaler", "rtm_index", "actors", "pipeline", "jobs")   # storage: the one I/O layer, under the method too


def _parser(cmd):
    from jobs.cli import build_parser
    return build_parser(cmd)


def _sub(ap, cmd):
    return next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction)).choices[cmd]


@pytest.mark.parametrize("cmd,argv,cls,extra", [
    ("upscale", ["upscale", "S", "D"], "pipeline.options:UpscaleOptions", {"src": "S", "dst": "D"}),
    ("train", ["train", "--data", "DATA"], "jobs.train:TrainOptions", {"data": "DATA"}),
    ("build-rtm", ["build-rtm", "S", "D"], "jobs.rtm_job:BuildRTMOptions", {"src": "S", "dst": "D"}),
])
def test_a_command_line_parses_to_its_dataclass_defaults(cmd, argv, cls, extra):
    import importlib

    from jobs.args import from_args
    mod, name = cls.split(":")
    cls = getattr(importlib.import_module(mod), name)
    a = _parser(cmd).parse_args(argv)
    parsed, default = from_args(cls, a), cls(**extra)
    skip = {"run_id"}  # a fresh one each time
    assert {k: v for k, v in dataclasses.asdict(parsed).items() if k not in skip} == \
           {k: v for k, v in dataclasses.asdict(default).items() if k not in skip}
    # and every field the command line sets comes from a field declared with opt()
    declared = {f.name for f in dataclasses.fields(cls) if "cli" in f.metadata}
    dests = {act.dest for act in _sub(_parser(cmd), cmd)._actions}
    assert declared <= dests


def test_an_option_value_reaches_the_dataclass():
    from jobs.args import from_args
    from pipeline.options import UpscaleOptions
    a = _parser("upscale").parse_args(["upscale", "S", "D", "--format", "jpg", "--outscale", "2", "--no-report",
                                       "--compile-backend", "cudagraphs", "--hard-resources", "gpu_h=1",
                                       "--thresholds", "0.6,0.4", "--run-id", "r1", "--no-resume"])
    o = from_args(UpscaleOptions, a)
    assert (o.out_format, o.outscale, o.report, o.compile, o.hard_resources, o.thresholds, o.run_id, o.resume) == \
           ("JPEG", 2.0, False, "cudagraphs", {"gpu_h": 1.0}, (0.6, 0.4), "r1", False)


@pytest.mark.parametrize("cmd", ["upscale", "build-rtm", "train", "evaluate", "plan"])
def test_every_option_has_help(cmd):
    sub = _sub(_parser(cmd), cmd)
    missing = [a.option_strings or a.dest for a in sub._actions if not a.help]
    assert not missing


def test_train_needs_its_data_named(capsys):
    from jobs.cli import main
    with pytest.raises(SystemExit) as e:
        main(["train", "all"])
    assert e.value.code == 2 and "--data" in capsys.readouterr().err


def _imports(path: Path) -> set[str]:
    """The packages of ours a module imports (at any depth: lazy imports count too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        out |= {n for n in names if n.split(".")[0] in PACKAGES}
    return out


def test_the_import_graph_has_no_circle_and_flows_one_way():
    modules = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            name = ".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            modules[name] = f
    graph = {m: set() for m in modules}
    for m, f in modules.items():
        for imp in _imports(f):
            target = imp if imp in modules else imp.rsplit(".", 1)[0]
            if target in modules and target != m:
                graph[m].add(target)
        # relative imports inside a package
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = m.split(".")[: len(m.split(".")) - node.level + (1 if f.name == "__init__.py" else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
                if target in modules and target != m:
                    graph[m].add(target)
    # layers: a package imports only those before it (jobs may import all)
    rank = {p: i for i, p in enumerate(PACKAGES)}
    upward = [(m, t) for m in graph for t in graph[m] if rank[t.split(".")[0]] > rank[m.split(".")[0]]]
    assert not upward, upward
    # no circle among modules (a package's __init__ re-exporting its own modules is not one)
    seen, stack, cycles = set(), [], []

    def visit(m):
        if m in stack:
            cycles.append(stack[stack.index(m):] + [m])
            return
        if m in seen:
            return
        seen.add(m)
        stack.append(m)
        for t in sorted(graph[m]):
            if not (t.startswith(m + ".") or m.startswith(t + ".")):
                visit(t)
        stack.pop()
    for m in sorted(graph):
        visit(m)
    assert not cycles, cycles[:3]


def test_engine_auto_fits_the_host(monkeypatch):
    """--engine auto: Ray where a cluster or a Ray-only option asks for it, else by the host's
    CPUs (the in-process engine below AUTO_RAY_CPUS)."""
    from jobs import cli
    monkeypatch.delenv("RAY_ADDRESS", raising=False)

    def choose(*argv, cpus=2):
        monkeypatch.setattr(cli.os, "sched_getaffinity", lambda _: set(range(cpus)))
        return cli.choose_engine(_parser("upscale").parse_args(["upscale", "S", "D", *argv]))[0]
    assert choose() == "local" and choose(cpus=cli.AUTO_RAY_CPUS) == "ray"
    assert choose("--engine", "ray") == "ray" and choose("--engine", "local", cpus=64) == "local"
    assert choose("--address", "auto") == "ray" and choose("--dit-gpus", "1") == "ray"
    assert choose("--hard-actors", "2") == "ray" and choose("--pools", "auto") == "ray"
    # the options declared ray_only count when given a value other than their default
    assert choose("--grm-actors", "1") == "local" and choose("--easy-resources", "ssd=1") == "ray"
    why = cli.choose_engine(_parser("upscale").parse_args(["upscale", "S", "D", "--grm-gpus", "0.5"]))[1]
    assert why == "--grm-gpus is an option of the Ray engine"
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")       # inside `ray job submit`
    assert choose() == "ray"


def test_the_storage_retry_default_is_the_stores():
    import storage
    from pipeline.options import UpscaleOptions
    assert UpscaleOptions("S", "D").storage_retry == storage.STORAGE_RETRY_S == storage.Store("/tmp").retry_budget


def test_the_library_declares_the_defaults_and_choices_the_options_show():
    # read from the library's source (pipeline/fields.py, library_constant): the same values as
    # its modules hold once imported
    from patchscaler import config, model, pieces
    from pipeline.options import UpscaleOptions
    opts, field = UpscaleOptions("S", "D"), {f.name: f for f in dataclasses.fields(UpscaleOptions)}
    assert opts.piece_size == pieces.DEFAULT_PIECE
    assert opts.max_batch == model.MAX_BATCH == model.Runtime().max_batch
    assert field["precision"].metadata["cli"]["choices"] == ("auto", *model.PRECISIONS)
    pgs = config.PGSConfig()
    for name, value in (("taus", pgs.taus), ("steps", pgs.steps), ("piece_size", pieces.DEFAULT_PIECE),
                        ("max_batch", model.MAX_BATCH)):
        text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
        assert re.search(rf"default(: the checkpoint's,)? {text}[);]", field[name].metadata["cli"]["help"]), name
