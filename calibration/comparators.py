"""Comparators (Polygraphy style): objects that compare an artifact's outputs with a reference and
return a truthy/falsy result carrying the figures."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kvqe import metrics


@dataclass(frozen=True)
class Comparison:
    """Outcome of one comparison; truthy when it passed."""

    metric: str
    value: float
    threshold: float
    passed: bool
    detail: str = ""

    def __bool__(self) -> bool:
        return self.passed


@dataclass(frozen=True)
class MaxAbsDiff:
    """Passes when ``max |candidate - reference| <= tolerance`` and the shapes agree."""

    tolerance: float

    def __call__(self, candidate: np.ndarray, reference: np.ndarray) -> Comparison:
        if candidate.shape != reference.shape:
            return Comparison("max_abs_diff", float("inf"), self.tolerance, False,
                              f"shape {candidate.shape} != reference {reference.shape}")
        if not np.all(np.isfinite(candidate)):
            return Comparison("max_abs_diff", float("inf"), self.tolerance, False, "non-finite values")
        diff = float(np.max(np.abs(candidate.astype(np.float64) - reference.astype(np.float64))))
        return Comparison("max_abs_diff", diff, self.tolerance, diff <= self.tolerance)


@dataclass(frozen=True)
class ScoreAgreement:
    """VQA: how well an artifact's video scores agree with the reference's (rank, linear, absolute)."""

    def __call__(self, candidate: np.ndarray, reference: np.ndarray) -> dict[str, float]:
        return {"srocc": metrics.srocc(candidate, reference), "plcc": metrics.plcc(candidate, reference),
                "max_abs": float(np.max(np.abs(np.asarray(candidate) - np.asarray(reference))))}


@dataclass(frozen=True)
class ImageFidelity:
    """SR: PSNR (mean and worst, capped at 100 dB) and mean SSIM of an artifact's uint8 outputs against the reference's."""

    def __call__(self, candidate: list[np.ndarray], reference: list[np.ndarray]) -> dict[str, float]:
        # identical images have infinite PSNR; cap at 100 dB so that the mean stays a number
        psnrs = [min(metrics.psnr(c, r), 100.0) for c, r in zip(candidate, reference, strict=True)]
        ssims = [metrics.ssim(c, r) for c, r in zip(candidate, reference, strict=True)]
        return {"psnr": float(np.mean(psnrs)), "psnr_min": float(min(psnrs)), "ssim": float(np.mean(ssims))}
