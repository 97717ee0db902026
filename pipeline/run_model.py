"""The run's model wherever it runs: the components a stage needs (checkpoint.COMPONENTS), on
the stage's device, with the run's overrides (--thresholds, --taus, --steps, --rtm), and the
groups the hard Patch-DiT pool serves. The same for both engines: the in-process engine asks
for the whole model (stage None), each Ray stage for its own components."""
from __future__ import annotations

from patchscaler.config import override
from patchscaler.model import Runtime

from storage import options_for

from .options import UpscaleOptions

# what each Ray stage needs of the model (checkpoint.COMPONENTS; the codec always comes)
STAGE_COMPONENTS = {"grm": ("grm",), "dit": ("texture", "dit", "rtm"), "stitch": ()}


def stage_gpus(opts: UpscaleOptions, stage: str | None) -> float | None:
    """GPUs a stage reserves from Ray (None: the in-process engine, no Ray)."""
    return {None: None, "grm": opts.grm_gpus, "dit": opts.dit_gpus, "stitch": 0.0}[stage]


def stage_device(opts: UpscaleOptions, stage: str | None) -> str:
    """The device of a stage (patchscaler.model.resolve_device: GPUs reserved -> cuda)."""
    from patchscaler.model import resolve_device
    return resolve_device(opts.device, stage_gpus(opts, stage))


def load_model(opts: UpscaleOptions, stage: str | None = None):
    """The model for one stage of STAGE_COMPONENTS (None: the whole model, in-process), on the
    stage's device, with the run's overrides."""
    from patchscaler.upscale import build_default
    components = None if stage is None else STAGE_COMPONENTS[stage]
    rt = Runtime(device=stage_device(opts, stage), precision=opts.precision, max_batch=opts.max_batch,
                 compile=opts.compile)
    model = build_default(opts.checkpoint, components, opts.checkpoint_options)
    if opts.rtm and (components is None or "rtm" in components):
        from rtm_index.format import expectations, load_rtm
        model.rtm = load_rtm(opts.rtm, options_for(opts.rtm, opts.rtm_options), expect=expectations(model))
    p = model.cfg.pgs
    if opts.thresholds or opts.taus or opts.steps:
        # through config.override: validated, and every other PGS field (seam_shift) kept
        model.cfg = override(model.cfg, pgs={
            "thresholds": tuple(opts.thresholds or p.thresholds), "taus": tuple(opts.taus or p.taus),
            "steps": tuple(opts.steps or p.steps),
            "hard_groups": p.hard_groups if not opts.thresholds else (len(opts.thresholds),)})
    return model.configure(rt)


def hard_groups(opts: UpscaleOptions, cfg) -> set[int]:
    """The groups the hard pool serves (UpscaleOptions.hard_groups, else the config's)."""
    n = cfg.pgs.num_groups
    groups = opts.hard_groups or cfg.pgs.hard_groups
    bad = [g for g in groups if not 0 <= g < n]
    if bad:
        raise ValueError(f"hard groups {bad} do not exist: the model has groups 0..{n - 1}")
    return set(groups)
