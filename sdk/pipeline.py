"""Staged SR pipelines run as ONE :class:`~kvqe.runtimes.base.Runner` (runtime side: numpy glue, no torch).

A pipeline bundle holds one graph per stage (see :mod:`kvqe.bundle`); the loader makes a runner per stage
and :func:`compose` joins them, so ``Model.enhance()``, ``enhance_video()`` and the tiler see one x``scale``
model. Two kinds:

``sinsr`` (:class:`SinSRRunner`): SinSR's one step, ``encoder -> denoiser -> decoder`` with the glue of
:mod:`kvqe.sdk.sinsr_glue` (reflect padding to multiples of 64, the seeded noise, the crop and clamp).
LR (N, 3, h, w) in [0, 1] -> SR (N, 3, 4h, 4w) in [0, 1].

``sinsr+realesrgan`` (:class:`RestoreThenSinSR`): Real-ESRGAN x4 (stage ``restore``), clamped to [0, 1]
and area-resized back to the LR size (a 4x4 box average, which is ``cv2.INTER_AREA`` at an integer
factor): a *restored* LR, denoised and deblocked; then SinSR x4; then area-resized to ``out_scale``
(4: none; 2: 2x2 box; 1: 4x4 box, i.e. enhancement in place at the input size, as the KwaiSR challenge
did for in-the-wild images).

The noise is *anchored to image coordinates* so that a tile sees the noise the untiled image has at the
same place: latent pixel (y, x) (latent = LR grid) takes its value from the 64x64 block (y // 64, x // 64),
drawn as ``numpy.random.default_rng([seed, y // 64, x // 64]).standard_normal((3, 64, 64))`` in float64 and
cast to float32, the same for every image of a batch. :meth:`PipelineRunner.run_at` takes the tile's
origin; :meth:`~kvqe.runtimes.base.Runner.run` is origin (0, 0).
"""
from __future__ import annotations

import abc
from collections.abc import Callable, Generator, Iterator, Mapping
from typing import Any

import numpy as np

from kvqe.errors import BadInputError, BundleError
from kvqe.runtimes.base import Runner, TensorSpec
from kvqe.sdk import sinsr_glue as glue
from kvqe.sdk.tiling import Box, tile_boxes

SINSR_STAGES = ("encoder", "denoiser", "decoder")
# the VQ split by resolution for exact tiling (optional: bundles without them tile by blended windows)
TILE_STAGES = ("encoder_high", "decoder_high")  # multi-input tile graphs (x, stats, mask) -> (y, sums)
EXACT_STAGES = ("encoder_high", "encoder_mid", "decoder_mid", "decoder_high")
KINDS: dict[str, tuple[str, ...]] = {"sinsr": SINSR_STAGES, "sinsr+realesrgan": ("restore", *SINSR_STAGES)}
GROUPS = 32  # GroupNorm groups of every VQ norm
NOISE_BLOCK = 64
OUT_SCALES = (1, 2, 4)  # divisors of SinSR's x4: the final area resize is an exact box average

# a pipeline as a coroutine: yields (stage, stage input), receives the stage output, returns the result
Steps = Generator[tuple[str, np.ndarray], np.ndarray, np.ndarray]


def anchored_noise(shape: tuple[int, ...], origin: tuple[int, int] = (0, 0),
                   seed: int = glue.DEFAULT_SEED) -> np.ndarray:
    """Noise for the latent region of ``shape`` (N, C, h, w) whose top-left sits at ``origin`` (y, x) of the
    image's latent grid: each 64x64 block of the grid is ``default_rng([seed, block_row, block_col])``."""
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


