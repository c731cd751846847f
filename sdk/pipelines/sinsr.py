"""SinSR's pipeline kinds, registered with :mod:`kvqe.sdk.pipelines.registry` (runtime side: numpy, no torch).

``sinsr`` (:class:`SinSRRunner`): SinSR's one step, ``encoder -> denoiser -> decoder`` with the glue of
:mod:`kvqe.sdk.pipelines.sinsr_glue` (reflect padding to multiples of 64, the seeded noise, the crop and
clamp). LR (N, 3, h, w) in [0, 1] -> SR (N, 3, 4h, 4w) in [0, 1].

``sinsr+realesrgan`` (:class:`RestoreThenSinSR`): Real-ESRGAN x4 (stage ``restore``), clamped to [0, 1]
and area-resized back to the LR size (a 4x4 box average, which is ``cv2.INTER_AREA`` at an integer
factor): a *restored* LR, denoised and deblocked; then SinSR x4; then area-resized to ``out_scale``
(4: none; 2: 2x2 box; 1: 4x4 box, i.e. enhancement in place at the input size, as the KwaiSR challenge
did for in-the-wild images).

The noise is *anchored to image coordinates* (:func:`~kvqe.sdk.pipelines.sinsr_glue.anchored_noise`) so
that a tile sees the noise the untiled image has at the same place: :meth:`StagedRunner.run_at` takes the
tile's origin; ``run_single`` / ``infer`` are origin (0, 0). With the split VQ graphs a runner also tiles
exactly (:meth:`SinSRRunner.run_exact`, the :class:`kvqe.sdk.tiling.ExactTiler` capability).
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

import kvqe.sdk.pipelines.sinsr_glue as glue
from kvqe.errors import BadInputError, BundleError
from kvqe.runtimes.base import Runner, TensorSpec
from kvqe.sdk.pipelines.driver import StagedRunner, Steps
from kvqe.sdk.pipelines.registry import Describe, PipelineKind, register
from kvqe.sdk.pipelines.sinsr_exact import run_tile_graph
from kvqe.sdk.pipelines.sinsr_glue import (
    EXACT_STAGES,
    KINDS,
    OUT_SCALES,
    SINSR_STAGES,
    TILE_STAGES,
    anchored_noise,
    box_downscale,
)
from kvqe.sdk.pipelines.sinsr_manifest import describe
from kvqe.sdk.tiling import tile_boxes

__all__ = ["EXACT_STAGES", "KINDS", "OUT_SCALES", "SINSR_STAGES", "TILE_STAGES", "RestoreThenSinSR", "SinSRRunner",
           "anchored_noise", "box_downscale", "build", "describe", "restored_lr", "sinsr_steps"]


def sinsr_steps(lr: np.ndarray, origin: tuple[int, int], seed: int, out_scale: int = glue.SCALE) -> Steps:
    """SinSR's one step: ``prepare`` -> encoder -> noise + ``denoiser_input`` -> denoiser -> decoder ->
    ``finish`` (crop, clamp), then the area resize to ``out_scale``."""
    height, width = lr.shape[2:]
    y0 = glue.prepare(lr)
    z_y = yield "encoder", y0
    eps = anchored_noise(tuple(z_y.shape), origin, seed)
    x0 = yield "denoiser", glue.denoiser_input(z_y, y0, eps)
    dec = yield "decoder", x0
    return box_downscale(glue.finish(dec, height, width), glue.SCALE // out_scale)


def restore_then_sinsr_steps(lr: np.ndarray, origin: tuple[int, int], seed: int, out_scale: int) -> Steps:
    """Real-ESRGAN x4 -> clamp to [0, 1] -> 4x4 box average back to the LR size -> SinSR x4 -> area resize
    to ``out_scale``."""
    restored = yield "restore", lr
    clean = restored_lr(restored, lr.shape)
    return (yield from sinsr_steps(clean, origin, seed, out_scale))


def restored_lr(restored: np.ndarray, lr_shape: tuple[int, ...]) -> np.ndarray:
    """The restore stage's x4 output for an LR of ``lr_shape``, clamped to [0, 1] and 4x4 box-averaged back
    to the LR size."""
    expected = (lr_shape[0], 3, lr_shape[2] * glue.SCALE, lr_shape[3] * glue.SCALE)
    if restored.shape != expected:
        raise BadInputError(f"the restore stage returned {restored.shape}, expected {expected} (a x4 model)")
    return box_downscale(np.clip(restored, 0.0, 1.0), glue.SCALE)


class SinSRRunner(StagedRunner):
    """SinSR x4 from its three stage runners; ``out_scale`` < 4 area-resizes the result (default: none).

    With ``exact`` (runners of :data:`EXACT_STAGES`) and ``norms`` (GroupNorm count of each tile graph),
    :meth:`run_exact` tiles the whole step so that it matches the untiled run up to float rounding: the
    VQ's high-resolution parts run on kept-centre tiles with statistics shared across tiles
    (:func:`~kvqe.sdk.pipelines.sinsr_exact.run_tile_graph`), the LR-sized parts (VQ mid blocks with the
    global attention, the UNet) on the whole latent. :func:`kvqe.sdk.tiling.enhance_tiled` uses it whenever
    tiles are asked for.

    Threads: safe to share when its stage runners are. No per-call state: the stages, seed and scale are
    fixed at construction, the noise comes from a fresh generator per call and block, and exact tiling's
    GroupNorm statistics live in the call.
    """

    input_spec = TensorSpec("lr", np.dtype(np.float32), (None, 3, None, None))
    output_spec = TensorSpec("sr", np.dtype(np.float32), (None, 3, None, None))

    def __init__(self, encoder: Runner, denoiser: Runner, decoder: Runner, seed: int = glue.DEFAULT_SEED,
                 out_scale: int = glue.SCALE, exact: Mapping[str, Runner] | None = None,
                 norms: Mapping[str, int] | None = None) -> None:
        stages = {"encoder": encoder, "denoiser": denoiser, "decoder": decoder}
        if exact is not None:
            missing = [s for s in EXACT_STAGES if s not in exact]
            if missing or norms is None or any(s not in norms for s in TILE_STAGES):
                raise BundleError(f"exact tiling needs runners of {', '.join(EXACT_STAGES)} and the norm counts "
                                  f"of {', '.join(TILE_STAGES)}")
            stages.update({s: exact[s] for s in EXACT_STAGES})
        super().__init__(stages)
        self.seed = seed
        self.scale = glue.check_out_scale(out_scale)
        self.norms = {s: int(norms[s]) for s in TILE_STAGES} if exact is not None and norms is not None else None

    @property
    def tiles_exactly(self) -> bool:
        """True when :meth:`run_exact` is available (the bundle has the split VQ graphs)."""
        return self.norms is not None

    def steps(self, batch: np.ndarray, origin: tuple[int, int]) -> Steps:
        return sinsr_steps(batch, origin, self.seed, self.scale)

    def run_exact(self, batch: np.ndarray, tile: int, context: int) -> Iterator[tuple[int, int, np.ndarray]]:
        """The whole image's SR, tile by tile: yields ``(top, left, block)``, blocks of the final output
        (after crop, clamp and the ``out_scale`` resize) at their place, ``top``/``left`` in output pixels.

        ``tile``: kept size on the LR grid; ``context``: LR pixels of context per side (exact from 32, the
        decoder's reach; the encoder's is 16)."""
        if self.norms is None:
            raise BadInputError("this SinSR bundle has no split VQ graphs; it cannot tile exactly")
        if tile <= 0 or context < 0:
            raise BadInputError(f"exact tiling needs tile > 0 and context >= 0, got {tile}, {context}")
        lr = self._checked({self.input_spec.name: batch})[self.input_spec.name]
        return self._sinsr_exact(self._exact_input(lr, tile, context), tile, context)

    def _exact_input(self, lr: np.ndarray, tile: int, context: int) -> np.ndarray:
        """The LR that SinSR's exact tiling takes (here the input itself)."""
        return lr

    def _sinsr_exact(self, lr: np.ndarray, tile: int, context: int) -> Iterator[tuple[int, int, np.ndarray]]:
        assert self.norms is not None
        height, width = lr.shape[2:]
        y0 = glue.prepare(lr)
        features: np.ndarray | None = None
        for kept, y in run_tile_graph(self.stages["encoder_high"], y0, self.norms["encoder_high"], 1, tile, context):
            if features is None:
                features = np.empty((*y.shape[:2], *y0.shape[2:]), np.float32)
            features[:, :, kept[0]:kept[2], kept[1]:kept[3]] = y
        assert features is not None
        z_y = self.stages["encoder_mid"].run_single(features)
        del features
        eps = anchored_noise(tuple(z_y.shape), (0, 0), self.seed)
        x0 = self.stages["denoiser"].run_single(glue.denoiser_input(z_y, y0, eps))
        latent = self.stages["decoder_mid"].run_single(x0)
        reduce = glue.SCALE // self.scale
        for kept, dec in run_tile_graph(self.stages["decoder_high"], latent, self.norms["decoder_high"], glue.SCALE,
                                        tile, context):
            rows, cols = min(kept[2], height) - kept[0], min(kept[3], width) - kept[1]
            if rows > 0 and cols > 0:  # crop at the image's bottom/right, clamp, to [0, 1], area resize
                yield kept[0] * self.scale, kept[1] * self.scale, box_downscale(glue.finish(dec, rows, cols), reduce)

    def run_exact_whole(self, batch: np.ndarray, tile: int, context: int) -> np.ndarray:
        """:meth:`run_exact` assembled into one (N, 3, H·s, W·s) array (tests, small images)."""
        height, width = batch.shape[2:]
        out = np.empty((batch.shape[0], 3, height * self.scale, width * self.scale), np.float32)
        for top, left, block in self.run_exact(batch, tile, context):
            out[:, :, top:top + block.shape[2], left:left + block.shape[3]] = block
        return out


