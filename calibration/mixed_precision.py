"""Accuracy-driven mixed precision: keep the fewest quantised layers in float that make a QDQ model pass
its gates on a validation set.

Two steps. A ranking orders the int8 layers by how much keeping each one float would help:
:func:`single_layer_gain` measures it (one evaluation per layer, what NNCF's accuracy control does too),
:func:`layer_sensitivity` estimates it from one FP32 run and one int8 run (how much each op raises the
noise-to-signal ratio from its input to its output), cheap enough for models with hundreds of layers.
Then :func:`search_float_layers` bisects over the ranked list for the shortest prefix kept float that
passes, within a time budget, recording every step. An evaluation quantises with ranges calibrated once
(:class:`~kvqe.calibration.ort_quant.QdqCalibration`). Everything here works on its own files: calls on
different models may run in different threads.
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

from kvqe.calibration.comparison import Comparator, compare_runs
from kvqe.calibration.contract import SampleSet
from kvqe.calibration.gates import Gate
from kvqe.calibration.ort_quant import QdqCalibration
from kvqe.runtimes import create_runner

# what evaluating a set of float layers gives: (every gate passed, the figures)
Outcome = tuple[bool, dict[str, Any]]
# (layer names kept float on top of the policy's) -> the outcome of the model quantised that way
Evaluate = Callable[[tuple[str, ...]], Outcome]


@dataclass
class SearchResult:
    """Outcome of :func:`search_float_layers`: the chosen float layers (``None`` when no step passed
    within the budget), the figures of that choice and every step tried. Not shared between threads."""

    float_layers: tuple[str, ...] | None
    figures: dict[str, Any] | None
    steps: list[dict[str, Any]] = field(default_factory=list)
    budget_exhausted: bool = False

    def record(self, scores: dict[str, float]) -> dict[str, Any]:
        """The manifest record: chosen layers with their ranking scores, and the trajectory."""
        layers = list(self.float_layers or ())
        return {"float_layers": layers, "scores": {name: scores.get(name) for name in layers},
                "figures": self.figures, "passed": self.float_layers is not None,
                "budget_exhausted": self.budget_exhausted, "steps": self.steps}


def _figures(figures: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}


def search_float_layers(ranked: Sequence[str], evaluate: Evaluate, budget_s: float, *,
                        baseline: Outcome | None = None) -> SearchResult:
    """The shortest prefix of ``ranked`` (most helpful first) kept float whose evaluation passes:
    bisection over the prefix length, which assumes more float layers never hurt. ``baseline``: the
    outcome of no extra float layer when already known (it is not evaluated again). Stops once
    ``budget_s`` seconds are spent and keeps the best passing prefix tried (``float_layers`` is ``None``
    when none passed). Every layer float is the FP32 model itself, which is taken to pass untried."""
    start = time.monotonic()
    result = SearchResult(None, None)

    def attempt(count: int, known: Outcome | None = None) -> bool:
        began = time.monotonic()
        passed, figures = known if known is not None else evaluate(tuple(ranked[:count]))
        result.steps.append({"float_layers": count, "figures": _figures(figures), "passed": passed,
                             "seconds": round(time.monotonic() - began, 2)})
        if passed and (result.float_layers is None or count < len(result.float_layers)):
            result.float_layers, result.figures = tuple(ranked[:count]), figures
        return passed

    if attempt(0, baseline):
        return result
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


def single_layer_gain(layers: Sequence[str], evaluate: Evaluate, metric: str, baseline: Outcome,
                      deadline: float = float("inf"), *, higher_is_better: bool = True) -> dict[str, float]:
    """How much ``metric`` improves over ``baseline`` when each layer alone is kept float (one
    evaluation per layer; a drop counts as the gain when lower is better, e.g. ``max_abs``), by name,
    largest first. Layers not reached before ``deadline`` (``time.monotonic()``) are left out."""
    base, sign = float(baseline[1][metric]), 1.0 if higher_is_better else -1.0
    gains: dict[str, float] = {}
    for name in layers:
        if time.monotonic() > deadline:
            break
        gains[name] = sign * (float(evaluate((name,))[1][metric]) - base)
    return dict(sorted(gains.items(), key=lambda item: -item[1]))


def _exposed(model_path: Path, names: Sequence[str], out: Path) -> None:
    model = onnx.load(str(model_path))
    present = {o.name for o in model.graph.output}
    for name in names:
        if name not in present:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
    onnx.save(model, str(out))


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # no graph fusion: the QDQ model's op outputs must stay the tensors they name
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def layer_sensitivity(calibrated: QdqCalibration, qdq_onnx: Path, samples: SampleSet) -> dict[str, float]:
    """How much each int8 op of ``qdq_onnx`` (``calibrated``'s model with no extra float layer) raises the
    noise-to-signal ratio (dB, against the FP32 model on ``samples``) from its input to its output, by
    node name, largest first. Sample by sample, so memory holds one sample's activations."""
    fp32 = onnx.load(str(calibrated.source))
    wanted = set(calibrated.candidates)
    nodes = [(n.name, n.input[0], n.output[0]) for n in fp32.graph.node if n.name in wanted]
    graph_inputs = {i.name for i in fp32.graph.input}
    del fp32
    tensors = sorted({t for _, a, b in nodes for t in (a, b) if t not in graph_inputs})
    noise, signal = np.zeros(len(tensors)), np.zeros(len(tensors))
    with tempfile.TemporaryDirectory(prefix="kvqe-sens-") as tmp:
        ref_path, q_path = Path(tmp) / "ref.onnx", Path(tmp) / "q.onnx"
        _exposed(calibrated.source, tensors, ref_path)
        _exposed(qdq_onnx, tensors, q_path)
        reference, quantised = _session(ref_path), _session(q_path)
        feed = reference.get_inputs()[0].name
        for x in samples.inputs():
            for i, (r, q) in enumerate(zip(reference.run(tensors, {feed: x}), quantised.run(tensors, {feed: x}))):
                noise[i] += float(np.sum((np.asarray(r, np.float64) - q) ** 2))
                signal[i] += float(np.sum(np.asarray(r, np.float64) ** 2))
    position = {tensor: index for index, tensor in enumerate(tensors)}

    def nsr(tensor: str) -> float:
        if tensor not in position:  # the graph input: no noise upstream
            return -200.0
        i = position[tensor]
        return 10.0 * float(np.log10(max(noise[i], 1e-20) / max(signal[i], 1e-20)))

    # the noise a layer adds, not the noise it inherits: output NSR above input NSR (dB)
    scores = {name: nsr(out) - nsr(inp) for name, inp, out in nodes}
    return dict(sorted(scores.items(), key=lambda item: -item[1]))


def qdq_evaluator(calibrated: QdqCalibration, validation: SampleSet, comparator: Comparator, reference: list[Any],
                  gates: Sequence[Gate], workdir: Path) -> Evaluate:
    """An :data:`Evaluate` that quantises ``calibrated`` with the given layers also float and judges it on
    ONNX Runtime against ``reference`` (the FP32 outputs of ``validation`` as ``comparator`` reads them)."""
    def evaluate(keep: tuple[str, ...]) -> Outcome:
        path = workdir / "search.int8.onnx"
        calibrated.quantize(path, keep)
        result = compare_runs(create_runner("onnxruntime", path), reference, validation.inputs(), comparator, gates)
        return not result.gate_failures, result.figures

    return evaluate