def drive(steps: Steps, run: Callable[[str, np.ndarray], np.ndarray]) -> np.ndarray:
    """Run a pipeline coroutine to its end, computing each stage with ``run(stage, input)``."""
    request = next(steps)
    while True:
        try:
            request = steps.send(run(*request))
        except StopIteration as done:
            return np.asarray(done.value)


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
    """A tile graph (``encoder_high`` / ``decoder_high``) over kept-centre tiles of ``x`` (N, C, H, W) with
    GroupNorm statistics shared by all tiles: ``norms`` statistics passes (pass k runs every tile with the
    exact statistics of norms 0..k-1 and placeholders after, and keeps the kept-region sums of norm k),
    then the final pass, which yields each tile's kept box and kept output (``factor`` times the LR grid)
    as it comes. Working memory: one window at a time."""
    batch, _, height, width = x.shape
    boxes = tile_boxes(height, width, tile, context)
    stats = np.zeros((batch, norms, GROUPS, 2), np.float32)
    stats[..., 1] = 1.0

    def window(box: Box, kept: Box) -> tuple[np.ndarray, np.ndarray]:
        t0, l0, t1, l1 = box
        mask = np.zeros((1, 1, t1 - t0, l1 - l0), np.float32)
        mask[..., kept[0] - t0:kept[2] - t0, kept[1] - l0:kept[3] - l0] = 1.0
        y, sums = runner.run_many({"x": x[:, :, t0:t1, l0:l1], "stats": stats, "mask": mask})
        return y, sums

    for k in range(norms):
        mean, var = combine_sums([window(box, kept)[1][:, k] for box, kept in boxes])
        stats[:, k, :, 0], stats[:, k, :, 1] = mean, var
    for box, kept in boxes:
        y, _ = window(box, kept)
        top, left = (kept[0] - box[0]) * factor, (kept[1] - box[1]) * factor
        yield kept, y[:, :, top:top + (kept[2] - kept[0]) * factor, left:left + (kept[3] - kept[1]) * factor]


def _check_out_scale(out_scale: int) -> int:
    if out_scale not in OUT_SCALES:
        raise BadInputError(f"out_scale must be one of {', '.join(map(str, OUT_SCALES))}, got {out_scale}")
    return out_scale