class RestoreThenSinSR(SinSRRunner):
    """Real-ESRGAN x4 restoration area-resized back to the LR size, then SinSR x4, then ``out_scale``.

    With the split VQ graphs (``exact``, ``norms``) :meth:`run_exact` tiles the whole pipeline: the restore
    stage on kept-centre tiles with ``context`` LR pixels per side (exact for realesr-animevideov3, whose
    receptive field reaches 18 LR pixels; a model reaching further, such as x4plus, matches to its effective
    reach), assembled into the restored LR (LR-sized, 3 channels), which SinSR then tiles exactly."""

    def __init__(self, restore: Runner, encoder: Runner, denoiser: Runner, decoder: Runner,
                 seed: int = glue.DEFAULT_SEED, out_scale: int = glue.SCALE, exact: Mapping[str, Runner] | None = None,
                 norms: Mapping[str, int] | None = None) -> None:
        super().__init__(encoder, denoiser, decoder, seed, out_scale, exact, norms)
        self.stages = {"restore": restore, **self.stages}

    def steps(self, batch: np.ndarray, origin: tuple[int, int]) -> Steps:
        return restore_then_sinsr_steps(batch, origin, self.seed, self.scale)

    def _exact_input(self, lr: np.ndarray, tile: int, context: int) -> np.ndarray:
        """The restored LR, assembled from the restore stage run on kept-centre tiles."""
        clean = np.empty_like(lr)
        height, width = lr.shape[2:]
        for (t0, l0, t1, l1), (top, left, bottom, right) in tile_boxes(height, width, tile, context):
            window = lr[:, :, t0:t1, l0:l1]
            restored = restored_lr(self.stages["restore"].run_single(np.ascontiguousarray(window)), window.shape)
            clean[:, :, top:bottom, left:right] = restored[:, :, top - t0:bottom - t0, left - l0:right - l0]
        return clean


