"""SinSR one-step SR as three single-input graphs (encoder, denoiser, decoder) joined by numpy glue: its
constants, stage names, the glue between the stages and the noise anchored to image coordinates.

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
NOISE_BLOCK = 64  # the noise is drawn per 64x64 block of the latent (LR) grid, see anchored_noise
OUT_SCALES = (1, 2, 4)  # divisors of SinSR's x4: the final area resize is an exact box average

SINSR_STAGES = ("encoder", "denoiser", "decoder")
# the VQ split by resolution for exact tiling (optional: bundles without them tile by blended windows)
TILE_STAGES = ("encoder_high", "decoder_high")  # multi-input tile graphs (x, stats, mask) -> (y, sums)
EXACT_STAGES = ("encoder_high", "encoder_mid", "decoder_mid", "decoder_high")
KINDS: dict[str, tuple[str, ...]] = {"sinsr": SINSR_STAGES, "sinsr+realesrgan": ("restore", *SINSR_STAGES)}

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


def check_out_scale(out_scale: int) -> int:
    if out_scale not in OUT_SCALES:
        raise BadInputError(f"out_scale must be one of {', '.join(map(str, OUT_SCALES))}, got {out_scale}")
    return out_scale


def anchored_noise(shape: tuple[int, ...], origin: tuple[int, int] = (0, 0), seed: int = DEFAULT_SEED) -> np.ndarray:
    """Noise for the latent region of ``shape`` (N, C, h, w) whose top-left sits at ``origin`` (y, x) of the
    image's latent grid: each 64x64 block of the grid is ``default_rng([seed, block_row, block_col])``, so a
    tile sees the noise the untiled image has at the same place (the same for every image of a batch)."""
    _, channels, height, width = shape
    top, left = origin
    if top < 0 or left < 0:
        raise BadInputError(f"tile origin {origin} must be non-negative")
    out = np.empty((channels, height, width), np.float32)
    for row in range(top // NOISE_BLOCK, (top + height - 1) // NOISE_BLOCK + 1):
        y0, y1 = max(top, row * NOISE_BLOCK), min(top + height, (row + 1) * NOISE_BLOCK)
        for col in range(left // NOISE_BLOCK, (left + width - 1) // NOISE_BLOCK + 1):
            x0, x1 = max(left, col * NOISE_BLOCK), min(left + width, (col + 1) * NOISE_BLOCK)
            block = np.random.default_rng([seed, row, col]).standard_normal((channels, NOISE_BLOCK, NOISE_BLOCK))
            out[:, y0 - top:y1 - top, x0 - left:x1 - left] = block[
                :, y0 - row * NOISE_BLOCK:y1 - row * NOISE_BLOCK, x0 - col * NOISE_BLOCK:x1 - col * NOISE_BLOCK]
    return np.repeat(out[None], shape[0], axis=0)


def box_downscale(x: np.ndarray, factor: int) -> np.ndarray:
    """Area resize of an NCHW float array by 1/``factor`` (H and W multiples of it): the mean of each
    ``factor`` x ``factor`` block, which is what ``cv2.INTER_AREA`` computes at an integer factor."""
    if factor == 1:
        return x
    batch, channels, height, width = x.shape
    if height % factor or width % factor:
        raise BadInputError(f"cannot area-resize {height}x{width} by 1/{factor}")
    blocks = x.reshape(batch, channels, height // factor, factor, width // factor, factor)
    return blocks.mean(axis=(3, 5), dtype=np.float32)


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