class PipelineRunner(Runner):
    """Stage runners composed into one x``scale`` SR runner (1x3xhxw RGB in [0, 1] -> [0, 1]).

    Threads: safe to share when its stage runners are (every kvqe backend's is). The pipeline keeps no
    per-call state: the stages, seed and scale are fixed at construction, each call drives its own
    :data:`Steps` generator, the noise comes from a fresh generator per call and block
    (:func:`anchored_noise`), and exact tiling's GroupNorm statistics live in the call
    (:func:`run_tile_graph`).
    """

    name = "pipeline"

    def __init__(self, stages: Mapping[str, Runner], seed: int, out_scale: int) -> None:
        super().__init__()
        self.stages = dict(stages)
        self.seed = seed
        self.scale = _check_out_scale(out_scale)

    @abc.abstractmethod
    def steps(self, lr: np.ndarray, origin: tuple[int, int]) -> Steps:
        """The pipeline for one LR batch whose top-left sits at ``origin`` in the image."""

    def run_at(self, batch: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
        """:meth:`run` for a tile whose top-left is at ``origin`` (y, x) of the image (anchors the noise)."""
        return self._run_at(self._checked(batch), origin)

    def stage_input(self, batch: np.ndarray, stage: str, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
        """What ``stage`` receives for ``batch``: runs the stages before it (calibration of inner stages)."""
        if stage not in self.stages:
            raise BadInputError(f"no stage {stage!r} in this pipeline ({', '.join(self.stages)})")
        steps = self.steps(self._checked(batch), origin)
        request = next(steps)
        while request[0] != stage:
            request = steps.send(self.stages[request[0]].run(request[1]))
        steps.close()
        return request[1]

    @property
    def executed_precision(self) -> str | None:
        """What the stage runners report having executed (OpenVINO), joined when they differ."""
        values = sorted({str(v) for r in self.stages.values()
                         if (v := getattr(r, "executed_precision", None)) is not None})
        return ",".join(values) if values else None

    def _run_at(self, batch: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
        return drive(self.steps(batch, origin), lambda stage, x: self.stages[stage].run(x))

    def _load(self) -> None:
        for runner in self.stages.values():
            runner.load()

    def _input_metadata(self) -> TensorSpec:
        return TensorSpec("lr", np.dtype(np.float32), (None, 3, None, None))

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self._run_at(batch, (0, 0))

    def _close(self) -> None:
        for runner in self.stages.values():
            runner.close()


class SinSRRunner(PipelineRunner):
    """SinSR x4 from its three stage runners; ``out_scale`` < 4 area-resizes the result (default: none).

    With ``exact`` (runners of :data:`EXACT_STAGES`) and ``norms`` (GroupNorm count of each tile graph),
    :meth:`run_exact` tiles the whole step so that it matches the untiled :meth:`run` up to float rounding:
    the VQ's high-resolution parts run on kept-centre tiles with statistics shared across tiles
    (:func:`run_tile_graph`), the LR-sized parts (VQ mid blocks with the global attention, the UNet) on the
    whole latent. :func:`kvqe.sdk.tiling.enhance_tiled` uses it whenever tiles are asked for.
    """

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
        super().__init__(stages, seed, out_scale)
        self.norms = {s: int(norms[s]) for s in TILE_STAGES} if exact is not None and norms is not None else None

    @property
    def tiles_exactly(self) -> bool:
        """True when :meth:`run_exact` is available (the bundle has the split VQ graphs)."""
        return self.norms is not None

    def steps(self, lr: np.ndarray, origin: tuple[int, int]) -> Steps:
        return sinsr_steps(lr, origin, self.seed, self.scale)

    def run_exact(self, batch: np.ndarray, tile: int, context: int) -> Iterator[tuple[int, int, np.ndarray]]:
        """The whole image's SR, tile by tile: yields ``(top, left, block)``, blocks of the final output
        (after crop, clamp and the ``out_scale`` resize) at their place, ``top``/``left`` in output pixels.

        ``tile``: kept size on the LR grid; ``context``: LR pixels of context per side (exact from 32, the
        decoder's reach; the encoder's is 16)."""
        if self.norms is None:
            raise BadInputError("this SinSR bundle has no split VQ graphs; it cannot tile exactly")
        if tile <= 0 or context < 0:
            raise BadInputError(f"exact tiling needs tile > 0 and context >= 0, got {tile}, {context}")
        return self._sinsr_exact(self._exact_input(self._checked(batch), tile, context), tile, context)

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
        z_y = self.stages["encoder_mid"].run(features)
        del features
        eps = anchored_noise(tuple(z_y.shape), (0, 0), self.seed)
        x0 = self.stages["denoiser"].run(glue.denoiser_input(z_y, y0, eps))
        latent = self.stages["decoder_mid"].run(x0)
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

    def steps(self, lr: np.ndarray, origin: tuple[int, int]) -> Steps:
        return restore_then_sinsr_steps(lr, origin, self.seed, self.scale)

    def _exact_input(self, lr: np.ndarray, tile: int, context: int) -> np.ndarray:
        """The restored LR, assembled from the restore stage run on kept-centre tiles."""
        clean = np.empty_like(lr)
        height, width = lr.shape[2:]
        for (t0, l0, t1, l1), (top, left, bottom, right) in tile_boxes(height, width, tile, context):
            window = lr[:, :, t0:t1, l0:l1]
            restored = restored_lr(self.stages["restore"].run(np.ascontiguousarray(window)), window.shape)
            clean[:, :, top:bottom, left:right] = restored[:, :, top - t0:bottom - t0, left - l0:right - l0]
        return clean


def compose(pipeline: Mapping[str, Any], runners: Mapping[str, Runner]) -> PipelineRunner:
    """The runner a manifest ``pipeline`` entry describes, over one runner per stage."""
    kind = pipeline.get("kind")
    if kind not in KINDS:
        raise BundleError(f"unknown pipeline kind {kind!r}; this kvqe runs {', '.join(KINDS)}")
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


def describe(kind: str, *, out_scale: int = glue.SCALE, seed: int = glue.DEFAULT_SEED,
             precisions: Mapping[str, Mapping[str, str]] | None = None,
             exact_tiling: Mapping[str, Any] | None = None, **facts: Any) -> dict[str, Any]:
    """The manifest ``pipeline`` entry: what :func:`compose` reads, and the glue documented for readers.

    ``exact_tiling``: ``{"norms": {tile stage: GroupNorm count}, ...}``; the entry then declares
    :data:`EXACT_STAGES` after the pipeline's stages and :func:`compose` gives the runner exact tiles."""
    if kind not in KINDS:
        raise BadInputError(f"unknown pipeline kind {kind!r}; choose {', '.join(KINDS)}")
    _check_out_scale(out_scale)
    glue_steps = [
        "y0 = (lr - 0.5) / 0.5, reflect-padded at the bottom/right to multiples of 64 (encoder input)",
        "encoder: bicubic x4 (PyTorch, a=-0.75, unclamped) then the VQ-f4 encoder -> z_y (LR-sized latent)",
        (f"denoiser input: cat[(z_y + {float(glue.NOISE_SCALE):.8g} * eps) / {float(glue.INPUT_SCALE):.8g}, y0]"
         f" (t = {glue.TIMESTEP} baked into the graph)"),
        "decoder: vector-quantize x0, decode -> x4; crop to 4h x 4w, clamp to [-1, 1], * 0.5 + 0.5",
    ]
    resizing = [] if out_scale == glue.SCALE else [
        f"the x4 SinSR result is area-resized (box average {glue.SCALE // out_scale}x{glue.SCALE // out_scale}) "
        f"to x{out_scale}" + (" (the input size: enhancement in place)" if out_scale == 1 else "")]
    if kind == "sinsr+realesrgan":
        glue_steps.insert(0, "restore: Real-ESRGAN x4 on the LR, clamped to [0, 1], area-resized back to the LR "
                             "size (4x4 box average = cv2.INTER_AREA): the restored LR that SinSR takes")
    entry: dict[str, Any] = {
        "kind": kind, "stages": list(KINDS[kind]), "out_scale": out_scale, "seed": seed,
        "noise": {"distribution": "standard normal, float64 draws cast to float32",
                  "anchoring": f"latent pixel (y, x) comes from the {NOISE_BLOCK}x{NOISE_BLOCK} block "
                               f"(y // {NOISE_BLOCK}, x // {NOISE_BLOCK}) of the image, "
                               "numpy.random.default_rng([seed, y // 64, x // 64]).standard_normal((3, 64, 64)); "
                               "tiles see the noise the whole image has at their place"},
        "constants": {"scale": glue.SCALE, "multiple_of": glue.MULTIPLE, "timestep": glue.TIMESTEP,
                      "noise_scale": float(glue.NOISE_SCALE), "input_scale": float(glue.INPUT_SCALE)},
        "glue": glue_steps, "resizing": resizing,
        "precisions": {p: dict(m) for p, m in (precisions or {}).items()},
    }
    if exact_tiling is not None:
        entry["stages"] += list(EXACT_STAGES)
        entry["exact_tiling"] = {
            **dict(exact_tiling),
            "design": ("tiles (kept size and context per side from the tile settings): encoder_high and "
                       "decoder_high on kept-centre windows, GroupNorm statistics shared by all tiles, gathered "
                       "one norm per pass from the kept-region sums (count, sum, squared deviations; Chan's "
                       "formula in float64); encoder_mid, denoiser and decoder_mid on the whole latent. Exact "
                       "with 32 LR pixels of context. Untiled runs use encoder, denoiser, decoder."
                       + (" The restore stage runs first on kept-centre tiles with the same context; their "
                          "restored LR is assembled whole (LR-sized) for SinSR." if kind == "sinsr+realesrgan"
                          else "")),
            "tile_graph_io": {"inputs": ["x", "stats (N, norms, 32, 2): mean, var", "mask (1, 1, h, w): kept=1"],
                              "outputs": ["y", "sums (N, norms, 32, 3): count, sum, squared deviations"]}}
    entry.update(facts)
    return entry
