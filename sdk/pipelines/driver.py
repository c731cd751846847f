"""The generic driver of staged pipelines: a pipeline as a coroutine of stage calls, run as ONE runner.

A kind writes its pipeline as a generator (:data:`Steps`) that yields ``(stage, stage input)`` and receives
the stage's output, and returns the result; :class:`StagedRunner` drives it over the stage runners (each a
single-input, single-output graph) and is itself a :class:`~kvqe.runtimes.base.Runner` with one named input
and one named output. The origin passed along is the batch's top-left in the image, for kinds whose output
depends on the position (noise anchored to image coordinates).
"""
from __future__ import annotations

import abc
from collections.abc import Callable, Generator, Mapping

import numpy as np

from kvqe.errors import BadInputError
from kvqe.runtimes.base import Runner, TensorSpec

# a pipeline as a coroutine: yields (stage, stage input), receives the stage output, returns the result
Steps = Generator[tuple[str, np.ndarray], np.ndarray, np.ndarray]


def drive(steps: Steps, run: Callable[[str, np.ndarray], np.ndarray]) -> np.ndarray:
    """Run a pipeline coroutine to its end, computing each stage with ``run(stage, input)``."""
    request = next(steps)
    while True:
        try:
            request = steps.send(run(*request))
        except StopIteration as done:
            return np.asarray(done.value)


class StagedRunner(Runner):
    """Stage runners composed into one runner: ``input_spec`` in, ``output_spec`` out (class attributes a
    kind sets), through the kind's :meth:`steps`.

    Threads: safe to share when its stage runners are (every kvqe backend's is), as long as the kind keeps
    no per-call state on the runner: each call drives its own :data:`Steps` generator.
    """

    name = "pipeline"
    input_spec = TensorSpec("input", np.dtype(np.float32), (None, None, None, None))
    output_spec = TensorSpec("output", np.dtype(np.float32), (None, None, None, None))

    def __init__(self, stages: Mapping[str, Runner]) -> None:
        super().__init__()
        self.stages = dict(stages)

    @abc.abstractmethod
    def steps(self, batch: np.ndarray, origin: tuple[int, int]) -> Steps:
        """The pipeline for one batch whose top-left sits at ``origin`` in the image."""

    def run_at(self, batch: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
        """:meth:`run_single` for a tile whose top-left is at ``origin`` (y, x) of the image."""
        return self._run_at(self._checked({self.input_spec.name: batch})[self.input_spec.name], origin)

    def stage_input(self, batch: np.ndarray, stage: str, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
        """What ``stage`` receives for ``batch``: runs the stages before it (calibration of inner stages)."""
        if stage not in self.stages:
            raise BadInputError(f"no stage {stage!r} in this pipeline ({', '.join(self.stages)})")
        steps = self.steps(self._checked({self.input_spec.name: batch})[self.input_spec.name], origin)
        request = next(steps)
        while request[0] != stage:
            request = steps.send(self.stages[request[0]].run_single(request[1]))
        steps.close()
        return request[1]

    def trace(self, batch: np.ndarray, origin: tuple[int, int] = (0, 0)) -> dict[str, np.ndarray]:
        """The input every stage receives for ``batch`` (one pass through all stages)."""
        seen: dict[str, np.ndarray] = {}

        def run(stage: str, x: np.ndarray) -> np.ndarray:
            seen[stage] = x
            return self.stages[stage].run_single(x)

        drive(self.steps(batch, origin), run)
        return seen

    @property
    def executed_precision(self) -> str | None:
        """What the stage runners report having executed (OpenVINO), joined when they differ."""
        values = sorted({str(v) for r in self.stages.values()
                         if (v := getattr(r, "executed_precision", None)) is not None})
        return ",".join(values) if values else None

    def _run_at(self, batch: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
        return drive(self.steps(batch, origin), lambda stage, x: self.stages[stage].run_single(x))

    def _load(self) -> None:
        for runner in self.stages.values():
            runner.load()

    def _input_specs(self) -> tuple[TensorSpec, ...]:
        return (self.input_spec,)

    def _output_specs(self) -> tuple[TensorSpec, ...]:
        return (self.output_spec,)

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {self.output_spec.name: self._run_at(feeds[self.input_spec.name], (0, 0))}

    def _close(self) -> None:
        for runner in self.stages.values():
            runner.close()
