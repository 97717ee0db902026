"""Command lines built from the options dataclasses (pipeline/fields.py says why), and the
storage arguments every job that reads or writes URIs shares. A leaf module: the jobs import
it, it imports none of them."""
from __future__ import annotations

import argparse
import dataclasses

_ARGPARSE_KEYS = ("type", "choices", "metavar", "action", "const", "required", "nargs", "dest")


def add_fields(p: argparse.ArgumentParser, cls, skip: tuple[str, ...] = (), only: tuple[str, ...] | None = None) -> None:
    """One argument per field of `cls` that was declared with `opt()`, in field order; `only`:
    just these (another command sharing some of a job's options)."""
    for f in dataclasses.fields(cls):
        meta = f.metadata.get("cli")
        if meta is None or f.name in skip or (only is not None and f.name not in only):
            continue
        kw = {k: meta[k] for k in _ARGPARSE_KEYS if k in meta}
        kw["help"] = meta.get("help") or None
        if meta.get("positional"):
            if f.default is not dataclasses.MISSING:
                kw.update(nargs="?", default=f.default)
            p.add_argument(f.name, **kw)
            continue
        if "cli_default" in meta:
            kw["default"] = meta["cli_default"]
        elif kw.get("action") not in ("store_true", "store_false"):
            kw["default"] = field_default(f)
        if kw.get("required"):
            kw.pop("default", None)
        kw.setdefault("dest", f.name)
        p.add_argument(*flags(f), **kw)


def flags(f: dataclasses.Field) -> tuple[str, ...]:
    """The command-line flags of an `opt()` field: its own, or `--field-name`."""
    return f.metadata["cli"].get("flags") or ("--" + f.name.replace("_", "-"),)


def field_default(f: dataclasses.Field):
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def given(cls, a: argparse.Namespace, mark: str) -> list[str]:
    """The first flag of each field of `cls` declared with `opt(..., mark=True)` to which the
    parsed command line `a` gives a value other than its default, in field order."""
    out = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get("cli", {})
        if meta.get(mark) and getattr(a, f.name) != meta.get("cli_default", field_default(f)):
            out.append(flags(f)[0])
    return out


def from_args(cls, a: argparse.Namespace, **extra):
    """The options of a parsed command line (which may carry others, e.g. the CLI's `cmd`). A
    value left None on the command line for a field with a default factory (a run id) lets the
    dataclass choose."""
    kw = {}
    for f in dataclasses.fields(cls):
        if f.name in extra or not hasattr(a, f.name):
            continue
        v = getattr(a, f.name)
        if v is None and f.default_factory is not dataclasses.MISSING:
            continue
        kw[f.name] = v
    return cls(**kw, **extra)


def storage_options_arg(text: str) -> dict:
    """argparse type for --storage-options: a JSON object without secrets; the error never
    repeats the value (it might hold one)."""
    from storage import parse_storage_options
    try:
        return parse_storage_options(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_storage_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--s3-endpoint", help="S3 endpoint URL for both src and dst (e.g. MinIO)")
    p.add_argument("--s3-profile", help="AWS profile for S3 credentials (default: AWS_PROFILE or the default chain)")
    p.add_argument("--storage-options", type=storage_options_arg, default={},
                   help='fsspec options as JSON, without credentials, e.g. \'{"requester_pays": true}\'')


def storage_options(a: argparse.Namespace) -> dict:
    from storage import cli_options
    return cli_options(a.storage_options, a.s3_endpoint, getattr(a, "s3_profile", None))
