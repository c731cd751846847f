"""A ``kvqe-export`` request, checked before anything is built, and what preparing it yields: the card, the
(format, precision) pairs, the gates, the torch module with its weights, and the sample sets."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from kvqe.calibration.contract import SampleSet
from kvqe.calibration.data import SampleSettings, build_sample_sets
from kvqe.calibration.gates import Gate
from kvqe.calibration.tasks import Task, task_named
from kvqe.errors import BadInputError
from kvqe.export.artifacts import requested_artifacts
from kvqe.export.int8_search import DEFAULT_BUDGET_S
from kvqe.models.registry import ModelCard, get_model, list_models
from kvqe.specs import OutputSpec


@dataclass(frozen=True)
class ExportRequest:
    """What ``kvqe-export`` was asked for.

    ``out_scale``: a pipeline bundle's output scale (``--out-scale``; None: the card's). ``factory``:
    Python API only, builds the torch module instead of the registered factory (tests export a reduced
    config with it); the weights still load through the model's own loader. ``val``: held-out validation
    media (``--val``; None: validation is split from ``calib`` by source). ``search_budget``: seconds the
    INT8 search may take (``--search-budget``; 0: no search).
    """

    model: str
    out: Path
    weights: dict[str, Path]
    formats: Sequence[str] = ("onnx",)
    precisions: Sequence[str] = ("fp32",)
    score_range: tuple[float, float] | None = None
    calib: Path | None = None
    gates: Sequence[str] = ()
    calib_method: str = "percentile"
    per_channel: bool = True
    samples: SampleSettings = field(default_factory=SampleSettings)
    tile: int = 256
    out_scale: int | None = None
    val: Path | None = None
    search_budget: float = DEFAULT_BUDGET_S
    factory: Callable[[], torch.nn.Module] | None = field(default=None, repr=False)


def _output_spec(card: ModelCard, score_range: tuple[float, float] | None, out_scale: int | None) -> OutputSpec:
    output = card.output
    if score_range is not None:
        if output.score_range is None:
            raise BadInputError("--score-range applies to VQA models only")
        if not score_range[0] < score_range[1]:
            raise BadInputError(f"score range {score_range} must be increasing")
        output = replace(output, score_range=(float(score_range[0]), float(score_range[1])))
    if out_scale is not None:
        if "pipeline" not in card.extra:
            pipelines = ", ".join(c.name for c in list_models() if "pipeline" in c.extra)
            raise BadInputError(f"--out-scale applies to pipeline models ({pipelines}), not {card.name}")
        allowed = card.extra.get("out_scales", ())
        if out_scale not in allowed:
            raise BadInputError(f"{card.name}: --out-scale must be one of {', '.join(map(str, allowed))}, "
                                f"got {out_scale}")
        output = replace(output, scale=out_scale)
    return output


@dataclass
class Prepared:
    """A checked request: the card, what to build, the module with its weights, and the sample sets."""

    card: ModelCard
    output_spec: OutputSpec
    pairs: list[tuple[str, str]]
    user_gates: list[Gate]
    module: torch.nn.Module
    provenance: dict[str, Any]
    calib_set: SampleSet | None
    valid_set: SampleSet
    calib_record: dict[str, Any] | None

    @property
    def task(self) -> Task:
        return task_named(self.card.task)


def prepare(request: ExportRequest, progress: Callable[[str], None]) -> Prepared:
    """Check the request (before anything is built), build the module, load its weights, sample the data."""
    pairs = requested_artifacts(list(request.formats), list(request.precisions))
    user_gates = [Gate.parse(expression) for expression in request.gates]
    entry = get_model(request.model)
    card = entry.card
    task = task_named(card.task)
    output_spec = _output_spec(card, request.score_range, request.out_scale)
    for _, precision in pairs:
        task.gates(precision, user_gates)  # a gate that does not fit the task fails now
    if any(p == "int8" for _, p in pairs) and request.calib is None:
        raise BadInputError("INT8 needs calibration data: pass --calib DIR (videos and/or images)")
    if request.val is not None and request.calib is None:
        raise BadInputError("--val holds validation data for calibrated artifacts: pass --calib DIR as well")
    if request.search_budget < 0:
        raise BadInputError(f"--search-budget must be 0 (no search) or more seconds, got {request.search_budget:g}")
    if entry.check_weights is not None:
        entry.check_weights(request.weights)  # e.g. every checkpoint of a multi-part model, before building it
    progress(f"building {card.name}")
    module = (request.factory or entry.factory)().eval()
    provenance = entry.load_weights(module, request.weights)
    teacher = provenance.get("training", {}).get("teacher", {})
    if teacher.get("units"):  # a distilled (VQA) student scores in its teacher's units
        output_spec = replace(output_spec, units=teacher["units"])
    calib_set: SampleSet | None = None
    calib_record: dict[str, Any] | None = None
    if request.calib is not None:
        progress(f"sampling calibration and validation data from {request.calib}")
        calib_set, valid_set, calib_record = build_sample_sets(request.calib, task, card.input, request.samples,
                                                               request.val)
    else:
        valid_set = task.builtin_set(card.input)
    return Prepared(card, output_spec, pairs, user_gates, module, provenance, calib_set, valid_set, calib_record)
