"""What the export loop needs to know about a model's graphs: every bundle is a list of stages.

A single-graph model is a one-stage plan (stage ``model``, no manifest ``pipeline`` entry). A pipeline model
(``card.extra["pipeline"]`` names its kind) gets the plan registered for that kind with
:func:`register_plan`; the modules under :mod:`kvqe.export.pipelines` register theirs and hold everything
specific to one model (how its stages are split and traced, extra graphs, runtime options).
"""
from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from kvqe.calibration.tasks import task_named
from kvqe.errors import BadInputError
from kvqe.export.artifacts import FORMATS, BuiltArtifact
from kvqe.export.onnx_export import OnnxExportSpec
from kvqe.models.registry import ModelCard
from kvqe.runtimes import Runner
from kvqe.specs import OutputSpec

SINGLE_STAGE = "model"
PRECISION_ORDER = ("fp32", "fp16", "int8")
Progress = Callable[[str], None]
# an FP32 graph a plan exports itself: (file, its export record, its accuracy record against torch)
FixedGraph = tuple[Path, dict[str, Any], dict[str, Any]]


class StagePlan:
    """The stages of one bundle and the hooks a pipeline overrides; as is, a single-graph model.

    ``stages``: the torch module of each exported stage, in run order; ``specs``: their export specs;
    ``int8_stages``: the stages quantised in an
    INT8 configuration (the others run their FP32 artifact); ``policies``: quantisation policy by stage
    (default: the card's); ``fixed_stages``: graphs :meth:`export_fixed` writes, FP32 in every configuration.
    """

    kind: str | None = None  # the manifest ``pipeline`` kind; None: a single-graph bundle

    def __init__(self, card: ModelCard, stages: dict[str, nn.Module], specs: dict[str, OnnxExportSpec],
                 int8_stages: Sequence[str], policies: Mapping[str, str], fixed_stages: Sequence[str] = ()) -> None:
        self.card, self.stages, self.specs = card, stages, specs
        self.int8_stages, self.policies = tuple(int8_stages), dict(policies)
        self.fixed_stages = tuple(fixed_stages)

    def stage_inputs(self, progress: Progress) -> dict[str, list[np.ndarray]]:
        """Real inputs of every stage (the first is used as the export example): the card's validation batches."""
        return {stage: task_named(self.card.task).batches(self.card.input) for stage in self.stages}

    def export_fixed(self, out: Path, inputs: dict[str, list[np.ndarray]], progress: Progress) -> dict[str, FixedGraph]:
        """Export and validate the :attr:`fixed_stages` into ``out`` (none here)."""
        return {}

    def compose(self, runners: Mapping[str, Runner]) -> Runner:
        """The whole model from one runner per stage (here the one graph's)."""
        return runners[SINGLE_STAGE]

    def calibration_feed(self, reference: Runner, stage: str) -> Callable[[np.ndarray], np.ndarray]:
        """Maps the model input to ``stage``'s input through the FP32 ``reference`` (inner stages only)."""
        raise BadInputError(f"{self.card.name}: no stage inside the model to calibrate ({stage})")

    def adapt(self, stage: str, built: BuiltArtifact) -> BuiltArtifact:
        """A built artifact with the runtime options its stage needs (none here)."""
        return built

    def manifest_entry(self, precisions: dict[str, dict[str, str]],
                       configurations: list[dict[str, Any]]) -> dict[str, Any] | None:
        """The manifest's ``pipeline`` entry (None: a single-graph bundle has none)."""
        return None

    def stage_precisions(self, precision: str) -> dict[str, str]:
        """What each stage runs at in the ``precision`` configuration."""
        per_stage = {s: precision if precision != "int8" or s in self.int8_stages else "fp32" for s in self.stages}
        return {**per_stage, **{s: "fp32" for s in self.fixed_stages}}

    def build_order(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """The (format, precision) configurations to build: the requested ones, plus the FP32 of a format whose
        configurations run some stages at FP32 (then FP32 first, per format)."""
        mixed = any(p != precision for precision in {p for _, p in pairs}
                    for p in self.stage_precisions(precision).values())
        if not mixed:
            return list(pairs)
        wanted = list(dict.fromkeys([*pairs, *((fmt, "fp32") for fmt, _ in pairs)]))
        return sorted(wanted, key=lambda p: (FORMATS.index(p[0]), PRECISION_ORDER.index(p[1])))

    def tagged(self, stage: str, entry: dict[str, Any]) -> dict[str, Any]:
        """A manifest artifact entry with its stage named (pipeline bundles only)."""
        return entry if self.kind is None else {"stage": stage, **entry}


def single_graph(card: ModelCard, module: nn.Module, output_spec: OutputSpec) -> StagePlan:
    """The one-stage plan of a single-graph model."""
    return StagePlan(card, {SINGLE_STAGE: module}, {SINGLE_STAGE: OnnxExportSpec.from_card(card)}, (SINGLE_STAGE,), {})


def card_stages(card: ModelCard, stages: Sequence[str]) -> tuple[dict[str, OnnxExportSpec], tuple[str, ...],
                                                                   dict[str, str]]:
    """A pipeline card's stage facts: export specs (the card's opset and tolerance, dynamic batch/height/width,
    the stage's input channels), the stages INT8 is attempted for, and per-stage quantisation policies."""
    base = OnnxExportSpec.from_card(card)
    specs = {stage: dataclasses.replace(base, input_shape=(None, int(card.extra["stage_channels"][stage]), None, None))
             for stage in stages}
    int8_stages = tuple(s for s in card.extra.get("int8_stages", stages) if s in stages)
    return specs, int8_stages, dict(card.extra.get("stage_policies", {}))


PlanFactory = Callable[[ModelCard, nn.Module, OutputSpec], StagePlan]
_PLANS: dict[str, PlanFactory] = {}


def register_plan(*kinds: str) -> Callable[[PlanFactory], PlanFactory]:
    """Decorator registering the plan factory of pipeline ``kinds``."""
    def wrap(factory: PlanFactory) -> PlanFactory:
        for kind in kinds:
            _PLANS[kind] = factory
        return factory

    return wrap


def plan_for(card: ModelCard, module: nn.Module, output_spec: OutputSpec) -> StagePlan:
    """The plan of ``card``'s model: its pipeline kind's, else a single graph. The pipeline plans are
    imported by package name on first use, so this module imports none of them (they import it)."""
    kind = card.extra.get("pipeline")
    if kind is None:
        return single_graph(card, module, output_spec)
    importlib.import_module("kvqe.export.pipelines")
    if kind not in _PLANS:
        raise BadInputError(f"{card.name}: no export plan for pipeline kind {kind!r}; known: {', '.join(_PLANS)}")
    return _PLANS[str(kind)](card, module, output_spec)
