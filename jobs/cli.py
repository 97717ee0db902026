"""The command line: `patchscaler upscale SRC DST`, `status DST`, `build-rtm`, `train`, `evaluate`, `plan`.

Only the chosen command's module is imported (so `--help` answers at once), and `upscale`
ends with one line and a documented exit code whatever goes wrong; see EXIT_CODES."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from actors.runtime import passive_openmp
from jobs.args import add_fields, add_storage_args, from_args, given, storage_options

passive_openmp()   # before any command imports torch; the Ray workers a run starts inherit it

EXIT_CODES = """exit codes:
  0    every image written (or already done; entries that are not read are listed)
  1    internal error (one line; --verbose shows the traceback)
  2    bad usage: wrong arguments, SRC missing, no such bucket, DST inside SRC (or SRC
       inside DST), a secret in --storage-options
  3    some images failed: each has an error row in the manifest, every good image is written
  4    storage unreachable or refusing: wrong endpoint, timeout, access denied, no credentials,
       a DST that cannot be written (checked before any compute), a disk full mid-run, or
       down mid-run for longer than --storage-retry (finished images are kept)
  130  interrupted (Ctrl-C); run the same command again to resume
  143  terminated (SIGTERM: cron, systemd, `ray job stop`); 129 hung up (SIGHUP): the same as
       Ctrl-C, run the same command again to resume"""

CREDENTIALS = """S3 credentials: the usual AWS variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_SESSION_TOKEN), AWS_PROFILE or --s3-profile NAME (~/.aws/credentials), or an instance role;
never on the command line. On a Ray cluster every worker needs them too (its environment or
role). Every S3 call waits at most 5 s to connect and makes at most 3 attempts, and each
bucket is checked with one call before the run, so a wrong endpoint fails within seconds."""

COMMANDS = {
    "upscale": "upscale images x4",
    "build-rtm": "build a Reference Texture Memory",
    "train": "train the default model (stages or all)",
    "evaluate": "bicubic / GRM / PatchScaler PGS / uniform on HR photos",
    "plan": "split a cluster's GPUs among the pools for an archive, from measured work",
    "status": "where an archive stands: every run into DST, each input's latest state",
}


def add_upscale_args(p: argparse.ArgumentParser) -> None:
    from pipeline.options import UpscaleOptions
    add_fields(p, UpscaleOptions)
    p.add_argument("--engine", choices=["auto", "ray", "local"], default="auto",
                   help="ray: the distributed pipeline (a local Ray unless --address); local: in-process; auto "
                        f"(default): ray with --address, RAY_ADDRESS or a Ray-only option, else local on a host "
                        f"with fewer than {AUTO_RAY_CPUS} CPUs and ray from {AUTO_RAY_CPUS} up (docs/usage.md, 'Engines')")
    p.add_argument("--compile-backend", dest="compile", metavar="NAME",
                   help="the same as --compile with another torch.compile backend (e.g. cudagraphs)")
    add_storage_args(p)
    p.add_argument("--progress-interval", type=float,
                   help="seconds between progress lines when stderr is not a terminal (default 30)")


def add_status_args(p: argparse.ArgumentParser) -> None:
    from pipeline.status import STATES
    p.add_argument("dst", help="the DST of upscale runs (folder or URI)")
    p.add_argument("--show", choices=("problems", "all") + STATES, default="problems",
                   help="which inputs to list: problems (failed, interrupted and not done, the default), all, or one state")
    p.add_argument("--limit", type=int, default=50, help="list at most this many inputs (default 50)")
    p.add_argument("--json", action="store_true", help="print the totals, runs and listed inputs as JSON")
    add_storage_args(p)


def status_main(a: argparse.Namespace) -> int:
    """Exit 0 when every input's latest state is written or not read, else 3 (failed, interrupted,
    or planned by a run and not done)."""
    from pipeline.errors import UsageError, storage_error
    from pipeline.status import PROBLEMS, archive_status, report_lines, totals
    from storage import Store, options_for
    dst = Store(a.dst, options_for(a.dst, storage_options(a)))
    try:
        found = dst.exists("_manifest")
        st = archive_status(dst) if found else None
    except Exception as e:
        raise storage_error(e, f"DST {dst.uri()}", dst) from None
    if not found:
        raise UsageError(f"{dst.uri()}: no _manifest folder here: not the DST of an upscale run")
    t = totals(st)
    if a.json:
        wanted = {"problems": PROBLEMS, "all": None}.get(a.show, (a.show,))
        items = [{"input": k, "state": v[0], "reason": v[1], "run": v[2], "output": v[4]}
                 for k, v in sorted(st["inputs"].items()) if wanted is None or v[0] in wanted][: a.limit]
        print(json.dumps({"dst": dst.uri(), "totals": t, "runs": {k: vars(r) for k, r in st["runs"].items()},
                          "inputs": items}, indent=1))
    else:
        print("\n".join(report_lines(dst, st, a.show, a.limit)))
    return 3 if any(t[state] for state in PROBLEMS) else 0


# below this many CPUs a single host runs the in-process engine by default: on 2 cores it was
# faster than the Ray engine and needed a fifth of its memory (docs/usage.md, 'Engines')
AUTO_RAY_CPUS = 4


def choose_engine(a: argparse.Namespace) -> tuple[str, str]:
    """(engine, why) for --engine auto; an engine asked for is kept."""
    if a.engine != "auto":
        return a.engine, "asked for"
    if a.address or os.environ.get("RAY_ADDRESS"):
        return "ray", "a Ray cluster address is given"
    from pipeline.options import UpscaleOptions
    ray_only = given(UpscaleOptions, a, "ray_only")    # the options declared with opt(ray_only=True)
    if ray_only:
        return "ray", f"{ray_only[0]} is an option of the Ray engine"
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cpus < AUTO_RAY_CPUS:
        return "local", f"{cpus} CPUs here: below {AUTO_RAY_CPUS} the in-process engine is the faster one"
    return "ray", f"{cpus} CPUs here"


def upscale_main(a: argparse.Namespace) -> int:
    from pipeline.options import UpscaleOptions
    from pipeline.progress import Progress
    from storage import options_for
    from pipeline.errors import UsageError
    if "://" not in a.src and not os.path.exists(a.src):   # before anything starts: no engine, no model
        raise UsageError(f"SRC {a.src} does not exist")
    so = storage_options(a)
    opts = from_args(UpscaleOptions, a, src_options=options_for(a.src, so), dst_options=options_for(a.dst, so),
                     rtm_options=options_for(a.rtm or "", so), checkpoint_options=options_for(a.checkpoint or "", so))
    progress = Progress(interval=a.progress_interval)
    engine, why = choose_engine(a)
    if a.engine == "auto":
        logging.getLogger("patchscaler").info("engine: %s (%s; --engine ray|local chooses)", engine, why)
    if engine == "local":
        from pipeline.local import run_local
        summary = run_local(opts, progress=progress)
    else:
        from pipeline.graph import run_pipeline
        from pipeline.quiet import drop_known_noise
        with drop_known_noise(enabled=not a.verbose):
            summary = run_pipeline(opts, progress=progress)
    print_summary(summary)
    return 3 if summary["failed"] else 0


def print_summary(s: dict) -> None:
    print(f"\n{'inputs':<22}{s.get('inputs', s['ok'] + s['failed'] + s['skipped'])}\n"
          f"{'images written':<22}{s['ok']}\n{'images failed':<22}{s['failed']}\n"
          f"{'already done':<22}{s['skipped']}\n{'still bad':<22}{len(s.get('still_bad', []))}\n"
          f"{'not read':<22}{len(s.get('not_read', []))}\n"
          f"{'patches per group':<22}{s['patches_per_group']}\n"
          f"{'wall time (s)':<22}{s['seconds']:.1f}\n{'manifest':<22}{s['manifest']}")
    if s.get("report"):
        print(f"{'report':<22}{s['report']}")
    if s.get("inputs") == 0:
        from pipeline.listing import EXTENSIONS_TEXT
        print(f"  SRC has no images (names ending in {EXTENSIONS_TEXT})")
    for inp, err in s["errors"][:20]:
        print(f"  FAILED {inp}: {err}")
    if len(s["errors"]) > 20:
        print(f"  ... and {len(s['errors']) - 20} more (see the manifest)")
    for inp, why in s.get("still_bad", [])[:20]:
        print(f"  STILL BAD {inp}: {why}")
    if len(s.get("still_bad", [])) > 20:
        print(f"  ... and {len(s['still_bad']) - 20} more still bad (see the manifest; --retry-failed)")
    for inp, why in s.get("not_read", [])[:20]:
        print(f"  NOT READ {inp}: {why}")
    if len(s.get("not_read", [])) > 20:
        print(f"  ... and {len(s['not_read']) - 20} more (see the manifest)")


def _command(argv: list[str]) -> str | None:
    for tok in argv:
        if tok in COMMANDS:
            return tok
        if not tok.startswith("-"):
            return None
    return None


class Parser(argparse.ArgumentParser):
    """A usage error is one line naming the problem and where the help is (exit 2): argparse
    would print the whole usage first (27 lines for `upscale`), and the error is what a cron
    mail must show. The subcommands' parsers are of this class too."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


