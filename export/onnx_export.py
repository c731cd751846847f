"""ONNX export driven by a per-model spec (names, dynamic axes, opset, tolerance), and its validation
against the PyTorch reference on real inputs.

The exporter is torch's dynamo one (``torch.export`` then onnxscript; the TorchScript exporter is
deprecated), asked explicitly for one self-contained file (no external data) at the card's opset.
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from kvqe.calibration.comparators import GraphOutputs, MaxAbsDiff
from kvqe.calibration.comparison import compare_runs
from kvqe.calibration.tasks import task_named
from kvqe.errors import ExportValidationError
from kvqe.models.registry import ModelCard
from kvqe.runtimes.base import Runner, TensorSpec
from kvqe.runtimes.onnxruntime import OnnxRuntimeRunner
from kvqe.runtimes.torch import TorchRunner

EXPORTER = "torch.onnx.export (dynamo: torch.export + onnxscript), external_data=False, optimize=True"
INPUT_NAME = "input"
OUTPUT_NAME = "output"


@dataclass(frozen=True)
class OnnxExportSpec:
    """What the exported graph must look like; built from the model card."""

    opset: int
    tolerance: float
    dynamic_axes: dict[int, str]
    dynamic_output_axes: tuple[int, ...]
    input_shape: tuple[int | None, ...]
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME

    @classmethod
    def from_card(cls, card: ModelCard) -> OnnxExportSpec:
        task = task_named(card.task)  # the dynamic axes and the input shape (None: dynamic) are the task's
        return cls(opset=card.onnx_opset, tolerance=card.onnx_tolerance, dynamic_axes=dict(task.dynamic_axes),
                   dynamic_output_axes=task.dynamic_output_axes, input_shape=task.graph_input(card.input))

    @property
    def tensor_spec(self) -> TensorSpec:
        return TensorSpec(self.input_name, np.dtype(np.float32), self.input_shape)

    def to_json(self) -> dict[str, Any]:
        shape = [self.dynamic_axes.get(i, d) for i, d in enumerate(self.input_shape)]
        return {"exporter": EXPORTER, "opset": self.opset, "tolerance": self.tolerance,
                "input": {"name": self.input_name, "shape": shape}, "output": {"name": self.output_name}}


def export_onnx(module: torch.nn.Module, spec: OnnxExportSpec, example: np.ndarray, path: Path) -> None:
    """Export ``module`` (eval, fp32) to ``path`` as one self-contained ONNX file.

    torch.export traces the module with the spec's dynamic axes as symbolic dimensions; the result is
    byte-for-byte deterministic for the same weights (a test holds it to that).
    """
    module.eval()
    dims = {axis: torch.export.Dim(name, min=1 if axis == 0 else 2) for axis, name in spec.dynamic_axes.items()}
    if example.shape[0] == 1 and 0 in dims:
        example = np.concatenate([example, example])  # a size-1 example would pin the batch axis to 1
    with quiet_exporter():
        torch.onnx.export(
            module, (torch.from_numpy(example),), str(path), dynamo=True, opset_version=spec.opset,
            input_names=[spec.input_name], output_names=[spec.output_name], dynamic_shapes=(dims,),
            external_data=False, optimize=True, verbose=False,
        )
    _strip_trace_metadata(path)


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """torch's ONNX exporter without its progress lines on stdout (``--json`` owns stdout), its notices about
    absent optional packages ("torchvision is not installed") or its internal deprecation warnings; no grad."""
    onnx_logger = logging.getLogger("torch.onnx")
    level = onnx_logger.level
    onnx_logger.setLevel(logging.ERROR)
    try:
        with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        onnx_logger.setLevel(level)


def _strip_trace_metadata(path: Path) -> None:
    """Drop the exporter's per-node debug metadata (Python stack traces with file paths and line numbers,
    FX node dumps), so the bytes depend only on the graph and weights, not on where the code lives."""
    model = onnx.load(str(path))
    for graph in _graphs(model.graph):
        for node in graph.node:
            del node.metadata_props[:]
            node.doc_string = ""
    onnx.save(model, str(path))


def _graphs(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    """``graph`` and every subgraph nested in its nodes' attributes (If/Loop/Scan bodies)."""
    found = [graph]
    for node in graph.node:
        for attribute in node.attribute:
            for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                found.extend(_graphs(sub))
    return found


@dataclass
class ValidationReport:
    """Per-input comparison figures of an exported graph against its reference."""

    tolerance: float
    cases: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def max_abs_diff(self) -> float:
        return max((c["max_abs_diff"] for c in self.cases), default=float("nan"))

    def to_json(self) -> dict[str, Any]:
        return {"reference": "torch fp32", "comparator": "max_abs_diff", "tolerance": self.tolerance,
                "max_abs_diff": self.max_abs_diff, "cases": self.cases, "passed": not self.failures}


def _check_graph(path: Path, spec: OnnxExportSpec) -> list[str]:
    model = onnx.load(str(path))
    failures: list[str] = []
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        failures.append(f"onnx checker: {exc}")
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if [i.name for i in inputs] != [spec.input_name]:
        failures.append(f"graph inputs {[i.name for i in inputs]} != [{spec.input_name!r}]")
    if [o.name for o in graph.output] != [spec.output_name]:
        failures.append(f"graph outputs {[o.name for o in graph.output]} != [{spec.output_name!r}]")
    for value, axes in ((inputs[0] if inputs else None, tuple(spec.dynamic_axes)),
                        (graph.output[0] if graph.output else None, spec.dynamic_output_axes)):
        if value is None:
            continue
        dims = value.type.tensor_type.shape.dim
        for axis in axes:
            if axis >= len(dims) or not dims[axis].dim_param:
                failures.append(f"{value.name}: axis {axis} should be dynamic")
    return failures


def validate_onnx(path: Path, reference: Runner, inputs: list[np.ndarray], spec: OnnxExportSpec,
                  threads: int = 0) -> ValidationReport:
    """Check the graph's structure, then run ONNX Runtime and the reference on every input.

    Every failure (structure, shape, values beyond tolerance) is gathered; if any, one
    :class:`ExportValidationError` lists them all.
    """
    report = ValidationReport(spec.tolerance, failures=_check_graph(path, spec))
    comparator = GraphOutputs({spec.output_name: MaxAbsDiff(spec.tolerance)})
    result = compare_runs(OnnxRuntimeRunner(path, threads=threads), reference,
                          [{spec.input_name: batch} for batch in inputs], comparator, catch_errors=True)
    for case, batch in zip(result.cases, inputs, strict=True):
        where = f"input {tuple(batch.shape)}"
        if case.error is not None:
            report.failures.append(f"{where}: {case.error}")
            continue
        (check,) = case.checks
        report.cases.append({"input_shape": list(batch.shape), "max_abs_diff": check.value, "passed": check.passed})
        if not check:
            report.failures.append(f"{where}: {check.detail or f'max abs diff {check.value:.3g}'} "
                                   f"exceeds tolerance {spec.tolerance:g}")
    if report.failures:
        raise ExportValidationError(f"{path.name} failed validation against torch:\n  - "
                                    + "\n  - ".join(report.failures))
    return report


def torch_reference(module: torch.nn.Module, spec: OnnxExportSpec) -> TorchRunner:
    """The FP32 PyTorch reference runner for ``module``."""
    return TorchRunner(module, spec.tensor_spec, output_name=spec.output_name)
