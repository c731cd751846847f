"""The one comparator loop: run a candidate over samples, compare with the reference, apply the gates.

Export validation (a graph against torch), export accuracy (an artifact against the FP32 ONNX) and
``kvqe verify`` all call :func:`compare_runs`; what differs between them is the :class:`Comparator` (what
is read from a runner, what is checked per sample, what figures the whole set gives) and the gates.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from kvqe.calibration.comparators import Comparison
from kvqe.calibration.gates import Gate
from kvqe.runtimes.base import Runner


class Comparator(Protocol):
    """How a candidate's outputs are compared with the reference's."""

    def read(self, runner: Runner, sample: Any) -> Any:
        """What is compared of ``runner``'s output for ``sample`` (tensors, an image, a score)."""

    def each(self, candidate: Any, reference: Any) -> tuple[Comparison, ...]:
        """Checks of one sample (empty when only the whole set is judged)."""

    def overall(self, candidate: list[Any], reference: list[Any]) -> dict[str, Any]:
        """Figures over the whole set, for the gates (empty when only samples are judged)."""


@dataclass(frozen=True)
class CaseResult:
    """One sample: its checks, or the error the candidate raised on it."""

    index: int
    checks: tuple[Comparison, ...] = ()
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and all(self.checks)


@dataclass(frozen=True)
class GateResult:
    gate: Gate
    outcome: Comparison

    def to_json(self) -> dict[str, Any]:
        return {"gate": str(self.gate), "value": self.outcome.value, "passed": self.outcome.passed,
                "detail": self.outcome.detail}


@dataclass(frozen=True)
class RunComparison:
    """What a candidate showed against the reference: per-sample cases, set figures, gate verdicts, and
    the precision the candidate reported executing at (OpenVINO; None when it says nothing)."""

    cases: tuple[CaseResult, ...]
    figures: dict[str, Any]
    gate_results: tuple[GateResult, ...] = ()
    executed_precision: str | None = None
    samples: int = field(default=0)

    @property
    def gate_failures(self) -> list[str]:
        return [r.outcome.detail for r in self.gate_results if not r.outcome]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.cases) and not self.gate_failures


def reference_outputs(runner: Runner, samples: Iterable[Any], comparator: Comparator) -> list[Any]:
    """The reference's outputs for ``samples`` as ``comparator`` reads them (``runner`` loaded by the caller),
    computed once and shared by every candidate compared with it."""
    return [comparator.read(runner, sample) for sample in samples]


def compare_runs(candidate: Runner, reference: Runner | Sequence[Any], samples: Iterable[Any], comparator: Comparator,
                 gates: Sequence[Gate] = (), *, catch_errors: bool = False) -> RunComparison:
    """Run ``candidate`` on every sample and compare with ``reference`` (a runner, run on the samples the
    candidate ran, or outputs :func:`reference_outputs` computed). ``catch_errors``: a sample the
    candidate fails on becomes a failed case instead of an exception (export validation lists them all)."""
    cases: list[CaseResult] = []
    produced: list[Any] = []
    expected: list[Any] = []
    live, known = (reference, None) if isinstance(reference, Runner) else (None, reference)
    with candidate, live if live is not None else contextlib.nullcontext():
        for index, sample in enumerate(samples):
            try:
                output = comparator.read(candidate, sample)
            except Exception as exc:
                if not catch_errors:
                    raise
                cases.append(CaseResult(index, error=f"{candidate.name} failed: {exc}"))
                continue
            wanted = known[index] if known is not None else comparator.read(cast(Runner, live), sample)
            cases.append(CaseResult(index, comparator.each(output, wanted)))
            produced.append(output)
            expected.append(wanted)
        executed = getattr(candidate, "executed_precision", None)
    figures = comparator.overall(produced, expected) if produced else {}
    results = tuple(GateResult(gate, gate(figures)) for gate in gates)
    return RunComparison(tuple(cases), figures, results, executed, len(cases))

