"""SmoothQuant for convolutions: per-input-channel smoothing of the inputs of quantised Convs.

A Conv whose input has a few channels with a much wider range than the rest (the dense concatenations of
an RRDB: the trunk next to the growth features) loses most of its int8 resolution to them, because
activations get one scale per tensor. Smoothing divides input channel ``c`` by ``s_c`` and multiplies the
weights' input channel ``c`` by the same ``s_c``:

    conv(x, W) == conv(x / s, W * s),   s_c = max|x_c| ** alpha / max|W[:, c]| ** (1 - alpha)

so the FP32 function is unchanged (to float rounding), the activation ranges are flattened, and the weights
(quantised per output channel) absorb what they can. The division is a float ``Mul`` by a constant in
front of the Conv (one multiply per input element: a Conv with k x k kernels and C_out outputs does
C_out * k * k multiply-adds per input element), placed before the Conv's input quantiser, so every
consumer of the QDQ ONNX (ONNX Runtime, OpenVINO, TensorRT) sees the smoothed ranges. For NNCF the
plan (:func:`smoothing_plan`) is applied to the converted OpenVINO model instead
(:func:`kvqe.export.openvino_export.smooth_ir`): OpenVINO's ONNX converter folds a Mul by a constant into
the Convolution after it.

Activation ranges are the per-channel absolute maxima over the calibration set, measured with ONNX Runtime
on the FP32 model.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from kvqe.calibration.contract import SampleSet
from kvqe.errors import BadInputError
from kvqe.files import atomic_output_file

# channels whose activation or weight range is this small carry nothing to balance: left unscaled
_TINY = 1e-8
# scales are clipped to [1 / LIMIT, LIMIT] so that no channel is pushed far out of float range
_LIMIT = 1e4


def smoothable_convs(model: onnx.ModelProto, names: Sequence[str] | None = None) -> list[onnx.NodeProto]:
    """Convs (``names`` only, if given) with a single group and constant weights: those whose input
    channels can be rescaled into the weights."""
    initializers = {t.name for t in model.graph.initializer}
    wanted = None if names is None else set(names)
    chosen = []
    for node in model.graph.node:
        if node.op_type != "Conv" or (wanted is not None and node.name not in wanted):
            continue
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        if group == 1 and len(node.input) > 1 and node.input[1] in initializers:
            chosen.append(node)
    return chosen


def input_channel_ranges(fp32_onnx: Path, samples: SampleSet, tensors: Sequence[str]) -> dict[str, np.ndarray]:
    """Per-channel ``max |x|`` of each tensor (N x C x ...) of ``fp32_onnx`` over ``samples`` (ONNX Runtime)."""
    model = onnx.load(str(fp32_onnx))
    outputs = {o.name for o in model.graph.output}
    for name in tensors:
        if name not in outputs:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), sess_options=options,
                                   providers=["CPUExecutionProvider"])
    del model
    input_name = session.get_inputs()[0].name
    names = list(dict.fromkeys(tensors))
    ranges: dict[str, np.ndarray] = {}
    for batch in samples.inputs():
        for name, value in zip(names, session.run(names, {input_name: batch})):
            axes = (0, *range(2, value.ndim))
            peak = np.abs(value).max(axis=axes).astype(np.float64)
            ranges[name] = peak if name not in ranges else np.maximum(ranges[name], peak)
    return ranges


def smoothing_scales(activation_max: np.ndarray, weight: np.ndarray, alpha: float) -> np.ndarray:
    """SmoothQuant's ``s_c = max|x_c| ** alpha / max|W[:, c]| ** (1 - alpha)`` for a Conv weight
    (C_out x C_in x k x k); 1 where either range is ~0; clipped to [1e-4, 1e4]."""
    weight_max = np.abs(weight).max(axis=(0, *range(2, weight.ndim))).astype(np.float64)
    valid = (activation_max > _TINY) & (weight_max > _TINY)
    scales = np.ones_like(weight_max)
    scales[valid] = activation_max[valid] ** alpha / weight_max[valid] ** (1.0 - alpha)
    return np.clip(scales, 1.0 / _LIMIT, _LIMIT)


def smoothing_plan(fp32_onnx: Path, calibration: SampleSet, alpha: float,
                   convs: Sequence[str] | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Per-input-channel scales ``s`` for each Conv of ``convs`` (default: every smoothable Conv), by
    Conv name, and the record for the manifest (alpha, how many Convs, the widest activation range ratio
    between channels of one Conv input before and after)."""
    if not 0.0 <= alpha <= 1.0:
        raise BadInputError(f"smoothing alpha must be in [0, 1], got {alpha}")
    if len(calibration) == 0:
        raise BadInputError("the calibration set is empty")
    model = onnx.load(str(fp32_onnx))
    nodes = smoothable_convs(model, convs)
    if convs is not None and len(nodes) != len(set(convs)):
        missing = sorted(set(convs) - {n.name for n in nodes})
        raise BadInputError(f"cannot smooth {', '.join(missing[:5])}: not single-group Convs with constant weights")
    ranges = input_channel_ranges(fp32_onnx, calibration, [n.input[0] for n in nodes])
    weights = {t.name: t for t in model.graph.initializer}
    plan: dict[str, np.ndarray] = {}
    spread_before, spread_after = [], []
    for node in nodes:
        activation = ranges[node.input[0]]
        plan[node.name] = smoothing_scales(activation, numpy_helper.to_array(weights[node.input[1]]), alpha)
        live = activation > _TINY
        if live.any():
            spread_before.append(float(activation[live].max() / activation[live].min()))
            after = activation[live] / plan[node.name][live]
            spread_after.append(float(after.max() / after.min()))
    record = {"method": "smoothquant (convolution inputs)", "alpha": alpha, "convs": len(plan),
              "samples": len(calibration),
              "max_channel_range_ratio": {"before": round(max(spread_before, default=1.0), 2),
                                          "after": round(max(spread_after, default=1.0), 2)}}
    return plan, record


