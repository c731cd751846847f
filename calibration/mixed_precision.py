"""Accuracy-driven mixed precision: keep the fewest quantised layers in float that make a QDQ model pass
its gate (mean and worst-sample metric on a validation set).

Two steps. :func:`layer_sensitivity` ranks the layers cheaply: one FP32 run and one all-int8 run with
every quantised op's input and output exposed, scored by how much the op raises the noise-to-signal
ratio (dB) from its input to its output (the noise it adds, not the noise it inherits). Then
:func:`search_float_layers` bisects over the ranked list for the smallest prefix kept in float that
passes, within a time budget, recording every step. Both are pure functions of their inputs and safe to
call from several threads on different files.
"""
from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from kvqe.calibration.contract import SampleSet
from kvqe.calibration.ort_quant import quantize_qdq
from kvqe.calibration.policy import QuantPolicy, float_nodes
from kvqe.calibration.sensitivity import MetricFn, run_onnx

# (float layer names) -> (metric mean, metric worst) of the model quantised with those layers in float
Evaluate = Callable[[tuple[str, ...]], tuple[float, float]]


@dataclass
class SearchResult:
    """Outcome of :func:`search_float_layers`: the chosen float layers (``None`` when no step passed
    within the budget), the figures of that choice and every step tried. Not shared between threads."""

    float_layers: tuple[str, ...] | None
    metric: float | None
    metric_min: float | None
    steps: list[dict[str, Any]] = field(default_factory=list)
    budget_exhausted: bool = False

    def record(self, sensitivity: dict[str, float]) -> dict[str, Any]:
        """The manifest record: chosen layers with their sensitivity figures, and the trajectory."""
        layers = list(self.float_layers or ())
        return {"float_layers": layers, "sensitivity": {name: sensitivity.get(name) for name in layers},
                "metric": self.metric, "metric_min": self.metric_min, "passed": self.float_layers is not None,
                "budget_exhausted": self.budget_exhausted, "steps": self.steps}


def _exposed(model_path: Path, names: Sequence[str], out: Path) -> None:
    model = onnx.load(str(model_path))
    present = {o.name for o in model.graph.output}
    for name in names:
        if name not in present:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
    onnx.save(model, str(out))


def _run_all(path: Path, samples: SampleSet, names: Sequence[str]) -> list[list[np.ndarray]]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # no graph fusion: the QDQ model's op outputs must stay the tensors they name
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name
    return [list(session.run(list(names), {feed: x})) for x in samples.inputs()]


def layer_sensitivity(fp32_onnx: Path, qdq_onnx: Path, samples: SampleSet,
                      policy: QuantPolicy) -> dict[str, float]:
    """How much each int8 op of ``qdq_onnx`` raises the noise-to-signal ratio (dB, against ``fp32_onnx``
    on ``samples``) from its input to its output, by node name, most sensitive first."""
    fp32 = onnx.load(str(fp32_onnx))
    excluded = set(float_nodes(fp32, policy))
    nodes = [(n.name, n.input[0], n.output[0]) for n in fp32.graph.node
             if n.op_type in policy.quantize_ops and n.name not in excluded]
    graph_inputs = {i.name for i in fp32.graph.input}
    del fp32
    tensors = sorted({t for _, a, b in nodes for t in (a, b) if t not in graph_inputs})
    with tempfile.TemporaryDirectory(prefix="kvqe-sens-") as tmp:
        ref_path, q_path = Path(tmp) / "ref.onnx", Path(tmp) / "q.onnx"
        _exposed(fp32_onnx, tensors, ref_path)
        _exposed(qdq_onnx, tensors, q_path)
        reference, quantised = _run_all(ref_path, samples, tensors), _run_all(q_path, samples, tensors)
    position = {tensor: index for index, tensor in enumerate(tensors)}

    def nsr(tensor: str) -> float:
        if tensor not in position:  # the graph input: no noise upstream
            return -200.0
        i = position[tensor]
        noise = sum(float(np.sum((r[i] - q[i]) ** 2)) for r, q in zip(reference, quantised))
        signal = sum(float(np.sum(r[i] ** 2)) for r in reference)
        return 10.0 * float(np.log10(max(noise, 1e-20) / max(signal, 1e-20)))

    # the noise a layer adds, not the noise it inherits: output NSR above input NSR (dB)
    scores = {name: nsr(out) - nsr(inp) for name, inp, out in nodes}
    return dict(sorted(scores.items(), key=lambda item: -item[1]))


def search_float_layers(ranked: Sequence[str], evaluate: Evaluate, gate: float, gate_min: float,
                        budget_s: float) -> SearchResult:
    """The smallest prefix of ``ranked`` (most sensitive first) kept in float whose ``evaluate`` figures
    reach ``gate`` (mean) and ``gate_min`` (worst sample): bisection over the prefix length, which
    assumes more float layers never hurt. Stops once ``budget_s`` seconds are spent and keeps the best
    passing prefix seen so far (``float_layers`` is ``None`` when no tried prefix passed)."""
    start = time.monotonic()
    result = SearchResult(None, None, None)

    def attempt(count: int) -> bool:
        began = time.monotonic()
        mean, worst = evaluate(tuple(ranked[:count]))
        passed = mean >= gate and worst >= gate_min
        result.steps.append({"float_layers": count, "metric": mean, "metric_min": worst, "passed": passed,
                             "seconds": round(time.monotonic() - began, 2)})
        if passed and (result.float_layers is None or count < len(result.float_layers)):
            result.float_layers, result.metric, result.metric_min = tuple(ranked[:count]), mean, worst
        return passed

    if attempt(0):
        return result
    # low fails; high = every layer float is the FP32 model itself, which passes without being tried
    low, high = 0, len(ranked)
    while high - low > 1:
        if time.monotonic() - start > budget_s:
            result.budget_exhausted = True
            break
        middle = (low + high) // 2
        if attempt(middle):
            high = middle
        else:
            low = middle
    return result


def qdq_evaluator(fp32_onnx: Path, calibration: SampleSet, validation: SampleSet, policy: QuantPolicy,
                  metric_fn: MetricFn, workdir: Path, *, method: str = "minmax") -> Evaluate:
    """An :data:`Evaluate` that quantises ``fp32_onnx`` with the given layers also excluded and scores it
    against FP32 on ``validation`` (the FP32 outputs are computed once)."""
    reference = run_onnx(fp32_onnx, validation)

    def evaluate(keep: tuple[str, ...]) -> tuple[float, float]:
        path = workdir / f"search{len(keep)}.onnx"
        quantize_qdq(fp32_onnx, path, calibration, policy, method=method, exclude=keep)
        scores = [metric_fn(r, o) for r, o in zip(reference, run_onnx(path, validation))]
        return float(np.mean(scores)), float(np.min(scores))

    return evaluate


def single_layer_gain(layers: Sequence[str], evaluate: Evaluate) -> dict[str, float]:
    """The mean-metric gain of keeping each layer alone in float (one quantisation per layer), by
    name, largest first: slower than :func:`layer_sensitivity`, but on animevideov3 it is the ranking
    that finds the layers worth keeping (``docs/int8_mixed_precision.md``)."""
    base, _ = evaluate(())
    gains = {name: evaluate((name,))[0] - base for name in layers}
    return dict(sorted(gains.items(), key=lambda item: -item[1]))
