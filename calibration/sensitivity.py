"""A cheap layer-sensitivity check for convolutional models: which of the first and last Conv to keep in
float.

Four quantisations of the same graph on the same calibration set: every Conv int8, all but the first,
all but the last, all but both; each is scored against the FP32 model on a held-out validation set.
The rows justify a policy's ``keep_first_last_conv`` (the first and last convs of an SR net carry
the image range, so their int8 error lands directly in the output pixels).
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from kvqe.calibration.contract import SampleSet
from kvqe.calibration.ort_quant import quantize_qdq
from kvqe.calibration.policy import CONV_SR_POLICY, QuantPolicy
from kvqe.errors import BadInputError
from kvqe.metrics import psnr

# (reference output, candidate output) of one validation sample -> a figure where higher is better
MetricFn = Callable[[np.ndarray, np.ndarray], float]


def image_psnr(value_range: Sequence[float] = (0.0, 1.0)) -> MetricFn:
    """PSNR of two model outputs once both are clamped to ``value_range`` and rounded to 8 bits (what a
    user of the enhanced image sees)."""
    low, high = float(value_range[0]), float(value_range[1])

    def metric(reference: np.ndarray, candidate: np.ndarray) -> float:
        def to_u8(x: np.ndarray) -> np.ndarray:
            return np.rint((np.clip(x, low, high) - low) * (255.0 / (high - low))).astype(np.uint8)

        return psnr(to_u8(reference), to_u8(candidate))

    return metric


def run_onnx(path: Path, samples: SampleSet, threads: int = 0) -> list[np.ndarray]:
    """Outputs of ``path`` on every sample of ``samples`` (ONNX Runtime CPU, batch of 1)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return [np.asarray(session.run(None, {name: x})[0]) for x in samples.inputs()]


def conv_sensitivity(
    fp32_onnx: Path,
    calibration: SampleSet,
    validation: SampleSet,
    metric_fn: MetricFn,
    *,
    policy: QuantPolicy = CONV_SR_POLICY,
    method: str = "minmax",
) -> list[dict[str, Any]]:
    """Quantise ``fp32_onnx`` four times (every Conv int8; all but the first; all but the last; all but
    both) and score each against FP32 on ``validation`` with ``metric_fn``.

    ``policy`` supplies the op types and node exclusions; its ``keep_first_last_conv`` is what is being
    measured, so it is ignored. Returns one row per variant: ``{"variant", "float_convs", "metric"
    (mean over the validation samples), "metric_min", "quantized_nodes"}``.
    """
    model = onnx.load(str(fp32_onnx))
    convs = [node.name for node in model.graph.node if node.op_type == "Conv"]
    del model
    if len(convs) < 2:
        raise BadInputError(f"{fp32_onnx.name} has {len(convs)} Conv node(s); the analysis needs at least 2")
    base = replace(policy, keep_first_last_conv=False)
    variants: list[tuple[str, tuple[str, ...]]] = [
        ("all convs int8", ()),
        ("first conv float", (convs[0],)),
        ("last conv float", (convs[-1],)),
        ("first and last conv float", (convs[0], convs[-1])),
    ]
    reference = run_onnx(fp32_onnx, validation)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="kvqe-sensitivity-") as tmp:
        for index, (variant, keep) in enumerate(variants):
            path = Path(tmp) / f"variant{index}.onnx"
            record = quantize_qdq(fp32_onnx, path, calibration, base, method=method, exclude=keep)
            scores = [metric_fn(ref, out) for ref, out in zip(reference, run_onnx(path, validation))]
            rows.append({"variant": variant, "float_convs": list(keep), "metric": float(np.mean(scores)),
                         "metric_min": float(np.min(scores)), "quantized_nodes": record["quantized_nodes"]})
    return rows

