"""The INT8 search of an export: when the policy's INT8 model misses its gates on the validation set, keep
the fewest layers float that make it pass (:mod:`kvqe.calibration.mixed_precision`), within
``--search-budget`` seconds.

It runs once per quantised graph, on ONNX Runtime's QDQ model (the model every INT8 artifact is made from
or, for NNCF's OpenVINO INT8, quantised like), before any INT8 artifact is built. Every INT8 artifact of
the graph then keeps the same layers float, and each is still gated on its own backend. Up to
:data:`GAIN_RANKING_MAX_LAYERS` candidate layers are ranked by measuring each one's gain; more are ranked by
the noise each adds (one FP32 and one int8 run), which a model with hundreds of layers can afford.
"""
from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kvqe.calibration.comparison import Comparator
from kvqe.calibration.contract import SampleSet
from kvqe.calibration.gates import Gate
from kvqe.calibration.mixed_precision import (
    layer_sensitivity,
    qdq_evaluator,
    search_float_layers,
    single_layer_gain,
)
from kvqe.export.artifacts import BuildContext

GAIN_RANKING_MAX_LAYERS = 32
NSR_RANKING_SAMPLES = 8  # calibration samples the noise ranking runs on
DEFAULT_BUDGET_S = 900.0


def _figures(figures: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in sorted(figures.items()) if isinstance(v, float))


def _ranking(ctx: BuildContext, evaluate: Callable[[tuple[str, ...]], Any], gates: Sequence[Gate],
             baseline: Any, deadline: float, workdir: Path) -> tuple[str, dict[str, float], list[str]]:
    """(how the layers were ranked, their scores, the ranked names: layers the budget left unscored last)."""
    calibrated = ctx.qdq_calibration()
    candidates = calibrated.candidates
    if len(candidates) <= GAIN_RANKING_MAX_LAYERS:
        metric = gates[0].metric
        gains = single_layer_gain(candidates, evaluate, metric, baseline, deadline)
        return (f"single-layer gain in {metric}", gains,
                [*gains, *(name for name in candidates if name not in gains)])
    qdq = workdir / "policy.int8.onnx"
    calibrated.quantize(qdq)
    samples = ctx.require_calibration()
    count = min(len(samples), NSR_RANKING_SAMPLES)
    subset = SampleSet(samples.images[:count], samples.groups[:count], samples.sources, samples.input_spec,
                       samples.feed)
    scores = layer_sensitivity(calibrated, qdq, subset)
    return f"noise added (NSR dB, {count} calibration samples)", scores, list(scores)


def search_stage(ctx: BuildContext, validation: SampleSet, comparator: Comparator, reference: list[Any],
                 gates: Sequence[Gate], budget_s: float, progress: Callable[[str], None]) -> dict[str, Any]:
    """Decide ``ctx.float_layers`` for the graph of ``ctx`` (set when a passing choice is found) and return
    the manifest record: the policy's own figures, the ranking, the layers kept float with their scores,
    every step tried, and the time spent."""
    started = time.monotonic()
    deadline = started + budget_s
    calibrated = ctx.qdq_calibration()
    record: dict[str, Any] = {
        "runs_on": "onnxruntime (QDQ model)", "search_set": f"validation set, {len(validation)} samples",
        "gates": [str(g) for g in gates], "budget_s": budget_s, "candidates": len(calibrated.candidates)}
    with tempfile.TemporaryDirectory(prefix="kvqe-search-") as tmp:
        evaluate = qdq_evaluator(calibrated, validation, comparator, reference, gates, Path(tmp))
        progress(f"int8 search: the {ctx.policy.name} policy's INT8 on {len(validation)} validation samples")
        baseline = evaluate(())
        record["policy_figures"] = {k: v for k, v in baseline[1].items() if isinstance(v, float)}
        if baseline[0]:
            progress(f"int8 search: the policy alone passes ({_figures(baseline[1])}); no layer kept float")
            return {**record, "searched": False, "float_layers": [], "passed": True,
                    "seconds": round(time.monotonic() - started, 1)}
        if budget_s <= 0:
            return {**record, "searched": False, "float_layers": [], "passed": False,
                    "seconds": round(time.monotonic() - started, 1)}
        progress(f"int8 search: the policy misses its gates ({_figures(baseline[1])}); ranking "
                 f"{len(calibrated.candidates)} int8 layers")
        method, scores, ranked = _ranking(ctx, evaluate, gates, baseline, deadline, Path(tmp))
        result = search_float_layers(ranked, evaluate, max(0.0, deadline - time.monotonic()), baseline=baseline)
    if result.float_layers is not None:
        ctx.float_layers = result.float_layers
        progress(f"int8 search: {len(result.float_layers)} of {len(ranked)} layers kept float pass "
                 f"({_figures(result.figures or {})}) after {len(result.steps)} steps")
    else:
        progress(f"int8 search: no tried choice passed within {budget_s:g} s; the policy's INT8 is kept")
    return {**record, "searched": True, "ranking": method, **result.record(scores),
            "seconds": round(time.monotonic() - started, 1)}
