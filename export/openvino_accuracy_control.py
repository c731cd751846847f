"""INT8 IR by NNCF's ``quantize_with_accuracy_control``: NNCF quantises with the model's policy, then
reverts quantised layers to float, most harmful first, until the validation metric is within ``max_drop``
of the FP32 model's. It is the OpenVINO-side alternative to :mod:`kvqe.calibration.mixed_precision`
(which searches on the QDQ ONNX); ``docs/int8_nncf_comparison.md`` compares the two.

The metric scores an output against the FP32 IR's output for the same input (both compiled at f32), so the
FP32 model itself scores a perfect figure: PSNR's is infinite, which NNCF cannot subtract from. Each sample's
figure is therefore capped at ``ceiling`` (60 dB suits 8-bit images: one pixel in ten off by one level is
already above it); the FP32 model then scores ``ceiling`` and the gate NNCF works to is
``mean(min(metric, ceiling)) >= ceiling - max_drop``. NNCF gates the mean only, not the worst sample.

Policies that smooth Conv inputs (``conv_smoothing``) or build OpenVINO INT8 from the QDQ ONNX
(``openvino_from_qdq``) are refused: the smoothing Multiply would stay in front of a Conv NNCF reverts to
float (a float Conv no longer needs it, but NNCF cannot take it out), and a from-QDQ policy is there
because NNCF's own INT8 is not used for that model.
"""
from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from kvqe.calibration.contract import SampleSet
from kvqe.calibration.policy import QuantPolicy
from kvqe.errors import BadInputError, missing_extra
from kvqe.export.openvino_export import (
    LAYOUT_ONLY,
    ONNX_TO_OPENVINO,
    _canonical_names,
    _convert,
    _onnx_names,
    _output_to_stderr,
    ignored_scope,
)
from kvqe.files import atomic_output_file

Metric = Callable[[np.ndarray, np.ndarray], float]  # (FP32 output, candidate output) -> higher is better
F32 = {"INFERENCE_PRECISION_HINT": "f32"}  # never let the CPU plugin pick bf16 for the reference or the check


def quantize_ir_with_accuracy_control(
    fp32_onnx: Path, xml_path: Path, calibration: SampleSet, validation: SampleSet, policy: QuantPolicy,
    metric: Metric, max_drop: float, *, budget_iterations: int | None = None, ceiling: float = 60.0,
    ranking_workers: int = 1,
) -> dict[str, Any]:
    """Quantise ``fp32_onnx`` with NNCF's accuracy control and save the INT8 IR at ``xml_path`` (with its
    ``.bin``; neither is replaced unless the whole run succeeds).

    ``max_drop``: the largest drop of the mean capped metric below the FP32 model's (``ceiling``), in
    metric units (dB for PSNR). ``budget_iterations``: at most this many revert steps (NNCF's
    ``max_num_iterations``; None: as many as there are quantised layers). ``ranking_workers``: NNCF's
    parallel rankers (one keeps a shared machine usable). Returns the manifest record: what was asked,
    the layers reverted to float, FakeQuantize counts before and after, the INT8 IR's metric on
    ``validation`` (uncapped mean and worst sample) and the seconds spent.
    """
    try:
        import nncf
        from nncf.quantization.advanced_parameters import (
            AdvancedAccuracyRestorerParameters,
            AdvancedQuantizationParameters,
            AdvancedSmoothQuantParameters,
        )
    except ImportError:
        raise missing_extra("nncf", "export") from None
    if not fp32_onnx.is_file() or fp32_onnx.suffix != ".onnx":
        raise BadInputError(f"{fp32_onnx} is not an existing FP32 ONNX file")
    if len(calibration) == 0:
        raise BadInputError("the calibration set is empty")
    if len(validation) == 0:
        raise BadInputError("the validation set is empty: accuracy control needs samples to measure the drop on")
    if not (np.isfinite(max_drop) and 0.0 <= max_drop < ceiling):
        raise BadInputError(f"max_drop {max_drop} must be in 0..{ceiling} (the metric's ceiling)")
    if budget_iterations is not None and budget_iterations < 1:
        raise BadInputError(f"budget_iterations {budget_iterations} must be at least 1 (or None: no limit)")
    if policy.conv_smoothing is not None or policy.openvino_from_qdq:
        raise BadInputError(f"policy {policy.name!r} {'smooths Conv inputs' if policy.conv_smoothing is not None else 'builds OpenVINO INT8 from the QDQ ONNX'}"
                            ": accuracy control supports neither (see kvqe.export.openvino_accuracy_control)")
    if policy.smooth_quant is not None and not policy.transformer:
        raise BadInputError(f"policy {policy.name!r}: NNCF applies SmoothQuant only with transformer=True")

    started = time.monotonic()
    model = _convert(fp32_onnx)
    ignored_types, ignored_names = ignored_scope(model, policy)
    before = {op.get_friendly_name() for op in model.get_ops()}
    reference = _run(ov.Core().compile_model(model, "CPU", F32), validation)

    def validate(compiled: ov.CompiledModel, items: Iterable[tuple[int, np.ndarray]]) -> tuple[float, list[float]]:
        """Mean capped metric over ``items`` ((index, image) pairs: NNCF ranks on subsets) and each item's."""
        scores = [min(float(metric(reference[i], _infer(compiled, validation.transform(image)))), ceiling)
                  for i, image in items]
        return float(np.mean(scores)), scores

    alpha = -1.0 if policy.smooth_quant is None else float(policy.smooth_quant)
    restorer = AdvancedAccuracyRestorerParameters(num_ranking_workers=ranking_workers)
    if budget_iterations is not None:
        restorer.max_num_iterations = budget_iterations
    with tempfile.TemporaryDirectory(prefix="kvqe-ac-") as tmp, _output_to_stderr():
        restorer.intermediate_model_dir = tmp  # NNCF saves its all-int8 model there: the "before"
        quantized = nncf.quantize_with_accuracy_control(
            model, nncf.Dataset(calibration.images, calibration.transform),
            nncf.Dataset(list(enumerate(validation.images)), lambda item: validation.transform(item[1])),
            validate, max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE,
            preset=nncf.QuantizationPreset.PERFORMANCE, target_device=nncf.TargetDevice.CPU,
            subset_size=len(calibration), model_type=nncf.ModelType.TRANSFORMER if policy.transformer else None,
            ignored_scope=nncf.IgnoredScope(names=ignored_names, types=ignored_types, validate=True),
            advanced_quantization_parameters=AdvancedQuantizationParameters(
                smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=alpha)),
            advanced_accuracy_restorer_parameters=restorer,
        )
        all_int8 = ov.Core().read_model(str(Path(tmp) / "intermediate_model.xml"))
    _canonical_names(quantized, before)
    scores = [float(metric(r, o)) for r, o in zip(reference, _run(ov.Core().compile_model(quantized, "CPU", F32),
                                                                     validation))]
    _save(quantized, xml_path)

    quantisable = {t for op in policy.quantize_ops for t in ONNX_TO_OPENVINO[op]}
    int8_before, int8_after = int8_ops(all_int8, quantisable), int8_ops(quantized, quantisable)
    onnx_names = _onnx_names(fp32_onnx)
    reverted = [name for name in int8_before if name not in int8_after]
    capped_mean = float(np.mean([min(s, ceiling) for s in scores]))
    return {
        "quantizer": "nncf.quantize_with_accuracy_control", "nncf": nncf.__version__, "openvino": ov.get_version(),
        "policy": policy.name, "preset": "performance", "target_device": "CPU", "subset_size": len(calibration),
        "ignored_types": ignored_types, "ignored_names": ignored_names,
        "max_drop": float(max_drop), "drop_type": "absolute", "metric_ceiling": ceiling,
        "budget_iterations": budget_iterations, "validation_samples": len(validation),
        "int8_candidates": len(int8_before),
        "reverted_to_float": reverted,
        "reverted_onnx_nodes": [n.split("/")[0] for n in reverted if n.split("/")[0] in onnx_names],
        "int8_ops": len(int8_after),
        "fake_quantize_nodes": {"before": _count(all_int8, "FakeQuantize"), "after": _count(quantized, "FakeQuantize")},
        "activation_fake_quantize_nodes": {"before": _activation_fq(all_int8), "after": _activation_fq(quantized)},
        "int8_weight_constants": sum(op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8
                                     for op in quantized.get_ops()),
        "metric": float(np.mean(scores)), "metric_min": float(np.min(scores)),
        "metric_capped": capped_mean, "passed": bool(capped_mean >= ceiling - max_drop),
        "seconds": round(time.monotonic() - started, 1),
    }