def smoothed_weight(weight: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """``W * s`` along the input-channel axis (1), in the weight's dtype."""
    shape = (1, -1, *([1] * (weight.ndim - 2)))
    return (weight.astype(np.float64) * scales.reshape(shape)).astype(weight.dtype)


def inverse_scales(scales: np.ndarray, rank: int) -> np.ndarray:
    """``1 / s`` shaped to multiply an N x C x ... activation of ``rank`` dimensions, float32."""
    return (1.0 / scales).reshape(1, -1, *([1] * (rank - 2))).astype(np.float32)


def apply_to_onnx(fp32_onnx: Path, out_onnx: Path, plan: dict[str, np.ndarray]) -> None:
    """Write ``fp32_onnx`` with every Conv of ``plan`` smoothed: a ``Mul`` by ``1/s`` (named
    ``<conv>__smooth``) in front of it and its weights times ``s``."""
    model = onnx.load(str(fp32_onnx))
    weights = {t.name: t for t in model.graph.initializer}
    new_nodes: dict[str, onnx.NodeProto] = {}
    for node in model.graph.node:
        if node.name not in plan:
            continue
        tensor = weights[node.input[1]]
        weight = numpy_helper.to_array(tensor)
        tensor.CopyFrom(numpy_helper.from_array(smoothed_weight(weight, plan[node.name]), tensor.name))
        inverse = f"{node.name}__smooth_inv"
        model.graph.initializer.append(numpy_helper.from_array(inverse_scales(plan[node.name], weight.ndim), inverse))
        smoothed = f"{node.name}__smoothed_input"
        new_nodes[node.name] = onnx.helper.make_node("Mul", [node.input[0], inverse], [smoothed],
                                                     name=f"{node.name}__smooth")
        node.input[0] = smoothed
    ordered = []
    for node in model.graph.node:
        if node.name in new_nodes:
            ordered.append(new_nodes[node.name])
        ordered.append(node)
    del model.graph.node[:]
    model.graph.node.extend(ordered)
    with atomic_output_file(out_onnx) as partial:
        onnx.save(model, str(partial))


def smooth_conv_inputs(fp32_onnx: Path, out_onnx: Path, calibration: SampleSet, alpha: float,
                       convs: Sequence[str] | None = None) -> dict[str, Any]:
    """:func:`smoothing_plan` then :func:`apply_to_onnx`: ``fp32_onnx`` with the inputs of ``convs``
    smoothed, written to ``out_onnx`` (the same function). Returns the plan's record."""
    plan, record = smoothing_plan(fp32_onnx, calibration, alpha, convs)
    apply_to_onnx(fp32_onnx, out_onnx, plan)
    return record
