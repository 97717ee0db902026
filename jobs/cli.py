"""The command line: `patchscaler upscale SRC DST`, `build-rtm`, `train`, `evaluate`, `plan`.

Only the chosen command's module is imported (so `--help` answers at once), and `upscale`
ends with one line and a documented exit code whatever goes wrong; see EXIT_CODES."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

# idle OpenMP threads sleep instead of spinning (patchscaler/__init__.py says why); set before
# any command imports torch, and inherited by the Ray workers a run starts
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

EXIT_CODES = """exit codes:
  0    every image written (or already done; entries that are not read are listed)
  1    internal error (one line; --verbose shows the traceback)
  2    bad usage: wrong arguments, SRC missing, no such bucket, DST inside SRC (or SRC
       inside DST), a secret in --storage-options
  3    some images failed: each has an error row in the manifest, every good image is written
  4    storage unreachable or refusing: wrong endpoint, timeout, access denied, no credentials
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
}


def _floats(s: str) -> tuple[float, ...]:
    return tuple(float(x) for x in s.split(","))


def _ints(s: str) -> tuple[int, ...]:
    return tuple(int(x) for x in s.split(","))


def format_arg(text: str) -> str:
    """argparse type for --format: a format the writer supports (any case; JPG and TIF too)."""
    from patchscaler.imageio import WRITABLE
    fmt = {"JPG": "JPEG", "TIF": "TIFF"}.get(text.upper(), text.upper())
    if fmt not in WRITABLE:
        raise argparse.ArgumentTypeError(f"{text!r} is not supported: use one of {', '.join(WRITABLE)}")
    return fmt


def outscale_arg(text: str) -> float:
    """argparse type for --outscale: a scale from 1 to 4."""
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not 1 <= v <= 4:
        raise argparse.ArgumentTypeError(f"{text!r}: a number from 1 to 4 (the x4 result, resized)")
    return v


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number of at least 1")
    return v


def resources_arg(text: str) -> dict:
    """argparse type for --*-resources: Ray custom resources as JSON ('{"hard_gpu": 1}') or
    k=v pairs ('hard_gpu=1,ssd=0.5')."""
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


