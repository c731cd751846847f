"""SR tiling with Real-ESRGAN semantics: tiled equals untiled, memory bounded by the tile."""
from __future__ import annotations

import numpy as np
import pytest
from support import psnr

import kvqe
from kvqe.errors import BadInputError
from kvqe.sdk.tiling import SR_MEMORY_BUDGET_MB, TileSettings, budget_tile, enhance_tiled, tile_count


@pytest.fixture(scope="module")
def sr() -> kvqe.sdk.model.Model:
    return kvqe.load("sr")


@pytest.mark.parametrize(("tile", "pre_pad"), [(64, 0), (48, 4)])
def test_tiled_matches_untiled_on_a_real_photo(sr, astronaut_bgr, tile: int, pre_pad: int) -> None:
    image = np.ascontiguousarray(astronaut_bgr[150:250, 180:310])  # 100x130: tiles do not divide it
    whole = sr.enhance(image, tile=0, pre_pad=pre_pad)
    tiled = sr.enhance(image, tile=tile, tile_pad=10, pre_pad=pre_pad)
    assert tiled.shape == whole.shape == (400, 520, 3)
    assert psnr(tiled, whole) >= 45.0


def test_each_model_run_sees_at_most_tile_plus_context(sr, coffee_bgr) -> None:
    image = np.ascontiguousarray(coffee_bgr[:90, :150])
    seen: list[tuple[int, ...]] = []

    def run(patch: np.ndarray) -> np.ndarray:
        seen.append(patch.shape)
        return sr.runner.run_single(patch)

    settings = TileSettings(tile=32, tile_pad=8)
    chw = np.ascontiguousarray(image[:, :, ::-1].transpose(2, 0, 1), dtype=np.float32) / 255
    out = enhance_tiled(chw, run, 4, settings, lambda x: np.zeros((x.shape[1], x.shape[2], 3), np.uint8))
    assert out.shape == (360, 600, 3)
    assert len(seen) == tile_count(90, 150, settings) == 3 * 5
    assert max(s[2] for s in seen) <= 32 + 2 * 8 and max(s[3] for s in seen) <= 32 + 2 * 8


def test_bad_tile_settings_are_refused(sr, astronaut_bgr) -> None:
    with pytest.raises(BadInputError):
        TileSettings(tile=-1)
    with pytest.raises(BadInputError, match="pre_pad"):
        sr.enhance(np.ascontiguousarray(astronaut_bgr[:8, :8]), pre_pad=8)


def test_untiled_bundles_are_tiled_to_a_memory_budget(sr, coffee_bgr) -> None:
    default = sr.tile_settings()
    assert default.tile == budget_tile(SR_MEMORY_BUDGET_MB, 4, 10) == 320
    assert sr.tile_settings(memory_budget_mb=32).tile == 96 and sr.tile_settings(tile=0).tile == 0
    image = np.ascontiguousarray(coffee_bgr[:200, :300])
    seen: list[tuple[int, ...]] = []
    run = sr.runner.run_single

    def spy(patch: np.ndarray) -> np.ndarray:
        seen.append(patch.shape)
        return run(patch)

    sr.runner.run_single = spy
    try:
        tiled = sr.enhance(image, memory_budget_mb=32)
    finally:
        del sr.runner.run_single
    assert len(seen) == tile_count(200, 300, TileSettings(96, 10)) == 3 * 4
    assert max(s[2] for s in seen) <= 96 + 20 and max(s[3] for s in seen) <= 96 + 20
    assert psnr(tiled, sr.enhance(image, tile=0)) >= 45.0
    with pytest.raises(BadInputError, match="memory_budget_mb must be a positive number"):
        sr.enhance(image, memory_budget_mb=0)
