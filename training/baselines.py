"""Classic no-reference baselines: BRISQUE (the ``brisque`` package's SVR) and NIQE (implemented here).

Both are lower-is-better. BRISQUE: Mittal, Moorthy, Bovik 2012; NIQE: Mittal, Soundararajan, Bovik 2013.
Videos are scored as the mean over the runtime's keyframes (one per second, at most eight).
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy.special import gamma

from kvqe.files import atomic_output_file
from kvqe.sdk.frames import ASSUMED_FPS
from kvqe.sdk.sampling import select_keyframes
from kvqe.sdk.sources import open_source
from kvqe.specs import Sampling

KEYFRAMES = Sampling(per_second=1, max_frames=8)
PATCH = 96  # NIQE patch side at the finer scale (48 at the coarser one)
SHARPNESS_THRESHOLD = 0.75  # pristine patches: mean local deviation >= this fraction of the image's sharpest

# GGD shape alpha <-> moment ratio E[|x|]^2 / E[x^2] = G(2/a)^2 / (G(1/a) G(3/a)), increasing in alpha
_ALPHAS = np.arange(0.2, 10.0 + 1e-9, 0.001)
_RATIOS = gamma(2 / _ALPHAS) ** 2 / (gamma(1 / _ALPHAS) * gamma(3 / _ALPHAS))


def keyframe_images(path: str | Path, keyframes: Sampling = KEYFRAMES) -> list[np.ndarray]:
    """A video's keyframes (the runtime's sampler) as HxWx3 uint8 BGR images."""
    with open_source(path) as frames:
        chosen = select_keyframes(frames, frames.fps or ASSUMED_FPS, keyframes, frames.frame_count)
    return [frame.image for frame in chosen]


def keyframe_mean(path: str | Path, score: Callable[[np.ndarray], float],
                  keyframes: Sampling = KEYFRAMES) -> float:
    """Mean of ``score(bgr_uint8)`` over a video's keyframes (the runtime's sampler)."""
    return float(np.mean([score(image) for image in keyframe_images(path, keyframes)]))


# -- BRISQUE -----------------------------------------------------------------------------------------------
@functools.cache
def _brisque() -> Any:
    from brisque import BRISQUE

    return BRISQUE(url=False)


def brisque_score(bgr_uint8: np.ndarray) -> float:
    """BRISQUE of an HxWx3 uint8 BGR image with the package's shipped SVR (about 0..100, lower is better).

    ``BRISQUE.score()`` fails on NumPy >= 2.4: its AGGD fit divides by ``x.shape`` (a tuple), so 15 of the
    18 features per scale are shape-(1,) arrays, and its ``scale_features`` calls ``float()`` on each, which
    NumPy 2.4 refuses (deprecated since 1.25). So the same steps are run here through its public pieces,
    flattening the features to float64 before its scaler and SVR.
    """
    import skimage.color

    model = _brisque()
    gray = skimage.color.rgb2gray(np.ascontiguousarray(bgr_uint8[..., ::-1]))
    half = cv2.resize(gray, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)
    features = [model.calculate_brisque_features(image, kernel_size=7, sigma=7 / 6) for image in (gray, half)]
    flat = np.concatenate([np.ravel(value) for scale in features for value in scale]).astype(np.float64)
    return float(model.calculate_image_quality_score(flat))


def brisque_video(path: str | Path, keyframes: Sampling = KEYFRAMES) -> float:
    """Mean BRISQUE over a video's keyframes."""
    return keyframe_mean(path, brisque_score, keyframes)


