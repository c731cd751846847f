"""Super-resolution over tiles with Real-ESRGAN's semantics (``tile``, ``tile_pad``, ``pre_pad``), or blended.

Default (Real-ESRGAN): each tile is run with ``tile_pad`` pixels of context on every side (clipped at the
image border) and only its own region of the output is kept, so a tiled result matches the untiled one up
to the receptive field beyond ``tile_pad``. Tiles are converted to uint8 as they come, so working memory
is bounded by the tile size; only the uint8 output is image sized.

Blended (``blend=True``, for models with global operations such as normalisation or attention over the
whole image, whose tiles never match the untiled result exactly): the model runs on windows of ``tile + 2 * tile_pad``
pixels (the whole image along an axis that fits in one), spaced evenly so that neighbours overlap by at
least ``2 * tile_pad`` and every window is full size (multiples of 64 stay multiples of 64). Overlapping
outputs are averaged with linear ramps across each overlap (weights 1 elsewhere), so there are no seams.
Only one band of window rows is held in float32 (``(tile + 2 * tile_pad) * scale`` rows of the output
width); finished rows go to uint8 at once.

``run_at(patch, origin)``, when given, is called instead of ``run(patch)`` with the patch's top-left in the
(pre-padded) image, for models whose output depends on the position (:class:`PositionedRunner`, e.g.
noise anchored to the image).

Exact (``exact``: a runner that tiles itself, :class:`ExactTiler`, e.g. a pipeline that splits its global
parts from its local ones): when its ``tiles_exactly`` is true, tiles are asked for and the (pre-padded) image is larger than one
tile, the runner gets the whole image and ``tile``/``tile_pad`` as its kept size and context, and yields output
blocks as they are finished (its high-resolution parts hold one window; ``blend`` does not apply); each block
goes to uint8 at once.

Default tile: a bundle that declares none (``tile.size`` 0) is tiled by :func:`budget_tile`, the largest tile
whose model run fits a memory budget (``memory_budget_mb``, default :data:`SR_MEMORY_BUDGET_MB`), so working
memory no longer grows with the image; an image that fits one tile runs whole, as before.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from kvqe.errors import BadInputError

SR_MEMORY_BUDGET_MB = 256.0  # working memory of one model run, beside the image-sized input and output
# per input pixel of a window, a Real-ESRGAN run on ONNX Runtime holds about five float32 maps of its feature
# width and of its output channels (3 * scale**2 before the pixel shuffle): measured 1.3-2.3 KB at x4
_FEATURE_CHANNELS, _LIVE_MAPS = 64, 5
_TILE_STEP = 16

RunTile = Callable[[np.ndarray], np.ndarray]  # 1x3xhxw float32 -> 1x3x(h*s)x(w*s)
RunTileAt = Callable[[np.ndarray, tuple[int, int]], np.ndarray]  # the same, given the tile's (top, left)
ToImage = Callable[[np.ndarray], np.ndarray]  # 3xHxW float32 -> HxWx3 uint8


@runtime_checkable
class PositionedRunner(Protocol):
    """A runner whose output for a tile depends on where the tile sits in the image."""

    def run_at(self, batch: np.ndarray, origin: tuple[int, int]) -> np.ndarray: ...


@runtime_checkable
class ExactTiler(Protocol):
    """A runner that tiles the whole image itself and matches its untiled result."""

    @property
    def tiles_exactly(self) -> bool: ...

    def run_exact(self, batch: np.ndarray, tile: int, context: int) -> Iterator[tuple[int, int, np.ndarray]]: ...


@dataclass(frozen=True)
class TileSettings:
    """``tile``: tile edge in input pixels (0 = whole image); ``tile_pad``: context per side;
    ``pre_pad``: reflect padding added at the bottom/right before and cropped after;
    ``blend``: overlapping windows averaged with linear ramps instead of kept tile centres."""

    tile: int = 0
    tile_pad: int = 10
    pre_pad: int = 0
    blend: bool = False

    def __post_init__(self) -> None:
        if self.tile < 0 or self.tile_pad < 0 or self.pre_pad < 0:
            raise BadInputError(f"tile settings must be non-negative, got {self}")


def budget_tile(budget_mb: float, scale: int, tile_pad: int) -> int:
    """The largest tile (a multiple of 16 input pixels) whose window, the tile plus ``tile_pad`` per side,
    runs in about ``budget_mb`` MiB at x``scale``."""
    if not (isinstance(budget_mb, (int, float)) and math.isfinite(budget_mb) and budget_mb > 0):
        raise BadInputError(f"memory_budget_mb must be a positive number, got {budget_mb!r}")
    per_pixel = 4 * _LIVE_MAPS * (_FEATURE_CHANNELS + 3 * scale**2)
    window = math.isqrt(int(budget_mb * 2**20 / per_pixel))
    return max(_TILE_STEP, (window - 2 * tile_pad) // _TILE_STEP * _TILE_STEP)


def enhance_tiled(chw: np.ndarray, run: RunTile, scale: int, settings: TileSettings, to_image: ToImage,
                  run_at: RunTileAt | None = None, exact: ExactTiler | None = None) -> np.ndarray:
    """Upscale a 3xHxW float32 image by ``scale`` tile by tile; returns the HxWx3 uint8 result."""
    _, height, width = chw.shape
    pre = settings.pre_pad
    if pre:
        if pre >= height or pre >= width:
            raise BadInputError(f"pre_pad {pre} must be smaller than the image ({height}x{width})")
        chw = np.pad(chw, ((0, 0), (0, pre), (0, pre)), mode="reflect")
    _, padded_h, padded_w = chw.shape
    call: RunTileAt = run_at if run_at is not None else (lambda patch, origin: run(patch))
    if settings.tile and max(padded_h, padded_w) > settings.tile and exact is not None and exact.tiles_exactly:
        output = _exact(chw, exact, scale, settings, to_image)
    elif settings.blend:
        output = _blended(chw, call, scale, settings, to_image)
    else:
        output = _kept_centres(chw, call, scale, settings, to_image)
    return output[: (padded_h - pre) * scale, : (padded_w - pre) * scale]


def _run_checked(call: RunTileAt, chw: np.ndarray, top: int, left: int, bottom: int, right: int,
                 scale: int) -> np.ndarray:
    patch = np.ascontiguousarray(chw[None, :, top:bottom, left:right])
    result = call(patch, (top, left))
    expected = (1, 3, (bottom - top) * scale, (right - left) * scale)
    if result.shape != expected:
        raise BadInputError(f"model returned {result.shape} for a tile, expected {expected}")
    return result[0]


Box = tuple[int, int, int, int]  # top, left, bottom, right


def tile_boxes(height: int, width: int, tile: int, context: int) -> list[tuple[Box, Box]]:
    """Per tile: its window (kept region plus ``context`` per side, clipped at the image) and kept region."""
    boxes = []
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            bottom, right = min(top + tile, height), min(left + tile, width)
            boxes.append(((max(top - context, 0), max(left - context, 0), min(bottom + context, height),
                           min(right + context, width)), (top, left, bottom, right)))
    return boxes


def _kept_centres(chw: np.ndarray, call: RunTileAt, scale: int, settings: TileSettings,
                  to_image: ToImage) -> np.ndarray:
    """Real-ESRGAN's tiling: each tile with its context, only the tile's own region kept."""
    _, padded_h, padded_w = chw.shape
    tile = settings.tile or max(padded_h, padded_w)
    output = np.empty((padded_h * scale, padded_w * scale, 3), dtype=np.uint8)
    for (ctx_top, ctx_left, ctx_bottom, ctx_right), (top, left, bottom, right) in tile_boxes(
            padded_h, padded_w, tile, settings.tile_pad):
        result = _run_checked(call, chw, ctx_top, ctx_left, ctx_bottom, ctx_right, scale)
        keep = result[:, (top - ctx_top) * scale:(bottom - ctx_top) * scale,
                      (left - ctx_left) * scale:(right - ctx_left) * scale]
        output[top * scale:bottom * scale, left * scale:right * scale] = to_image(keep)
    return output


def _exact(chw: np.ndarray, tiler: ExactTiler, scale: int, settings: TileSettings, to_image: ToImage) -> np.ndarray:
    """The runner's own exact tiling; its blocks go to uint8 as they come."""
    _, height, width = chw.shape
    output = np.empty((height * scale, width * scale, 3), dtype=np.uint8)
    batch = np.ascontiguousarray(chw[None])
    for top, left, block in tiler.run_exact(batch, settings.tile, settings.tile_pad):
        output[top:top + block.shape[2], left:left + block.shape[3]] = to_image(block[0])
    return output


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Evenly spaced starts of full windows covering ``length`` with steps of at most ``stride``
    (one window of the whole length when it fits)."""
    if window <= 0 or length <= window:
        return [0]
    count = math.ceil((length - window) / max(stride, 1)) + 1
    return [round(i * (length - window) / (count - 1)) for i in range(count)]


def _ramps(starts: list[int], window: int, length: int, scale: int) -> list[np.ndarray]:
    """Per window, its output-resolution weights along one axis, normalised so they sum to 1 everywhere:
    a linear ramp across the overlap with each neighbour, 1 elsewhere."""
    size = min(window, length)
    position = np.arange(size * scale, dtype=np.float64) + 0.5
    profiles = []
    for i, start in enumerate(starts):
        weight = np.ones(size * scale)
        if i > 0:
            overlap = (starts[i - 1] + size - start) * scale
            weight = np.minimum(weight, position / overlap)
        if i + 1 < len(starts):
            overlap = (start + size - starts[i + 1]) * scale
            weight = np.minimum(weight, (size * scale - position) / overlap)
        profiles.append(weight)
    total = np.zeros(length * scale)
    for start, weight in zip(starts, profiles):
        total[start * scale:start * scale + weight.size] += weight
    return [(weight / total[start * scale:start * scale + weight.size]).astype(np.float32)
            for start, weight in zip(starts, profiles)]


def _blended(chw: np.ndarray, call: RunTileAt, scale: int, settings: TileSettings, to_image: ToImage) -> np.ndarray:
    """Overlapping full windows, averaged with linear ramps; one band of window rows in float32."""
    _, height, width = chw.shape
    window = settings.tile + 2 * settings.tile_pad if settings.tile else max(height, width)
    rows, cols = window_starts(height, window, settings.tile), window_starts(width, window, settings.tile)
    row_weights, col_weights = _ramps(rows, window, height, scale), _ramps(cols, window, width, scale)
    band_h, win_w = min(window, height), min(window, width)
    output = np.empty((height * scale, width * scale, 3), dtype=np.uint8)
    band = np.zeros((3, band_h * scale, width * scale), np.float32)
    for i, top in enumerate(rows):
        for left, col_weight in zip(cols, col_weights):
            result = _run_checked(call, chw, top, left, top + band_h, left + win_w, scale)
            weight = row_weights[i][:, None] * col_weight[None, :]
            band[:, :, left * scale:(left + win_w) * scale] += result * weight
        done = (rows[i + 1] - top) if i + 1 < len(rows) else band_h  # rows no later window touches
        output[top * scale:(top + done) * scale] = to_image(band[:, :done * scale])
        band[:, :(band_h - done) * scale] = band[:, done * scale:].copy()
        band[:, (band_h - done) * scale:] = 0.0
    return output


def tile_count(height: int, width: int, settings: TileSettings) -> int:
    """How many model runs :func:`enhance_tiled` makes for an image of this size."""
    if not settings.tile:
        return 1
    if settings.blend:
        window = settings.tile + 2 * settings.tile_pad
        padded_h, padded_w = height + settings.pre_pad, width + settings.pre_pad
        return len(window_starts(padded_h, window, settings.tile)) * len(window_starts(padded_w, window, settings.tile))
    return math.ceil((height + settings.pre_pad) / settings.tile) * math.ceil((width + settings.pre_pad) / settings.tile)
