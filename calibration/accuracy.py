"""Accuracy comparators: what an artifact is judged on against the FP32 reference over a validation set.

Each task names its comparator (:mod:`kvqe.calibration.tasks`): SR compares the uint8 images the runtime
would produce (:class:`SrImages`), VQA the scores (:class:`VqaScores`, pooled per video when there are enough
videos).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kvqe.calibration.comparators import Comparison, ImageFidelity, ScoreAgreement
from kvqe.calibration.contract import SampleSet
from kvqe.runtimes.base import Runner
from kvqe.sdk.preprocess import postprocess_sr_output
from kvqe.sdk.sampling import pad_to_max, sampling_spec
from kvqe.specs import OutputSpec

MIN_GROUPS_FOR_VIDEO_LEVEL = 5  # fewer validation videos than this: correlations are taken over frames


@dataclass(frozen=True)
class SrImages:
    """SR: each sample's output as the uint8 image the runtime would write; PSNR/SSIM over the set."""

    samples: SampleSet = field(repr=False)
    output_spec: OutputSpec

    def read(self, runner: Runner, sample: np.ndarray) -> np.ndarray:
        return postprocess_sr_output(runner.run_single(sample)[0], self.samples.input_spec, self.output_spec)

    def each(self, candidate: np.ndarray, reference: np.ndarray) -> tuple[Comparison, ...]:
        return ()

    def overall(self, candidate: list[np.ndarray], reference: list[np.ndarray]) -> dict[str, Any]:
        return dict(ImageFidelity()(candidate, reference))


@dataclass(frozen=True)
class VqaScores:
    """VQA: each sample's frame score; agreement over videos (mean of the padded keyframe scores) when the
    set has enough of them, else over frames, saying which in ``unit``."""

    samples: SampleSet = field(repr=False)
    output_spec: OutputSpec

    def read(self, runner: Runner, sample: np.ndarray) -> float:
        return float(runner.run_single(sample).reshape(-1)[0])

    def each(self, candidate: float, reference: float) -> tuple[Comparison, ...]:
        return ()

    def overall(self, candidate: list[float], reference: list[float]) -> dict[str, Any]:
        slices = self.samples.group_slices()
        if len(slices) >= MIN_GROUPS_FOR_VIDEO_LEVEL:
            sampling = sampling_spec(self.samples.input_spec.sampling)

            def pooled(scores: list[float]) -> np.ndarray:
                return np.array([np.mean(pad_to_max(scores[s], sampling)) for s in slices])

            figures: dict[str, Any] = dict(ScoreAgreement()(pooled(candidate), pooled(reference)))
            figures["unit"] = f"{len(slices)} videos"
        else:
            figures = dict(ScoreAgreement()(np.array(candidate), np.array(reference)))
            figures["unit"] = f"{len(candidate)} frames (fewer than {MIN_GROUPS_FOR_VIDEO_LEVEL} videos)"
        return figures