def build(pipeline: Mapping[str, Any], runners: Mapping[str, Runner]) -> SinSRRunner:
    """The runner a SinSR manifest ``pipeline`` entry describes, over one runner per stage."""
    kind = str(pipeline.get("kind"))
    if kind not in KINDS:
        raise BundleError(f"unknown pipeline kind {kind!r}; SinSR runs {', '.join(KINDS)}")
    exact_entry = pipeline.get("exact_tiling")
    needed = KINDS[kind] + (EXACT_STAGES if isinstance(exact_entry, Mapping) else ())
    missing = [stage for stage in needed if stage not in runners]
    if missing:
        raise BundleError(f"pipeline {kind}: no runner for stage(s) {', '.join(missing)}")
    seed, out_scale = int(pipeline.get("seed", glue.DEFAULT_SEED)), int(pipeline.get("out_scale", glue.SCALE))
    sinsr = (runners["encoder"], runners["denoiser"], runners["decoder"])
    exact = {s: runners[s] for s in EXACT_STAGES} if isinstance(exact_entry, Mapping) else None
    norms = exact_entry.get("norms") if isinstance(exact_entry, Mapping) else None
    if kind == "sinsr":
        return SinSRRunner(*sinsr, seed=seed, out_scale=out_scale, exact=exact, norms=norms)
    return RestoreThenSinSR(runners["restore"], *sinsr, seed=seed, out_scale=out_scale, exact=exact, norms=norms)


def _describer(kind: str) -> Describe:
    def describe_kind(**facts: Any) -> dict[str, Any]:
        return describe(kind, **facts)
    return describe_kind


for _kind, _stages in KINDS.items():
    register(PipelineKind(_kind, _stages, build, _describer(_kind)))