def storage_options_arg(text: str) -> dict:
    """argparse type for --storage-options: a JSON object without secrets; the error never
    repeats the value (it might hold one)."""
    from storage import parse_storage_options
    try:
        return parse_storage_options(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_upscale_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="an image file, a folder or any fsspec URI (s3://bucket/prefix)")
    p.add_argument("dst", help="output folder or URI, outside SRC; outputs keep the inputs' relative names")
    p.add_argument("--engine", choices=["ray", "local"], default="ray",
                   help="ray: the distributed pipeline (a local Ray unless --address); local: in-process")
    p.add_argument("--address", help="Ray cluster address (e.g. ray://head:10001 or auto)")
    p.add_argument("--checkpoint", help="model checkpoint (path or URI); default: the shipped one")
    p.add_argument("--rtm", help="RTM folder written by build-rtm (FAISS index); default: the checkpoint's")
    p.add_argument("--seed", type=int, default=0,
                   help="the diffusion's noise seed (default 0); the same seed gives the same pixels")
    p.add_argument("--format", dest="out_format", type=format_arg,
                   help="output format: JPEG, PNG, WEBP, TIFF or BMP; default: as the input (GIF -> PNG)")
    p.add_argument("--quality", type=int, default=95, choices=range(1, 101), metavar="1-100",
                   help="JPEG and WEBP quality (default 95)")
    p.add_argument("--outscale", type=outscale_arg,
                   help="output scale from 1 to 4, e.g. 2 or 1.5: the x4 result resized (Lanczos, antialiased) "
                        "before it is written; default 4")
    p.add_argument("--piece-size", type=positive_int, default=768, metavar="PX",
                   help="a photo larger than this many input px on a side is processed in pieces with a halo, "
                        "each its own row, so memory stays bounded and one photo spreads over the actors "
                        "(default 768; README 'Big photos')")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="skip images whose output exists and was made from the same input (size and mtime; "
                        "an object's ETag) with the same settings (default); --no-resume redoes them all")
    p.add_argument("--retry-failed", action="store_true",
                   help="try again inputs that failed as bad images and have not changed since (by default "
                        "they are listed as still bad and the run can exit 0)")
    p.add_argument("--max-pixels", type=positive_int, default=16_000_000,
                   help="refuse larger inputs (input pixels, default 16 M: the guard against decompression "
                        "bombs; the in-process engine holds the decoded input, 12 bytes per pixel, and the "
                        "output, 16 x 3 bytes per input pixel at x4)")
    p.add_argument("--device", default="auto",
                   help="auto (default): in-process, cuda if torch sees one, else cpu; in the Ray engine each "
                        "stage that reserves GPUs (--grm-gpus, --dit-gpus) runs on them, the others on the CPU. "
                        "A device given here overrides for the in-process engine and the GPU stages")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16-dit", "bf16"], default="auto",
                   help="auto (default): bf16-dit (the Patch-DiT in bf16, the GRM in fp32) where the device "
                        "computes bf16 natively (CUDA, AVX512-BF16/AMX), else fp32")
    p.add_argument("--max-batch", type=int, default=64, help="patches per Patch-DiT call")
    p.add_argument("--compile", action="store_const", const="inductor", default="",
                   help="torch.compile the Patch-DiT: 0.87x its time on a 2-core CPU after a one-time "
                        "compile of 2-5 min per process (needs a C++ compiler); for long jobs")
    p.add_argument("--compile-backend", dest="compile", metavar="NAME",
                   help="the same with another torch.compile backend (e.g. cudagraphs)")
    p.add_argument("--thresholds", type=_floats, help="Qmap thresholds, descending (default: the checkpoint's calibrated ones)")
    p.add_argument("--taus", type=_ints, help="shortcut point per group (default: the checkpoint's, 100,200,1000)")
    p.add_argument("--steps", type=_ints, help="sampling steps per group (default: the checkpoint's, 2,4,20)")
    p.add_argument("--hard-groups", type=_ints,
                   help="groups the hard Patch-DiT pool serves, e.g. 2 or 3,4 (default: the checkpoint's, "
                        "or the last group when --thresholds changes the number of groups)")
    p.add_argument("--grm-actors", type=positive_int, default=1, help="Ray: decode + GRM actors (default 1)")
    p.add_argument("--hard-actors", type=positive_int, default=1, help="Ray: Patch-DiT actors for hard patches")
    p.add_argument("--easy-actors", type=positive_int, default=1,
                   help="Ray: Patch-DiT actors for simple and medium patches")
    p.add_argument("--stitch-actors", type=positive_int, default=1, help="Ray: stitch + write actors")
    p.add_argument("--actor-cpus", type=float, default=0.25,
                   help="Ray: CPUs each actor reserves (default 0.25; whole CPUs on a 2-core host stall the pipeline)")
    p.add_argument("--grm-gpus", type=float, default=0.0, help="Ray: GPUs each GRM actor reserves (fractions share one)")
    p.add_argument("--dit-gpus", type=float, default=0.0, help="Ray: GPUs each Patch-DiT actor reserves")
    p.add_argument("--dit-images", type=int, default=0,
                   help="images per Patch-DiT call, patches batched by group (default: 8 with --dit-gpus, else 1)")
    p.add_argument("--pools", choices=["fixed", "auto"], default="fixed",
                   help="auto: re-split the GRM/hard/easy actors (same total) from the work measured on the first images")
    for pool in ("grm", "hard", "easy"):
        p.add_argument(f"--{pool}-resources", type=resources_arg, default={}, metavar="RES",
                       help=f"Ray custom resources per {pool} actor, JSON or k=v,k=v (see cluster.yaml)")
    add_storage_args(p)
    p.add_argument("--run-id", help="run id (default: a timestamp and a random suffix)")
    p.add_argument("--no-report", dest="report", action="store_false", help="write no HTML report")
    p.add_argument("--progress-interval", type=float,
                   help="seconds between progress lines when stderr is not a terminal (default 30)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="Ray's own logs and progress bars, and tracebacks for errors")


def add_storage_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--s3-endpoint", help="S3 endpoint URL for both src and dst (e.g. MinIO)")
    p.add_argument("--s3-profile", help="AWS profile for S3 credentials (default: AWS_PROFILE or the default chain)")
    p.add_argument("--storage-options", type=storage_options_arg, default={},
                   help='fsspec options as JSON, without credentials, e.g. \'{"requester_pays": true}\'')


def storage_options(a: argparse.Namespace) -> dict:
    from storage import cli_options
    return cli_options(a.storage_options, a.s3_endpoint, getattr(a, "s3_profile", None))


def upscale_main(a: argparse.Namespace) -> int:
    from pipeline.options import UpscaleOptions
    from pipeline.progress import Progress
    from storage import options_for
    so = storage_options(a)
    kw = {k: getattr(a, k) for k in (
        "checkpoint", "rtm", "seed", "out_format", "quality", "outscale", "piece_size", "resume", "max_pixels", "device", "precision",
        "max_batch", "compile", "thresholds", "taus", "steps", "address", "grm_actors", "hard_actors", "dit_images", "pools",
        "easy_actors", "stitch_actors", "actor_cpus", "grm_gpus", "dit_gpus", "report", "verbose", "hard_groups",
        "grm_resources", "hard_resources", "easy_resources", "retry_failed")}
    if a.run_id:
        kw["run_id"] = a.run_id
    opts = UpscaleOptions(a.src, a.dst, src_options=options_for(a.src, so), dst_options=options_for(a.dst, so),
                          rtm_options=options_for(a.rtm or "", so), **kw)
    progress = Progress(interval=a.progress_interval)
    if a.engine == "local":
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
        print("  SRC has no images (names ending in .jpg .jpeg .png .webp .tif .tiff .bmp .gif)")
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


def build_parser(cmd: str | None) -> argparse.ArgumentParser:
    """The parser, with only `cmd`'s arguments filled in: the other commands' modules (torch,
    Ray, training code) are not imported."""
    ap = argparse.ArgumentParser(prog="patchscaler", description=__doc__.split("\n")[0],
                                 epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="{" + ",".join(COMMANDS) + "}")
    for name, text in COMMANDS.items():
        if name == "upscale":
            p = sub.add_parser(name, help=text, description=text, epilog=EXIT_CODES + "\n\n" + CREDENTIALS,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
            if cmd == name:
                add_upscale_args(p)
            continue
        p = sub.add_parser(name, help=text, description=text)
        if cmd != name:
            continue
        if name == "build-rtm":
            from jobs.build_rtm import add_args
        elif name == "train":
            from jobs.train import add_args
        elif name == "plan":
            from jobs.plan_pools import add_args
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    cmd = _command(argv)
    a = build_parser(cmd).parse_args(argv)
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
        from pipeline.plan import StorageError, UsageError, one_line
        if isinstance(e, (UsageError, StorageError)):
            return _fail(e.exit_code, str(e))
        if type(e).__name__ in ("DeviceError", "NoCUDA"):
            return _fail(1, one_line(e))
        if type(e).__name__ == "RTMMismatch":
            return _fail(2, f"--rtm: {one_line(e)}")
        return _fail(1, f"{type(e).__name__}: {one_line(e)}" + ("" if verbose else " (--verbose shows the traceback)"))


def _run(a: argparse.Namespace) -> int:
    if a.cmd == "upscale":
        if a.checkpoint and "://" not in a.checkpoint and not os.path.exists(a.checkpoint):
            from pipeline.plan import UsageError
            raise UsageError(f"--checkpoint {a.checkpoint} does not exist")
        return upscale_main(a)
    if a.cmd == "train":
        from jobs.train import Interrupted, run
        try:
            return run(a)
        except Interrupted as e:
            logging.getLogger("patchscaler.train").info("%s", e)
            return 0
    if a.cmd == "plan":
        from jobs.plan_pools import main as plan_main
        return plan_main(a)
    if a.cmd == "evaluate":
        from jobs.evaluate import run as eval_run
        return eval_run(a)
    from jobs.build_rtm import main as rtm_main
    return rtm_main(a)


if __name__ == "__main__":
    sys.exit(main())