# -- NIQE --------------------------------------------------------------------------------------------------
def mscn(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean-subtracted contrast-normalised coefficients of a 0..255 grey image and its local deviation
    (7x7 Gaussian window, sigma 7/6, replicated borders, C = 1)."""
    def local_mean(image: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(image, (7, 7), 7 / 6, borderType=cv2.BORDER_REPLICATE)

    mu = local_mean(gray)
    sigma = np.sqrt(np.abs(local_mean(gray * gray) - mu * mu))
    return (gray - mu) / (sigma + 1), sigma


def _shape(ratio: np.ndarray) -> np.ndarray:
    return np.interp(ratio, _RATIOS, _ALPHAS)


def ggd_fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zero-mean GGD shape alpha and scale beta per row of ``x`` (moment matching)."""
    square = np.mean(x * x, axis=1)
    alpha = _shape(np.mean(np.abs(x), axis=1) ** 2 / square)
    return alpha, np.sqrt(square * gamma(1 / alpha) / gamma(3 / alpha))


def aggd_fit(x: np.ndarray) -> tuple[np.ndarray, ...]:
    """Asymmetric GGD per row of ``x``: shape alpha, mean eta, left and right scales (moment matching)."""
    left, right = x < 0, x > 0
    sigma_l = np.sqrt(np.sum(x * x * left, axis=1) / np.sum(left, axis=1))
    sigma_r = np.sqrt(np.sum(x * x * right, axis=1) / np.sum(right, axis=1))
    g = sigma_l / sigma_r
    r = np.mean(np.abs(x), axis=1) ** 2 / np.mean(x * x, axis=1)
    alpha = _shape(r * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2)
    unit = np.sqrt(gamma(1 / alpha) / gamma(3 / alpha))
    beta_l, beta_r = sigma_l * unit, sigma_r * unit
    eta = (beta_r - beta_l) * gamma(2 / alpha) / gamma(1 / alpha)
    return alpha, eta, beta_l, beta_r


def _blocks(image: np.ndarray, size: int) -> np.ndarray:
    rows, cols = image.shape[0] // size, image.shape[1] // size
    grid = image[: rows * size, : cols * size].reshape(rows, size, cols, size)
    return grid.swapaxes(1, 2).reshape(-1, size, size)


def _scale_features(gray: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """18 features per ``size`` block (GGD of the MSCN, AGGD of its four neighbour products) and each
    block's sharpness (mean local deviation)."""
    coeffs, sigma = mscn(gray)
    b = _blocks(coeffs, size)
    products = (b[:, :, :-1] * b[:, :, 1:], b[:, :-1, :] * b[:, 1:, :],
                b[:, :-1, :-1] * b[:, 1:, 1:], b[:, 1:, :-1] * b[:, :-1, 1:])
    n = len(b)
    columns = [*ggd_fit(b.reshape(n, -1))]
    for product in products:
        columns += aggd_fit(product.reshape(n, -1))
    return np.column_stack(columns), _blocks(sigma, size).mean(axis=(1, 2))


def patch_features(bgr_uint8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NIQE's 36 features of each 96x96 patch (two scales) and the patches' sharpness; rows of flat patches,
    whose statistics are undefined, are NaN."""
    gray = cv2.cvtColor(bgr_uint8, cv2.COLOR_BGR2GRAY).astype(np.float64)
    height, width = gray.shape[0] // PATCH * PATCH, gray.shape[1] // PATCH * PATCH
    if not height or not width:
        raise ValueError(f"NIQE needs an image of at least {PATCH}x{PATCH} pixels, "
                         f"got {gray.shape[1]}x{gray.shape[0]}")
    gray = gray[:height, :width]
    with np.errstate(divide="ignore", invalid="ignore"):
        fine, sharpness = _scale_features(gray, PATCH)
        half = cv2.resize(gray, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
        coarse, _ = _scale_features(half, PATCH // 2)
    return np.hstack([fine, coarse]), sharpness


@dataclass(frozen=True)
class NiqeModel:
    """The multivariate Gaussian of pristine patch features."""

    mu: np.ndarray  # (36,)
    cov: np.ndarray  # (36, 36)

    def save(self, path: str | Path) -> None:
        with atomic_output_file(path, suffix=".npz") as tmp:
            np.savez(tmp, mu=self.mu, cov=self.cov)

    @classmethod
    def load(cls, path: str | Path) -> NiqeModel:
        with np.load(path) as data:
            return cls(mu=data["mu"], cov=data["cov"])


def _finite(features: np.ndarray) -> np.ndarray:
    return features[np.all(np.isfinite(features), axis=1)]


def fit_niqe_model(pristine_images: Iterable[np.ndarray],
                   sharpness_threshold: float = SHARPNESS_THRESHOLD) -> NiqeModel:
    """Fit the pristine MVG on the sharpest patches of each image (BGR uint8, at least 96x96)."""
    selected = []
    for image in pristine_images:
        features, sharpness = patch_features(image)
        selected.append(_finite(features[sharpness >= sharpness_threshold * sharpness.max()]))
    features = np.vstack(selected) if selected else np.empty((0, 36))
    if len(features) < 2:
        raise ValueError(f"NIQE needs at least 2 textured pristine patches, got {len(features)}")
    return NiqeModel(mu=features.mean(axis=0), cov=np.cov(features, rowvar=False))


def niqe_score(model: NiqeModel, bgr_uint8: np.ndarray) -> float:
    """NIQE of an HxWx3 uint8 BGR image: the distance between the pristine MVG and the MVG of the image's
    patches, sqrt((mu1-mu2)^T ((S1+S2)/2)^+ (mu1-mu2)); higher is worse. Needs two textured patches."""
    features = _finite(patch_features(bgr_uint8)[0])
    if len(features) < 2:
        raise ValueError(f"NIQE needs at least 2 textured {PATCH}x{PATCH} patches, got {len(features)}")
    delta = model.mu - features.mean(axis=0)
    spread = (model.cov + np.cov(features, rowvar=False)) / 2
    return float(np.sqrt(max(delta @ np.linalg.pinv(spread) @ delta, 0.0)))


def niqe_video(model: NiqeModel, path: str | Path, keyframes: Sampling = KEYFRAMES) -> float:
    """Mean NIQE over a video's keyframes."""
    return keyframe_mean(path, functools.partial(niqe_score, model), keyframes)
