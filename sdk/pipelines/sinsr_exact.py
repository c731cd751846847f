"""SinSR's exact tiling of its VQ's high-resolution parts: tile graphs that share GroupNorm statistics.

A tile graph (``encoder_high`` / ``decoder_high``) takes ``x`` (a window), ``stats`` (N, norms, 32, 2: the
mean and variance of every GroupNorm) and ``mask`` (1, 1, h, w: 1 on the window's kept region) and returns
``y`` and ``sums`` (N, norms, 32, 3: count, sum and squared deviations over the kept region). Statistics
shared by all tiles make the tiled result match the untiled one up to float rounding.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from kvqe.runtimes.base import Runner
from kvqe.sdk.tiling import Box, tile_boxes

GROUPS = 32  # GroupNorm groups of every VQ norm


def combine_sums(parts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-tile (count, sum, squared deviations from the tile mean), each (N, groups, 3), -> the exact
    (mean, variance) over all tiles in float64 (Chan's parallel formula)."""
    stacked = np.stack(parts).astype(np.float64)
    count, total, m2 = stacked[..., 0], stacked[..., 1], stacked[..., 2]
    n = count.sum(0)
    mean = total.sum(0) / n
    local = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    var = (m2.sum(0) + (count * (local - mean) ** 2).sum(0)) / n
    return mean, var


def run_tile_graph(runner: Runner, x: np.ndarray, norms: int, factor: int, tile: int,
                   context: int) -> Iterator[tuple[Box, np.ndarray]]:
    """A tile graph over kept-centre tiles of ``x`` (N, C, H, W) with GroupNorm statistics shared by all
    tiles: ``norms`` statistics passes (pass k runs every tile with the exact statistics of norms 0..k-1
    and placeholders after, and keeps the kept-region sums of norm k), then the final pass, which yields
    each tile's kept box and kept output (``factor`` times the LR grid) as it comes. Working memory: one
    window at a time."""
    batch, _, height, width = x.shape
    boxes = tile_boxes(height, width, tile, context)
    stats = np.zeros((batch, norms, GROUPS, 2), np.float32)
    stats[..., 1] = 1.0

    def window(box: Box, kept: Box) -> tuple[np.ndarray, np.ndarray]:
        t0, l0, t1, l1 = box
        mask = np.zeros((1, 1, t1 - t0, l1 - l0), np.float32)
        mask[..., kept[0] - t0:kept[2] - t0, kept[1] - l0:kept[3] - l0] = 1.0
        out = runner.infer({"x": x[:, :, t0:t1, l0:l1], "stats": stats, "mask": mask})
        return out["y"], out["sums"]

    for k in range(norms):
        mean, var = combine_sums([window(box, kept)[1][:, k] for box, kept in boxes])
        stats[:, k, :, 0], stats[:, k, :, 1] = mean, var
    for box, kept in boxes:
        y, _ = window(box, kept)
        top, left = (kept[0] - box[0]) * factor, (kept[1] - box[1]) * factor
        yield kept, y[:, :, top:top + (kept[2] - kept[0]) * factor, left:left + (kept[3] - kept[1]) * factor]
