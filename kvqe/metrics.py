"""Quality and agreement metrics: rank/linear correlations (scipy), KVQ rank accuracy, PSNR and SSIM.

scipy.stats is imported by the correlations that use it, not with the module: it takes about 1.5 s, and every
``kvqe`` command imports this module (reports' PSNR) whether it correlates anything or not."""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def _pair(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"need two equally long 1-D sequences, got {x.shape} and {y.shape}")
    return x, y


def _defined(x: np.ndarray, y: np.ndarray) -> bool:
    return len(x) >= 2 and float(np.std(x)) > 0 and float(np.std(y)) > 0


def srocc(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Spearman rank-order correlation (NaN when undefined: fewer than 2 items or a constant side)."""
    x, y = _pair(a, b)
    from scipy import stats

    return float(stats.spearmanr(x, y).statistic) if _defined(x, y) else float("nan")


def plcc(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Pearson linear correlation (NaN when undefined)."""
    x, y = _pair(a, b)
    from scipy import stats

    return float(stats.pearsonr(x, y).statistic) if _defined(x, y) else float("nan")


def krocc(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Kendall rank-order correlation (tau-b; NaN when undefined)."""
    x, y = _pair(a, b)
    from scipy import stats

    return float(stats.kendalltau(x, y).statistic) if _defined(x, y) else float("nan")


def rmse(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    x, y = _pair(a, b)
    return float(np.sqrt(np.mean((x - y) ** 2)))


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """PSNR in dB of two same-shaped images (inf when identical)."""
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(peak**2 / mse))


def ssim(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """Mean SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03), averaged over
    channels; the same definition as scikit-image's ``gaussian_weights=True`` variant."""
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    x, y = a.astype(np.float64), b.astype(np.float64)
    if x.ndim == 2:
        x, y = x[..., None], y[..., None]
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    values = []
    for ch in range(x.shape[2]):
        xs, ys = x[..., ch], y[..., ch]

        def blur(img: np.ndarray) -> np.ndarray:
            return cv2.GaussianBlur(img, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

        mx, my = blur(xs), blur(ys)
        sxx, syy, sxy = blur(xs * xs) - mx * mx, blur(ys * ys) - my * my, blur(xs * ys) - mx * my
        # scikit-image's sample-covariance correction for a window of 121 samples
        sxx, syy, sxy = (v * (121 / 120) for v in (sxx, syy, sxy))
        num = (2 * mx * my + c1) * (2 * sxy + c2)
        den = (mx * mx + my * my + c1) * (sxx + syy + c2)
        full = num / den
        values.append(float(full[5:-5, 5:-5].mean()))  # skimage crops the half window
    return float(np.mean(values))
