"""The GPU figures in one run on a GPU machine: images/s of the whole method and of Real-ESRGAN
alone for 512 px photos (-> 2048 px), Patch-DiT time PGS / uniform, bf16-dit / fp32, cross-image
batching (`--dit-images`) against image-by-image refinement, and, with `--ray` where Ray is
installed, the Ray pipeline on this one GPU (its stages sharing it by fractions) against the
in-process engine on the same photos.

For a machine that has neither the Real-ESRGAN weights nor room for them beside the checkpoint,
they can travel as int8 with a scale per output channel (17 MB):

    python bench/gpu.py --make-carry x4plus-int8.safetensors            # where the weights are
    PYTHONPATH=. python bench/gpu.py --grm-int8 x4plus-int8.safetensors --out OUT --ray

Dequantised weights give the same FLOPs, so the timings are those of the real model; the
pixels differ slightly from fp32 Real-ESRGAN's (the quality figures are measured on CPU).
Tested on CPU with tiny settings (tests/project/test_bench_gpu.py). Every timing synchronises the
device; A and B are interleaved and repeated."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--make-carry", metavar="FILE", help="write the int8 Real-ESRGAN weights to FILE and stop")
ap.add_argument("--device", default="auto", help="auto: cuda if torch sees it, else cpu (the in-process rule)")
ap.add_argument("--grm-int8", help="int8 Real-ESRGAN weights made by --make-carry (default: the local ones)")
ap.add_argument("--photos", help="folder of HR photos (default: the bundled samples)")
ap.add_argument("--n", type=int, default=4, help="photos (default %(default)s)")
ap.add_argument("--lr-size", type=int, default=512, help="LR size; the output is 4x (default %(default)s)")
ap.add_argument("--dit-images", type=int, default=4, help="images per Patch-DiT call in the batching figure")
ap.add_argument("--max-batch", type=int, default=256, help="patches per Patch-DiT call on the GPU")
ap.add_argument("--checkpoint")
ap.add_argument("--out", help="folder for gpu.json")
ap.add_argument("--ray", action="store_true",
                help="also time the Ray pipeline on this machine (GPU stages by fractions) against the in-process "
                     "engine (needs Ray and the Real-ESRGAN files installed)")
harness.add_args(ap, threads=int(os.environ.get("BENCH_THREADS", "8")))
a = ap.parse_args()
torch = harness.start(a)

from safetensors.torch import load_file, save_file  # noqa: E402


def make_carry(path: str) -> None:
    """Real-ESRGAN x4plus as int8 per output channel + fp32 scales (and the small tensors as
    they are), about a quarter of the fp32 file."""
    from patchscaler.realesrgan import load_backbone
    out = {}
    for k, v in load_backbone("rrdb").state_dict().items():
        if v.dim() == 4:
            scale = v.abs().amax((1, 2, 3), keepdim=True).clamp_min(1e-12) / 127
            out[k + ".int8"] = (v / scale).round().to(torch.int8).contiguous()
            out[k + ".scale"] = scale.float().contiguous()
        else:
            out[k] = v.contiguous()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(out, path)
    print(f"wrote {path}: {Path(path).stat().st_size / 2 ** 20:.1f} MiB")


def dequantised(path: str) -> str:
    """The int8 file as an fp32 .safetensors that `grm.weights` can load; its path."""
    sd, out = load_file(path), {}
    for k, v in sd.items():
        if k.endswith(".int8"):
            base = k[:-len(".int8")]
            out[base] = v.float() * sd[base + ".scale"]
        elif not k.endswith(".scale"):
            out[k] = v
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / "x4plus-dequantised.safetensors"
    save_file(out, str(tmp))
    return str(tmp)


if a.make_carry:
    make_carry(a.make_carry)
    raise SystemExit(0)

from patchscaler import flow, photo  # noqa: E402
from patchscaler.checkpoint import load  # noqa: E402
from patchscaler.model import Runtime, resolve_device  # noqa: E402
from patchscaler.upscale import DEFAULT_CHECKPOINT  # noqa: E402

a.device = resolve_device(a.device)   # the in-process engine's rule (auto: cuda if torch sees it)
dev = torch.device(a.device)
sync = torch.cuda.synchronize if dev.type == "cuda" else None
card = torch.cuda.get_device_name(dev) if dev.type == "cuda" else harness.machine()
ckpt = a.checkpoint or os.environ.get("PATCHSCALER_CHECKPOINT") or str(DEFAULT_CHECKPOINT)
grm_weights = dequantised(a.grm_int8) if a.grm_int8 else None


def model_for(precision: str):
    return load(ckpt, grm_weights=grm_weights).configure(Runtime(device=a.device, precision=precision,
                                                                 max_batch=a.max_batch))


def interleaved(variants: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each variant, A B A B ..., the device synchronised around each run."""
    return {k: statistics.median(v) for k, v in harness.interleaved(variants, repeats, sync).items()}


photos = harness.lr_photos(a.photos, a.n, a.lr_size)
precisions = ["fp32"] + (["bf16-dit"] if dev.type == "cuda" and torch.cuda.is_bf16_supported() else [])
models = {p: model_for(p) for p in precisions}
m32 = models["fp32"]
print(f"# {card}; {len(photos)} photos {a.lr_size} -> {4 * a.lr_size} px; model {m32.cfg.version}; "
      f"Patch-DiT calls of up to {a.max_batch} patches; precisions {', '.join(precisions)}")
report = {"device": card, "photos": len(photos), "lr_size": a.lr_size, "model": m32.cfg.version,
          "max_batch": a.max_batch, "repeats": a.repeats}


