"""Comparators (Polygraphy style): objects that compare an artifact's outputs with a reference and
return a truthy/falsy result carrying the figures."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
