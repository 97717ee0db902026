"""Options declared once: `opt()` is a dataclass field that also carries its command-line form
(help, flag, type, choices...). The jobs' options dataclasses (`UpscaleOptions`,
`TrainOptions`, `BuildRTMOptions`) are the only place an option is written down; the
command lines are built from their fields (jobs/args.py). Plain Python: `--help` must not
wait for torch.

An option whose default or choices are the library's reads them with `library_constant`, from
the library's source: they are declared once, there.

The value parsers below check a value where it is typed (argparse calls them), so a bad one is
refused with one line naming what is allowed, before anything starts."""
from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import importlib.util
import json
from pathlib import Path
from typing import Any

_NO_DEFAULT = dataclasses.MISSING


def opt(default: Any = _NO_DEFAULT, help: str = "", *, factory=None, ray_only: bool = False, **cli) -> Any:
    """A dataclass field with its command-line form. `cli` takes argparse's keywords (type,
    choices, metavar, action, const, required) and three of ours: `flags` (default
    `--field-name`), `positional` (the field is a positional argument) and `cli_default` (the
    command line's default when it differs from the field's, e.g. None for "let the dataclass
    choose"). `ray_only`: an option that only the Ray engine has; given a value other than its
    default, it makes `--engine auto` choose Ray (jobs/cli.py, choose_engine). A field declared
    with plain `field()` has no command-line form."""
    meta = {"help": help, **cli}
    if ray_only:
        meta["ray_only"] = True
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={"cli": meta})
    return dataclasses.field(default=default, metadata={"cli": meta})


def library_constant(name: str) -> Any:
    """A constant of the library, `module:NAME` (a top-level assignment) or `module:Class.field`
    (a class attribute's default), e.g. "patchscaler.pieces:DEFAULT_PIECE": read from the
    module's source, not imported. The options take their defaults and choices from the library,
    where they are declared once, but cannot import it: importing patchscaler loads torch, and
    `--help` must not wait for that. Only a literal (a number, a string, a tuple of them) is
    read; a name that is not one is a KeyError when the options are defined."""
    module, _, attr = name.partition(":")
    return _literals(module)[attr]


@functools.lru_cache(maxsize=None)
def _literals(module: str) -> dict[str, Any]:
    top, *rest = module.split(".")
    spec = importlib.util.find_spec(top)    # a top-level package is found, not imported
    path = Path(spec.submodule_search_locations[0], *rest).with_suffix(".py")
    out: dict[str, Any] = {}

    def read(body: list, prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef) and not prefix:
                read(node.body, node.name + ".")
            elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                target = node.targets[0] if isinstance(node, ast.Assign) else node.target
                if isinstance(target, ast.Name):
                    try:
                        out[prefix + target.id] = ast.literal_eval(node.value)
                    except (ValueError, TypeError, SyntaxError):
                        pass    # not a literal

    read(ast.parse(path.read_text(encoding="utf-8"), str(path)).body, "")
    return out


# --- value parsers (argparse `type=`): one line naming what is allowed ------------------------

def floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated numbers, e.g. 0.6,0.4") from None


def ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated whole numbers, e.g. 2,4,20") from None


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number of at least 1")
    return v


def quality(text: str) -> int:
    """--quality: a whole number from 1 to 100 (said as a range: a list of choices would be
    a hundred numbers long)."""
    try:
        v = int(text)
    except ValueError:
        v = 0
    if not 1 <= v <= 100:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number from 1 to 100")
    return v


def outscale(text: str) -> float:
    """--outscale: a scale from 1 to 4."""
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not 1 <= v <= 4:
        raise argparse.ArgumentTypeError(f"{text!r}: a number from 1 to 4 (the x4 result, resized)")
    return v


def image_format(text: str) -> str:
    """--format: a format the writer supports (any case; JPG and TIF too)."""
    from patchscaler.imageio import WRITABLE
    fmt = {"JPG": "JPEG", "TIF": "TIFF"}.get(text.upper(), text.upper())
    if fmt not in WRITABLE:
        raise argparse.ArgumentTypeError(f"{text!r} is not supported: use one of {', '.join(WRITABLE)}")
    return fmt


def resources(text: str) -> dict:
    """--*-resources: Ray custom resources as JSON ('{"hard_gpu": 1}') or k=v pairs
    ('hard_gpu=1,ssd=0.5')."""
    try:
        if text.lstrip().startswith("{"):
            res = json.loads(text)
            if not isinstance(res, dict):
                raise ValueError("not a JSON object")
        else:
            res = dict(kv.split("=", 1) for kv in text.split(",") if kv.strip())
        return {str(k).strip(): float(v) for k, v in res.items()}
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: custom resources as JSON or k=v,k=v ({e})") from None
