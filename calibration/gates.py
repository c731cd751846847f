"""Accuracy gates: ``metric op threshold`` checks on an artifact's agreement with the FP32 reference.

A gate is an object returning a truthy :class:`Comparison` that says by how much it passed or missed.
The defaults per task and precision (the release policy) are the task's (:mod:`kvqe.calibration.tasks`);
``--gate`` expressions override them (``srcc>=0.99`` for every precision, or ``int8:psnr>=33`` for one).
"""
from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

from kvqe.calibration.comparators import Comparison
from kvqe.errors import BadInputError

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
_ALIASES = {"srcc": "srocc", "srocc": "srocc", "plcc": "plcc", "max_abs": "max_abs", "psnr": "psnr",
            "psnr_min": "psnr_min", "ssim": "ssim"}
_EXPRESSION = re.compile(r"^\s*(?:(fp32|fp16|int8)\s*:)?\s*([a-z_]+)\s*(>=|<=|>|<)\s*([-+0-9.eE]+|inf)\s*$")


@dataclass(frozen=True)
class Gate:
    metric: str
    op: str
    threshold: float
    precision: str | None = None  # None: every precision

    @classmethod
    def parse(cls, expression: str) -> Gate:
        match = _EXPRESSION.match(expression)
        if not match or match.group(2) not in _ALIASES:
            raise BadInputError(
                f"cannot read gate {expression!r}: write [PRECISION:]METRIC OP NUMBER, e.g. srcc>=0.99 or "
                f"int8:psnr>=35; metrics: {', '.join(sorted(_ALIASES))}")
        precision, metric, op, number = match.groups()
        return cls(_ALIASES[metric], op, float(number), precision)

    def __str__(self) -> str:
        scope = f"{self.precision}:" if self.precision else ""
        return f"{scope}{self.metric}{self.op}{self.threshold:g}"

    def __call__(self, figures: dict[str, float]) -> Comparison:
        value = figures.get(self.metric, float("nan"))
        passed = not math.isnan(value) and _OPS[self.op](value, self.threshold)
        margin = value - self.threshold if self.op in (">=", ">") else self.threshold - value
        detail = (f"{self.metric}={value:.6g} {'meets' if passed else 'misses'} {self.op}{self.threshold:g} "
                  f"({'by' if passed else 'short by'} {abs(margin):.3g})") if not math.isnan(value) else \
            f"{self.metric} is undefined (too few or constant validation samples)"
        return Comparison(self.metric, value, self.threshold, passed, detail)