class _Version(argparse.Action):
    """--version, read only when asked (the package's version comes with its import)."""

    def __init__(self, option_strings, dest, **kw):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        from patchscaler import __version__
        print(f"patchscaler {__version__}")
        parser.exit(0)


def build_parser(cmd: str | None) -> argparse.ArgumentParser:
    """The parser, with only `cmd`'s arguments filled in: the other commands' modules (torch,
    Ray, training code) are not imported."""
    ap = Parser(prog="patchscaler", description="The command line: " + ", ".join(
                                     f"`patchscaler {c}`" for c in COMMANDS) + ".",
                                 epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action=_Version, help="print the version and exit")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="{" + ",".join(COMMANDS) + "}")
    ap.commands = {}
    for name, text in COMMANDS.items():
        if name == "upscale":
            p = ap.commands[name] = sub.add_parser(name, help=text, description=text,
                                                   epilog=EXIT_CODES + "\n\n" + CREDENTIALS,
                                                   formatter_class=argparse.RawDescriptionHelpFormatter)
            if cmd == name:
                add_upscale_args(p)
            continue
        p = ap.commands[name] = sub.add_parser(name, help=text, description=text)
        if cmd != name:
            continue
        if name == "build-rtm":
            from jobs.rtm_job import add_args
        elif name == "train":
            from jobs.train import add_args
        elif name == "plan":
            from jobs.pool_split import add_args
        elif name == "status":
            add_status_args(p)
            continue
        else:
            from jobs.evaluate import add_args
        add_args(p)
    return ap


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP: handled like Ctrl-C (finished images are kept), exit 128 + signal."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _terminate(signum, frame):
    raise Terminated(signum)


