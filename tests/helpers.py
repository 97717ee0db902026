import io
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def photo(w=48, h=40, seed=0, mode="RGB") -> Image.Image:
    """A small real-looking test image: smooth gradients plus texture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    r = 128 + 100 * np.sin(x / 7.0 + seed)
    g = 128 + 100 * np.cos(y / 5.0)
    b = rng.integers(0, 255, (h, w))
    arr = np.stack([r, g, b], -1).clip(0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB").convert(mode)


def encode(im: Image.Image, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def scan(w=40, h=32, alpha=False, seed=0) -> np.ndarray:
    """A smooth 16-bit gradient with fine noise: values an 8-bit file cannot hold."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    planes = [20000 + 30000 * np.sin(x / 9 + c) * np.cos(y / 7) + rng.normal(0, 300, (h, w)) for c in range(3)]
    if alpha:
        planes.append(np.linspace(10000, 65535, w)[None].repeat(h, 0))
    return np.clip(np.stack(planes, -1), 0, 65535).astype(np.uint16)


def write_scans(folder, alpha=False, w=40, h=32) -> np.ndarray:
    """A 16-bit master as scan.png and scan.tif in `folder` (RGB, or RGBA with `alpha`)."""
    import imagecodecs
    import tifffile
    a = scan(w, h, alpha=alpha)
    (Path(folder) / "scan.png").write_bytes(imagecodecs.png_encode(a))
    tifffile.imwrite(Path(folder) / "scan.tif", a, photometric="rgb", extrasamples=("unassalpha",) if alpha else None)
    return a


def write_tree(root, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        p = os.path.join(root, name)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)


ROOT = Path(__file__).parents[1]   # the repository


def opts_for(src, dst, ckpt, **kw):
    """The in-process engine's options for a tiny run: the test checkpoint, small limits, two
    thresholds that spread its patches over the groups, no report."""
    from pipeline.options import UpscaleOptions
    base = dict(checkpoint=ckpt, precision="fp32", max_pixels=250_000, max_batch=16,
                thresholds=(0.6, 0.4), report=False)
    base.update(kw)
    return UpscaleOptions(str(src), str(dst), **base)


def manifest_rows(dst) -> list[dict]:
    import pyarrow.parquet as pq
    return [r for p in sorted(Path(dst, "_manifest").glob("manifest-*.parquet")) for r in pq.read_table(p).to_pylist()]


def cli(*args, **kw) -> subprocess.CompletedProcess:
    """`patchscaler ARGS` in a child process, from the repository."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), **kw.pop("env", {}))
    return subprocess.run([sys.executable, "-m", "jobs.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=kw.pop("timeout", 300), **kw)


@contextmanager
def tmpfs(path, size="1m", read_only=False):
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip() or 'mount failed'}")
    try:
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)
