"""How close the Patch-DiT forward comes to this machine's matmul peak, in the same process:
a large square matmul (the peak) interleaved with one Patch-DiT sampling call on a batch of
patches (texture prompt precomputed, as the sampler does). FLOPs are counted by
torch.utils.flop_counter; the op split comes from torch.profiler.

    python bench/dit_efficiency.py [--batch 64] [--precision fp32|bf16] [--repeats 5] [--threads 2]

Also Real-ESRGAN (the GRM) on a --grm-size LR input, the same way, and what that means for a
512 px photo: FLOPs scale with the pixels, so its time at this efficiency, and at the peak
(the floor no kernel work can go below on this machine).
"""
import argparse

import harness

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--batch", type=int, default=64, help="patches per Patch-DiT call (the runtime's max_batch)")
ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
ap.add_argument("--checkpoint")
ap.add_argument("--grm-size", type=int, default=64, help="LR size for the Real-ESRGAN figure (0: skip)")
harness.add_args(ap)
a = ap.parse_args()
a.repeats = max(a.repeats, 3)
torch = harness.start(a)

from torch.profiler import ProfilerActivity, profile  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from patchscaler.model import Runtime  # noqa: E402
from patchscaler.upscale import build_default  # noqa: E402

model = build_default(a.checkpoint).configure(Runtime(precision=a.precision))
dit, cfg = model.dit, model.cfg
C, V = cfg.latent_channels, cfg.pgs.patch_size
g = torch.Generator().manual_seed(0)
x, y0 = torch.randn(a.batch, C, V, V, generator=g), torch.randn(a.batch, C, V, V, generator=g)
t = torch.full((a.batch,), 500)
tokens = torch.randn(a.batch, cfg.texture.top_k * (V // cfg.dit.patch) ** 2, cfg.dit.hidden, generator=g)
n = 2048
ma, mb = torch.randn(n, n), torch.randn(n, n)


def matmul():
    # the peak of the precision used, reached the way the model reaches it (autocast casts)
    with model.runtime.autocast():
        return torch.nn.functional.linear(ma, mb)  # the same kernel as the model's layers



@torch.no_grad()
def forward():
    with model.runtime.autocast():
        return dit(x, t, y0, prompt)


with torch.no_grad(), model.runtime.autocast():
    prompt = dit.texture_prompt(tokens)
lr = torch.rand(1, 3, a.grm_size, a.grm_size).contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def realesrgan():
    with model.runtime.autocast("grm"):
        return model.grm.restore(lr)


with FlopCounterMode(display=False) as fc:
    forward()
flops = fc.get_total_flops()
variants = {"matmul": matmul, "Patch-DiT": forward}
if a.grm_size:
    with FlopCounterMode(display=False) as fc:
        realesrgan()
    grm_flops = fc.get_total_flops()
    variants["Real-ESRGAN"] = realesrgan
times = harness.interleaved(variants, a.repeats)
peak = 2 * n ** 3 / min(times["matmul"])
got = flops / min(times["Patch-DiT"])
print(f"matmul {n}x{n} {a.precision}: {peak / 1e9:.1f} GFLOP/s (best of {a.repeats})")
print(f"Patch-DiT forward, {a.batch} patches ({a.batch * (V // cfg.dit.patch) ** 2} tokens), {flops / 1e9:.1f} GFLOP: "
      f"{min(times['Patch-DiT']) * 1e3:.0f} ms, {got / 1e9:.1f} GFLOP/s")
print(f"Patch-DiT / matmul peak: {got / peak:.0%}")
if a.grm_size:
    grm_rate = grm_flops / min(times["Real-ESRGAN"])
    per_px = grm_flops / a.grm_size ** 2
    print(f"Real-ESRGAN, {a.grm_size} px LR, {grm_flops / 1e9:.1f} GFLOP ({per_px / 1e6:.2f} MFLOP per LR pixel): "
          f"{min(times['Real-ESRGAN']):.2f} s, {grm_rate / 1e9:.1f} GFLOP/s = {grm_rate / peak:.0%} of the matmul peak")
    big = per_px * 512 ** 2
    print(f"a 512 px photo: Real-ESRGAN alone {big / 1e12:.2f} TFLOP -> {big / grm_rate:.0f} s at this rate, "
          f"{big / peak:.0f} s even at the matmul peak")
with profile(activities=[ProfilerActivity.CPU]) as prof:
    forward()
ev = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
total = sum(e.self_cpu_time_total for e in ev)
print("time by op (self): " + ", ".join(f"{e.key.replace('aten::', '')} {e.self_cpu_time_total / total:.0%}"
                                        for e in ev[:8]))
