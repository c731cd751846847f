"""Super-resolution over tiles with Real-ESRGAN's semantics (``tile``, ``tile_pad``, ``pre_pad``).

Each tile is run with ``tile_pad`` pixels of context on every side (clipped at the image border) and
only its own region of the output is kept, so a tiled result matches the untiled one up to the
receptive field beyond ``tile_pad``. Tiles are converted to uint8 as they come, so working memory is
bounded by the tile size; only the uint8 output is image sized.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from kvqe.errors import BadInputError

RunTile = Callable[[np.ndarray], np.ndarray]  # 1x3xhxw float32 -> 1x3x(h*s)x(w*s)
ToImage = Callable[[np.ndarray], np.ndarray]  # 3xHxW float32 -> HxWx3 uint8


@dataclass(frozen=True)
class TileSettings:
    """``tile``: tile edge in input pixels (0 = whole image); ``tile_pad``: context per side;
    ``pre_pad``: reflect padding added at the bottom/right before and cropped after."""

    tile: int = 0
    tile_pad: int = 10
    pre_pad: int = 0

    def __post_init__(self) -> None:
        if self.tile < 0 or self.tile_pad < 0 or self.pre_pad < 0:
            raise BadInputError(f"tile settings must be non-negative, got {self}")


def enhance_tiled(chw: np.ndarray, run: RunTile, scale: int, settings: TileSettings, to_image: ToImage) -> np.ndarray:
    """Upscale a 3xHxW float32 image by ``scale`` tile by tile; returns the HxWx3 uint8 result."""
    _, height, width = chw.shape
    pre = settings.pre_pad
    if pre:
        if pre >= height or pre >= width:
            raise BadInputError(f"pre_pad {pre} must be smaller than the image ({height}x{width})")
        chw = np.pad(chw, ((0, 0), (0, pre), (0, pre)), mode="reflect")
    _, padded_h, padded_w = chw.shape
    tile = settings.tile or max(padded_h, padded_w)
    output = np.empty((padded_h * scale, padded_w * scale, 3), dtype=np.uint8)
    for top in range(0, padded_h, tile):
        for left in range(0, padded_w, tile):
            bottom, right = min(top + tile, padded_h), min(left + tile, padded_w)
            ctx_top, ctx_left = max(top - settings.tile_pad, 0), max(left - settings.tile_pad, 0)
            ctx_bottom = min(bottom + settings.tile_pad, padded_h)
            ctx_right = min(right + settings.tile_pad, padded_w)
            patch = np.ascontiguousarray(chw[None, :, ctx_top:ctx_bottom, ctx_left:ctx_right])
            result = run(patch)
            expected = (1, 3, (ctx_bottom - ctx_top) * scale, (ctx_right - ctx_left) * scale)
            if result.shape != expected:
                raise BadInputError(f"model returned {result.shape} for a tile, expected {expected}")
            keep = result[0, :, (top - ctx_top) * scale:(bottom - ctx_top) * scale,
                          (left - ctx_left) * scale:(right - ctx_left) * scale]
            output[top * scale:bottom * scale, left * scale:right * scale] = to_image(keep)
    return output[: (padded_h - pre) * scale, : (padded_w - pre) * scale]


def tile_count(height: int, width: int, settings: TileSettings) -> int:
    """How many model runs :func:`enhance_tiled` makes for an image of this size."""
    if not settings.tile:
        return 1
    return math.ceil((height + settings.pre_pad) / settings.tile) * math.ceil((width + settings.pre_pad) / settings.tile)