def realesrgan_alone(model, prep):
    with torch.no_grad(), model.runtime.autocast("grm"):
        model.grm.restore(prep.rgb.to(model.device).contiguous(memory_format=torch.channels_last))


# 1. images/s: the whole method per precision, and Real-ESRGAN alone, interleaved per photo
sums = {}
for _, prep in photos:
    variants = {"Real-ESRGAN alone": lambda prep=prep: realesrgan_alone(m32, prep)}
    variants |= {f"PatchScaler {p}": (lambda prep=prep, p=p: photo.run_piece(models[p], prep, None, 0)) for p in precisions}
    for k, s in interleaved(variants, a.repeats).items():
        sums[k] = sums.get(k, 0.0) + s
report["images_per_s"] = {k: len(photos) / s for k, s in sums.items()}
for k, s in sums.items():
    print(f"{k:<26} {len(photos) / s:8.3f} images/s  ({s / len(photos):.2f} s per photo)")
for p in precisions:
    print(f"whole method {p} / Real-ESRGAN alone: {sums[f'PatchScaler {p}'] / sums['Real-ESRGAN alone']:.2f}x")
if "bf16-dit" in precisions:
    print(f"whole method bf16-dit / fp32: {sums['PatchScaler bf16-dit'] / sums['PatchScaler fp32']:.2f}")

# 2. Patch-DiT time, PGS vs uniform (all patches in the last group), per precision, same coarse states
states = [flow.begin(m32, prep) for _, prep in photos]
last = m32.cfg.pgs.num_groups - 1
counts = [sum(c) for c in zip(*(s.group_counts(m32.cfg.pgs.num_groups) for s in states))]
report["group_fractions"] = [c / sum(counts) for c in counts]
dit = {}
for p in precisions:
    model = models[p]
    dit |= {f"{p} {k}": v for k, v in interleaved({
        "PGS": lambda model=model: [flow.refine(model, s, 0) for s in states],
        "uniform": lambda model=model: [flow.refine(model, s.regrouped(torch.full_like(s.coarse.groups, last)), 0)
                                        for s in states]}, a.repeats).items()}
report["dit_seconds"] = dit
for p in precisions:
    print(f"Patch-DiT {p}: PGS / uniform {dit[f'{p} PGS'] / dit[f'{p} uniform']:.3f} "
          f"({dit[f'{p} PGS']:.2f} s vs {dit[f'{p} uniform']:.2f} s for {sum(counts)} patches, "
          f"groups {' / '.join(f'{c / sum(counts):.0%}' for c in counts)})")
if "bf16-dit" in precisions:
    print(f"Patch-DiT PGS bf16 / fp32: {dit['bf16-dit PGS'] / dit['fp32 PGS']:.2f}")

# 3. cross-image batching: K images' patches per call vs image by image (the best precision)
best = models[precisions[-1]]
k = min(a.dit_images, len(states))
batching = interleaved({
    "image by image": lambda: [flow.refine(best, s, 0) for s in states],
    f"{k} images per call": lambda: [flow.refine(best, states[i:i + k], 0) for i in range(0, len(states), k)],
}, a.repeats)
report["batching_seconds"] = batching
print(f"Patch-DiT {precisions[-1]}, {k} images per call / image by image: "
      f"{batching[f'{k} images per call'] / batching['image by image']:.2f}")
if dev.type == "cuda":
    report["peak_gpu_gib"] = torch.cuda.max_memory_allocated(dev) / 2 ** 30
    print(f"peak GPU memory {report['peak_gpu_gib']:.1f} GiB")


def ray_vs_local() -> dict[str, float]:
    """The same photos through the Ray pipeline (a local Ray; on a GPU the GRM, hard and easy
    stages take 0.4 / 0.3 / 0.3 of it, the stitchers the CPU) and the in-process engine, both
    with the device rule of patchscaler.model.resolve_device; interleaved, median seconds."""
    import tempfile

    import ray

    from pipeline.graph import run_pipeline
    from pipeline.local import run_local
    from pipeline.options import UpscaleOptions
    src = Path(tempfile.mkdtemp(prefix="gpu-bench-in"))
    for name, prep in photos:
        from patchscaler import imageio
        imageio.to_pil(prep.rgb, None, "RGB").save(src / f"{Path(name).stem}.png")
    gpus = {"grm_gpus": 0.4, "dit_gpus": 0.3} if dev.type == "cuda" else {}
    # a short temp dir of its own: Ray's socket paths must stay under 108 bytes
    ray.init(num_cpus=os.cpu_count(), num_gpus=1 if dev.type == "cuda" else 0, include_dashboard=False,
             log_to_driver=False, _temp_dir="/tmp/ray-gpu-bench")
    kw = dict(checkpoint=ckpt, max_batch=a.max_batch, report=False, resume=False)
    engines = {"Ray pipeline": lambda: run_pipeline(UpscaleOptions(str(src), tempfile.mkdtemp(), actor_cpus=0.2,
                                                                   dit_images=a.dit_images, **gpus, **kw)),
               "in-process": lambda: run_local(UpscaleOptions(str(src), tempfile.mkdtemp(), device=a.device, **kw))}
    out = interleaved(engines, a.repeats)
    ray.shutdown()
    return out


if a.ray:
    try:
        import ray  # noqa: F401
    except ImportError:
        print("Ray pipeline vs in-process: Ray is not installed here, skipped")
    else:
        engines = ray_vs_local()
        report["engine_seconds"] = engines
        print(f"Ray pipeline / in-process on {len(photos)} photos: {engines['Ray pipeline'] / engines['in-process']:.2f} "
              f"({engines['Ray pipeline']:.1f} s vs {engines['in-process']:.1f} s)")
if a.out:
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "gpu.json").write_text(json.dumps(report, indent=1))
