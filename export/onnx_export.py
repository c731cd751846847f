"""ONNX export driven by a per-model spec (names, dynamic axes, opset, tolerance), and its validation
against the PyTorch reference on real inputs.

The exporter is torch's TorchScript-based one (``dynamo=False``): for these convolution/attention
graphs it writes a single self-contained file and is byte-for-byte deterministic for the same weights.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from kvqe.calibration.comparators import MaxAbsDiff
from kvqe.errors import ExportValidationError
from kvqe.export.registry import ModelCard
from kvqe.runtimes.base import Runner, TensorSpec
from kvqe.runtimes.onnxruntime import OnnxRuntimeRunner
from kvqe.runtimes.torch import TorchRunner

EXPORTER = "torch.onnx.export (TorchScript, dynamo=False)"
INPUT_NAME = "input"
OUTPUT_NAME = "output"
_DYNAMIC_AXES = {
    "vqa": {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
    "sr": {INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
           OUTPUT_NAME: {0: "batch", 2: "out_height", 3: "out_width"}},
}


@dataclass(frozen=True)
class OnnxExportSpec:
    """What the exported graph must look like; built from the model card."""

    opset: int
    tolerance: float
    dynamic_axes: dict[str, dict[int, str]]
    input_shape: tuple[int | None, ...]
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME

    @classmethod
    def from_card(cls, card: ModelCard) -> OnnxExportSpec:
        axes = _DYNAMIC_AXES[card.task]
        if card.task == "vqa":
            shape: tuple[int | None, ...] = (None, 3, card.input["crop"]["height"], card.input["crop"]["width"])
        else:
            shape = (None, 3, None, None)
        return cls(opset=card.onnx_opset, tolerance=card.onnx_tolerance, dynamic_axes=axes, input_shape=shape)

    @property
    def tensor_spec(self) -> TensorSpec:
        return TensorSpec(self.input_name, np.dtype(np.float32), self.input_shape)

    def to_json(self) -> dict[str, Any]:
        return {
            "exporter": EXPORTER, "opset": self.opset, "tolerance": self.tolerance,
            "input": {"name": self.input_name, "shape": [self._dim(i, d) for i, d in enumerate(self.input_shape)]},
            "output": {"name": self.output_name},
        }

    def _dim(self, index: int, size: int | None) -> int | str:
        return size if size is not None else self.dynamic_axes[self.input_name][index]


def export_onnx(module: torch.nn.Module, spec: OnnxExportSpec, example: np.ndarray, path: Path) -> None:
    """Export ``module`` (eval, fp32) to ``path`` as one self-contained ONNX file."""
    module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        # tracing reads static spatial sizes as Python ints on purpose (only batch and SR H/W are
        # dynamic) and strided slices are not constant-folded: both warnings are expected noise
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        torch.onnx.export(
            module,
            (torch.from_numpy(example),),
            str(path),
            dynamo=False,
            opset_version=spec.opset,
            input_names=[spec.input_name],
            output_names=[spec.output_name],
            dynamic_axes=spec.dynamic_axes,
            do_constant_folding=True,
        )


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
    for value in list(inputs) + list(graph.output):
        dims = value.type.tensor_type.shape.dim
        for axis, symbol in spec.dynamic_axes.get(value.name, {}).items():
            if axis >= len(dims) or dims[axis].dim_param != symbol:
                failures.append(f"{value.name}: axis {axis} should be dynamic ({symbol!r})")
    return failures


def validate_onnx(path: Path, reference: Runner, inputs: list[np.ndarray], spec: OnnxExportSpec,
                  threads: int = 0) -> ValidationReport:
    """Check the graph's structure, then run ONNX Runtime and the reference on every input.

    Every failure (structure, shape, values beyond tolerance) is gathered; if any, one
    :class:`ExportValidationError` lists them all.
    """
    report = ValidationReport(spec.tolerance, failures=_check_graph(path, spec))
    compare = MaxAbsDiff(spec.tolerance)
    with OnnxRuntimeRunner(path, threads=threads) as candidate, reference:
        for batch in inputs:
            try:
                produced = candidate.run(batch)
            except Exception as exc:  # noqa: BLE001 (ONNX Runtime raises its own types; each becomes a listed failure)
                report.failures.append(f"input {tuple(batch.shape)}: onnxruntime failed: {exc}")
                continue
            result = compare(produced, reference.run(batch))
            report.cases.append({"input_shape": list(batch.shape), "max_abs_diff": result.value,
                                 "passed": result.passed})
            if not result:
                report.failures.append(
                    f"input {tuple(batch.shape)}: {result.detail or f'max abs diff {result.value:.3g}'} "
                    f"exceeds tolerance {spec.tolerance:g}")
    if report.failures:
        raise ExportValidationError(f"{path.name} failed validation against torch:\n  - "
                                    + "\n  - ".join(report.failures))
    return report


def torch_reference(module: torch.nn.Module, spec: OnnxExportSpec) -> TorchRunner:
    """The FP32 PyTorch reference runner for ``module``."""
    return TorchRunner(module, spec.tensor_spec)