def int8_ops(model: ov.Model, op_types: set[str]) -> list[str]:
    """Friendly names, in graph order, of the ops of ``op_types`` whose data input (port 0) is fed by a
    FakeQuantize, looking back through layout-only ops: the ops the CPU plugin runs in int8."""
    names = []
    for op in model.get_ordered_ops():
        if op.get_type_name() not in op_types:
            continue
        source = op.input_value(0).get_node()
        while source.get_type_name() in LAYOUT_ONLY and source.get_input_size() > 0:
            source = source.input_value(0).get_node()
        if source.get_type_name() == "FakeQuantize":
            names.append(op.get_friendly_name())
    return names


def _activation_fq(model: ov.Model) -> int:
    """FakeQuantize nodes on activations (their input is computed, not a constant weight)."""
    def constant(node: Any) -> bool:
        while node.get_type_name() == "Convert":
            node = node.input_value(0).get_node()
        return bool(node.get_type_name() == "Constant")

    return sum(op.get_type_name() == "FakeQuantize" and not constant(op.input_value(0).get_node())
               for op in model.get_ops())


def _count(model: ov.Model, op_type: str) -> int:
    return sum(op.get_type_name() == op_type for op in model.get_ops())


def _infer(compiled: ov.CompiledModel, x: np.ndarray) -> np.ndarray:
    return np.asarray(compiled(x)[compiled.output(0)])


def _run(compiled: ov.CompiledModel, samples: SampleSet) -> list[np.ndarray]:
    return [_infer(compiled, x) for x in samples.inputs()]


def _save(model: ov.Model, xml_path: Path) -> None:
    """Save the IR so that neither file is replaced unless both were written: each goes to a hidden
    temporary beside its target first; the ``.bin`` is moved into place before the ``.xml``."""
    with atomic_output_file(xml_path) as xml_tmp, atomic_output_file(xml_path.with_suffix(".bin")) as bin_tmp:
        written_bin = xml_tmp.with_suffix(".bin")  # where save_model puts the weights
        try:
            ov.save_model(model, str(xml_tmp), compress_to_fp16=False)
            os.replace(written_bin, bin_tmp)
        finally:
            written_bin.unlink(missing_ok=True)