def install_signal_handlers() -> None:
    """SIGTERM and SIGHUP end the run as Ctrl-C does (one line, documented exit code), instead
    of Python's silent death or Ray's stack dump. actors.runtime.init_ray keeps them across
    ray.init, which installs its own."""
    import signal
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)


def _fail(code: int, msg: str) -> int:
    print(f"patchscaler: error: {msg}", file=sys.stderr)
    return code


def parse(ap: Parser, argv: list[str]) -> argparse.Namespace:
    """parse_args, with an unknown option reported by its command's parser (so the line points
    to that command's --help)."""
    a, extra = ap.parse_known_args(argv)
    if extra:
        ap.commands.get(a.cmd, ap).error(f"unrecognized arguments: {' '.join(extra)}")
    return a


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    cmd = _command(argv)
    a = parse(build_parser(cmd), argv)
    verbose = getattr(a, "verbose", False)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import threading
    if threading.current_thread() is threading.main_thread():
        install_signal_handlers()
    try:
        return _run(a)
    except Terminated as e:
        import signal
        name = signal.Signals(e.signum).name
        return _fail(128 + e.signum, f"{name} received: stopped; finished images are kept, run the same command "
                                     "again to resume")
    except KeyboardInterrupt:
        return _fail(130, "interrupted; finished images are kept, run the same command again to resume")
    except Exception as e:
        if a.cmd in ("train", "evaluate"):
            raise  # long jobs of their own: their tracebacks stay
        if verbose:
            logging.getLogger("patchscaler").exception("failed")
        from pipeline.errors import UsageError, one_line
        from storage import StorageError
        if isinstance(e, UsageError) and a.cmd in COMMANDS and "--help`" not in str(e):
            return _fail(e.exit_code, f"{e}; see `patchscaler {a.cmd} --help`")
        if isinstance(e, (UsageError, StorageError)):
            return _fail(e.exit_code, str(e))
        if type(e).__name__ in ("DeviceError", "NoCUDA"):
            return _fail(1, one_line(e))
        if type(e).__name__ == "RTMMismatch":
            return _fail(2, f"--rtm: {one_line(e)}")
        return _fail(1, f"{type(e).__name__}: {one_line(e)}" + ("" if verbose else " (--verbose shows the traceback)"))


def _run(a: argparse.Namespace) -> int:
    if a.cmd == "upscale":
        from pipeline.errors import UsageError
        from patchscaler.upscale import resolve_checkpoint
        try:   # a shipped model's name becomes its file, so every actor loads the same one
            a.checkpoint = resolve_checkpoint(a.checkpoint)
        except ValueError as e:
            raise UsageError(str(e)) from None
        if a.checkpoint and "://" not in a.checkpoint and not os.path.exists(a.checkpoint):
            raise UsageError(f"--checkpoint {a.checkpoint} does not exist")
        return upscale_main(a)
    if a.cmd == "train":
        from jobs.train import DataError, Interrupted, run
        try:
            return run(a)
        except Interrupted as e:
            logging.getLogger("patchscaler.train").info("%s", e)
            return 0
        except DataError as e:
            return _fail(2, str(e))
    if a.cmd == "plan":
        from jobs.pool_split import main as plan_main
        return plan_main(a)
    if a.cmd == "status":
        return status_main(a)
    if a.cmd == "evaluate":
        from jobs.evaluate import run as eval_run
        return eval_run(a)
    from jobs.rtm_job import main as rtm_main
    return rtm_main(a)


if __name__ == "__main__":
    sys.exit(main())
