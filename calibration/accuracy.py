"""Run an artifact and the FP32 reference over a validation set and compare them (VQA scores, SR images)."""
from __future__ import annotations

from typing import Any

import numpy as np

from kvqe.calibration.comparators import ImageFidelity, ScoreAgreement
from kvqe.calibration.contract import SampleSet
from kvqe.runtimes.base import Runner
from kvqe.sdk.preprocess import postprocess_sr_output
from kvqe.sdk.sampling import pad_to_max

MIN_GROUPS_FOR_VIDEO_LEVEL = 5  # fewer validation videos than this: correlations are taken over frames


def outputs(runner: Runner, samples: SampleSet, output_spec: dict[str, Any]) -> list[Any]:
    """Per sample: a frame score (VQA) or the uint8 image (SR), as the runtime would produce them."""
    results: list[Any] = []
    for batch in samples.inputs():
        produced = runner.run_single(batch)
        if "scale" in output_spec:
            results.append(postprocess_sr_output(produced[0], samples.input_spec, output_spec))
        else:
            results.append(float(produced.reshape(-1)[0]))
    return results


def compare(candidate: list[Any], reference: list[Any], samples: SampleSet) -> dict[str, Any]:
    """Agreement figures of an artifact's outputs with the reference's over the same samples."""
    if "sampling" not in samples.input_spec:
        return ImageFidelity()(candidate, reference)
    slices = samples.group_slices()
    if len(slices) >= MIN_GROUPS_FOR_VIDEO_LEVEL:
        sampling = samples.input_spec["sampling"]

        def pooled(scores: list[float]) -> np.ndarray:
            return np.array([np.mean(pad_to_max(scores[s], sampling)) for s in slices])

        figures: dict[str, Any] = dict(ScoreAgreement()(pooled(candidate), pooled(reference)))
        figures["unit"] = f"{len(slices)} videos"
    else:
        figures = dict(ScoreAgreement()(np.array(candidate), np.array(reference)))
        figures["unit"] = f"{len(candidate)} frames (fewer than {MIN_GROUPS_FOR_VIDEO_LEVEL} videos)"
    return figures
