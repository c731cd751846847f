"""SinSR one-step SR as three single-input graphs (encoder, denoiser, decoder) joined by numpy glue.

No torch here: the runtime runs the stages on any backend. The torch reference
(``kvqe.models.sinsr.one_step``) uses these same constants and functions, so both agree.

Pipeline for an LR batch (N, 3, h, w) in [0, 1]:
``y0 = pad64((lr − 0.5) / 0.5)`` -> encoder (bicubic x4 inside) -> ``z_y`` ->
``denoiser(cat[(z_y + NOISE_SCALE·eps) / INPUT_SCALE, y0])`` -> ``x0`` -> decoder -> ``dec`` (N, 3, 4H, 4W) ->
``clamp(crop(dec), −1, 1)·0.5 + 0.5``. The stages need H and W to be multiples of :data:`MULTIPLE`; the
padding here takes care of it, so a tiler may hand over tiles of any size (multiples of 64 waste nothing).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from kvqe.errors import BadInputError

SCALE = 4
MULTIPLE = 64  # every UNet level (LR / 8 at the deepest) must hold whole 8x8 Swin windows
TIMESTEP = 14  # the last of the 15 steps (respacing is the identity); baked into the denoiser graph
KAPPA = 2.0
SQRT_ETA_T = 0.9899999999999998  # sqrt_etas[14] of the exponential schedule (float64, configs.json)
ETA_T = 0.9800999999999995  # etas[14] (float64, configs.json)
# c = float32(kappa · sqrt_eta_T) = 1.98000002; std = sqrt(float32(eta_T) · kappa² + 1) in float32 = 2.2181973
NOISE_SCALE = np.float32(KAPPA * SQRT_ETA_T)
INPUT_SCALE = np.sqrt(np.float32(ETA_T) * np.float32(KAPPA**2) + np.float32(1))
DEFAULT_SEED = 1234

Stage = Callable[[np.ndarray], np.ndarray]


def _check_lr(lr: np.ndarray) -> None:
    if lr.ndim != 4 or lr.shape[1] != 3 or lr.dtype != np.float32:
        raise BadInputError(f"SinSR takes float32 RGB NCHW input, got {lr.dtype} {lr.shape}")
    if min(lr.shape[2:]) < 2:
        raise BadInputError(f"SinSR input must be at least 2x2 pixels, got {lr.shape[2]}x{lr.shape[3]}")


def padded_size(height: int, width: int) -> tuple[int, int]:
    """The LR size rounded up to multiples of :data:`MULTIPLE`."""
    return -(-height // MULTIPLE) * MULTIPLE, -(-width // MULTIPLE) * MULTIPLE


def prepare(lr: np.ndarray) -> np.ndarray:
    """LR in [0, 1] -> ``y0`` in [−1, 1], reflect-padded at the bottom/right to multiples of 64.

    Pads wider than the image reflect repeatedly (numpy's rule; the official code only handles ≥ 33 px).
    """
    _check_lr(lr)
    y0 = (lr - np.float32(0.5)) / np.float32(0.5)
    height, width = lr.shape[2:]
    target_h, target_w = padded_size(height, width)
    return np.pad(y0, ((0, 0), (0, 0), (0, target_h - height), (0, target_w - width)), mode="reflect")


def noise(shape: tuple[int, ...], seed: int = DEFAULT_SEED) -> np.ndarray:
    """The default ``eps``: standard normal float64 draws from ``default_rng(seed)``, cast to float32."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def denoiser_input(z_y: np.ndarray, y0: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """``cat([(z_y + c·eps) / std, y0], 1)``, float32, in the official order of operations."""
    if eps.shape != z_y.shape:
        raise BadInputError(f"noise shape {eps.shape} != latent shape {z_y.shape}")
    x_t = z_y + NOISE_SCALE * eps.astype(np.float32, copy=False)
    return np.concatenate([x_t / INPUT_SCALE, y0], axis=1)


def finish(dec: np.ndarray, height: int, width: int) -> np.ndarray:
    """Decoder output -> SR in [0, 1]: crop to ``4h x 4w``, clamp to [−1, 1], ``·0.5 + 0.5``."""
    cropped = dec[:, :, : height * SCALE, : width * SCALE]
    return np.clip(cropped, -1.0, 1.0) * np.float32(0.5) + np.float32(0.5)


def one_step(lr: np.ndarray, encoder: Stage, denoiser: Stage, decoder: Stage,
             eps: np.ndarray | None = None) -> np.ndarray:
    """LR (N, 3, h, w) float32 in [0, 1] -> SR (N, 3, 4h, 4w) in [0, 1] through the three stages.

    ``eps``: the noise at the padded size (default :func:`noise` with :data:`DEFAULT_SEED`).
    """
    height, width = lr.shape[2:]
    y0 = prepare(lr)
    z_y = encoder(y0)
    x0 = denoiser(denoiser_input(z_y, y0, noise(z_y.shape) if eps is None else eps))
    return finish(decoder(x0), height, width)
