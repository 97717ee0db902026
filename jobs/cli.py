"""The command line: `patchscaler upscale SRC DST`, `build-rtm`, `train`, `evaluate`.

Exit codes of `upscale`: 0 all images written (or skipped as already done); 3 some images
failed (each has an error row in the manifest, every good image is written); 2 bad usage."""
from __future__ import annotations

import argparse
import json
import logging
import sys


def _floats(s: str) -> tuple[float, ...]:
    return tuple(float(x) for x in s.split(","))


def _ints(s: str) -> tuple[int, ...]:
    return tuple(int(x) for x in s.split(","))


def add_upscale_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="an image file, a folder or any fsspec URI (s3://bucket/prefix)")
    p.add_argument("dst", help="output folder or URI; outputs keep the inputs' relative names")
    p.add_argument("--engine", choices=["ray", "local"], default="ray",
                   help="ray: the distributed pipeline (a local Ray unless --address); local: in-process")
    p.add_argument("--address", help="Ray cluster address (e.g. ray://head:10001 or auto)")
    p.add_argument("--checkpoint", help="model checkpoint (path or URI); default: the shipped one")
    p.add_argument("--rtm", help="RTM folder written by build-rtm (FAISS index); default: the checkpoint's")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", dest="out_format", help="output format (JPEG, PNG, WEBP, TIFF); default: as input")
    p.add_argument("--quality", type=int, default=95)
    p.add_argument("--no-resume", dest="resume", action="store_false",
                   help="redo images that already have an output and a manifest row")
    p.add_argument("--max-pixels", type=int, default=16_000_000, help="refuse larger inputs (LR pixels)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=["bf16", "fp32"], default="fp32")
    p.add_argument("--max-batch", type=int, default=64, help="patches per Patch-DiT call")
    p.add_argument("--thresholds", type=_floats, help="Qmap thresholds, descending (default: the checkpoint's calibrated ones)")
    p.add_argument("--taus", type=_ints, help="shortcut point per group (default: the checkpoint's, 100,400,1000)")
    p.add_argument("--steps", type=_ints, help="sampling steps per group (default: the checkpoint's, 2,8,20)")
    p.add_argument("--grm-actors", type=int, default=1)
    p.add_argument("--hard-actors", type=int, default=1)
    p.add_argument("--easy-actors", type=int, default=1)
    p.add_argument("--stitch-actors", type=int, default=1)
    p.add_argument("--actor-cpus", type=float, default=0.25)
    p.add_argument("--grm-gpus", type=float, default=0.0)
    p.add_argument("--dit-gpus", type=float, default=0.0)
    p.add_argument("--s3-endpoint", help="S3 endpoint URL for both src and dst (e.g. MinIO)")
    p.add_argument("--storage-options", type=json.loads, default={},
                   help='fsspec options as JSON, e.g. \'{"anon": false}\'')
    p.add_argument("--run-id", help="run id (default: a timestamp)")
    p.add_argument("--no-report", dest="report", action="store_false")


def upscale_main(a: argparse.Namespace) -> int:
    from pipeline.options import UpscaleOptions
    so = dict(a.storage_options)
    if a.s3_endpoint:
        so.setdefault("client_kwargs", {})["endpoint_url"] = a.s3_endpoint
    kw = {k: getattr(a, k) for k in (
        "checkpoint", "rtm", "seed", "out_format", "quality", "resume", "max_pixels", "device", "precision",
        "max_batch", "thresholds", "taus", "steps", "address", "grm_actors", "hard_actors",
        "easy_actors", "stitch_actors", "actor_cpus", "grm_gpus", "dit_gpus", "report")}
    if a.run_id:
        kw["run_id"] = a.run_id
    opts = UpscaleOptions(a.src, a.dst, src_options=so if "://" in a.src else {},
                          dst_options=so if "://" in a.dst else {}, **kw)
    if a.engine == "local":
        from pipeline.local import run_local
        summary = run_local(opts)
    else:
        from pipeline.graph import run_pipeline
        summary = run_pipeline(opts)
    print_summary(summary)
    return 3 if summary["failed"] else 0


def print_summary(s: dict) -> None:
    print(f"\n{'images written':<22}{s['ok']}\n{'images failed':<22}{s['failed']}\n"
          f"{'already done':<22}{s['skipped']}\n{'patches per group':<22}{s['patches_per_group']}\n"
          f"{'wall time (s)':<22}{s['seconds']:.1f}\n{'manifest':<22}{s['manifest']}")
    if s.get("report"):
        print(f"{'report':<22}{s['report']}")
    for inp, err in s["errors"][:20]:
        print(f"  FAILED {inp}: {err}")
    if len(s["errors"]) > 20:
        print(f"  ... and {len(s['errors']) - 20} more (see the manifest)")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ap = argparse.ArgumentParser(prog="patchscaler", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    add_upscale_args(sub.add_parser("upscale", help="upscale images x4"))
    from jobs.build_rtm import add_args as add_rtm_args
    add_rtm_args(sub.add_parser("build-rtm", help="build a Reference Texture Memory"))
    from jobs.train import add_args as add_train_args
    add_train_args(sub.add_parser("train", help="train the default model (stages or all)"))
    from jobs.evaluate import add_args as add_eval_args
    add_eval_args(sub.add_parser("evaluate", help="bicubic / GRM / PatchScaler PGS / uniform on HR photos"))
    a = ap.parse_args(argv)
    if a.cmd == "upscale":
        return upscale_main(a)
    if a.cmd == "train":
        from jobs.train import Interrupted, run
        try:
            return run(a)
        except Interrupted as e:
            logging.getLogger("patchscaler.train").info("%s", e)
            return 0
    if a.cmd == "evaluate":
        from jobs.evaluate import run as eval_run
        return eval_run(a)
    from jobs.build_rtm import main as rtm_main
    return rtm_main(a)


if __name__ == "__main__":
    sys.exit(main())
