"""Comparators (Polygraphy style): objects that compare an artifact's outputs with a reference's.

Element-level comparators (:class:`MaxAbsDiff`, :class:`MaxRelDiff`) judge one tensor against a tolerance
and return a truthy/falsy :class:`Comparison`; set-level ones (:class:`ScoreAgreement`,
:class:`ImageFidelity`) turn whole sets of outputs into the figures that gates judge.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from kvqe import metrics
from kvqe.runtimes.base import Runner


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


def _unusable(metric: str, candidate: np.ndarray, reference: np.ndarray, tolerance: float) -> Comparison | None:
    """A failed comparison when the shapes differ or the candidate is not finite, else None."""
    if candidate.shape != reference.shape:
        return Comparison(metric, float("inf"), tolerance, False, f"shape {candidate.shape} != reference {reference.shape}")
    if not np.all(np.isfinite(candidate)):
        return Comparison(metric, float("inf"), tolerance, False, "non-finite values")
    return None


@dataclass(frozen=True)
class MaxAbsDiff:
    """Passes when ``max |candidate - reference| <= tolerance`` and the shapes agree."""

    tolerance: float

    def __call__(self, candidate: np.ndarray, reference: np.ndarray) -> Comparison:
        failed = _unusable("max_abs_diff", candidate, reference, self.tolerance)
        if failed is not None:
            return failed
        diff = float(np.max(np.abs(candidate.astype(np.float64) - reference.astype(np.float64))))
        return Comparison("max_abs_diff", diff, self.tolerance, diff <= self.tolerance)


@dataclass(frozen=True)
class MaxRelDiff:
    """Passes when ``max |candidate - reference| / max |reference| <= tolerance`` (for outputs such as sums,
    whose scale grows with the input, an absolute tolerance means nothing)."""

    tolerance: float

    def __call__(self, candidate: np.ndarray, reference: np.ndarray) -> Comparison:
        failed = _unusable("max_rel_diff", candidate, reference, self.tolerance)
        if failed is not None:
            return failed
        diff = float(np.abs(candidate - reference).max() / max(float(np.abs(reference).max()), 1e-12))
        return Comparison("max_rel_diff", diff, self.tolerance, diff <= self.tolerance)


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


@dataclass(frozen=True)
class GraphOutputs:
    """A graph's named outputs, each checked by its own element comparator (e.g. ``{"output": MaxAbsDiff(1e-4)}``);
    samples are feeds (input name -> array). The :class:`~kvqe.calibration.comparison.Comparator` of export
    validation: every sample is judged, the set gives no figures."""

    checks: dict[str, Callable[[np.ndarray, np.ndarray], Comparison]]

    def read(self, runner: Runner, sample: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return runner.infer(sample)

    def each(self, candidate: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> tuple[Comparison, ...]:
        return tuple(check(candidate[name], reference[name]) if name in candidate and name in reference
                     else Comparison(name, float("inf"), 0.0, False, f"no output named {name!r}")
                     for name, check in self.checks.items())

    def overall(self, candidate: list[Any], reference: list[Any]) -> dict[str, Any]:
        return {}
