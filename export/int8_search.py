"""The INT8 search of an export: when the policy's INT8 model misses its gates on the validation set, keep
the fewest layers float that make it pass (:mod:`kvqe.calibration.mixed_precision`), within
``--search-budget`` seconds.

It runs once per INT8 source of a graph, before that source's artifacts are built, on the backends of the
requested artifacts made from it that run here (a choice passes when every one of them passes): the QDQ
ONNX (ONNX Runtime, and the TensorRT engine and, where the policy says so, the OpenVINO IR made from it,
which all keep the same layers float) and NNCF's OpenVINO INT8 (its own calibration, so its own choice).
Each artifact is still gated on its own backend afterwards, on the comparison the search made when the
artifact built is the one it judged, byte for byte (``compared``, keyed by :func:`artifact_key`). Up
to :data:`GAIN_RANKING_MAX_LAYERS` candidate layers are ranked by measuring each one's gain; more are
ranked by the noise each adds in the QDQ model (one FP32 and one int8 run), which a model with hundreds of
layers can afford.
"""
from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import onnx

from kvqe.calibration.comparison import Comparator, RunComparison, compare_runs
from kvqe.calibration.contract import SampleSet
from kvqe.calibration.gates import Gate
from kvqe.calibration.mixed_precision import (
    Evaluate,
    Outcome,
    layer_sensitivity,
    search_float_layers,
    single_layer_gain,
)
from kvqe.calibration.policy import int8_layers
from kvqe.export.artifacts import BuildContext, BuiltArtifact
from kvqe.files import sha256_file
from kvqe.runtimes import create_runner

GAIN_RANKING_MAX_LAYERS = 32
NSR_RANKING_SAMPLES = 8  # calibration samples the noise ranking runs on
DEFAULT_BUDGET_S = 900.0
POLICY_QDQ = "policy.qdq.onnx"  # the policy's own QDQ model, in the search's work folder
Build = Callable[[BuildContext], BuiltArtifact]  # the INT8 artifact of a build context
Compared = dict[tuple[str, ...], RunComparison]  # comparisons made, by the artifact's content (artifact_key)


def artifact_key(files: Sequence[Path]) -> tuple[str, ...]:
    """An artifact's content: the sha256 of each of its files, in order (their names and folders aside)."""
    return tuple(sha256_file(path) for path in files)


def _figures(figures: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in sorted(figures.items()) if isinstance(v, float))


def _margin(gate: Gate, figures: dict[str, Any]) -> float:
    value = float(figures.get(gate.metric, float("nan")))
    margin = value - gate.threshold if gate.op in (">=", ">") else gate.threshold - value
    return float("-inf") if math.isnan(margin) else margin  # an undefined figure binds


def artifact_evaluator(ctx: BuildContext, source: str, builds: dict[str, Build], validation: SampleSet,
                       comparator: Comparator, reference: list[Any], gates: Sequence[Gate], workdir: Path,
                       compared: Compared | None = None) -> Evaluate:
    """An :data:`Evaluate` that builds the INT8 artifact of every format in ``builds`` (they share the INT8
    ``source``) into ``workdir`` with the given layers also float, and judges each on its backend against
    ``reference``: a choice passes when all pass; the figures are those of the backend with the least
    margin on the first gate (named under ``backend`` when there are several). Each comparison is kept in
    ``compared`` under the artifact's content."""
    def evaluate(keep: tuple[str, ...]) -> Outcome:
        variant = replace(ctx, stage=workdir, built={}, records={}, float_layers={**ctx.float_layers, source: keep})
        outcomes: dict[str, Outcome] = {}
        for fmt, build in builds.items():
            built = build(variant)
            runner = create_runner(built.backend, built.files[0], **built.runtime)
            result = compare_runs(runner, reference, validation.inputs(), comparator, gates)
            if compared is not None:
                compared[artifact_key(built.files)] = result
            outcomes[fmt] = not result.gate_failures, result.figures
        binding = min(outcomes, key=lambda fmt: _margin(gates[0], outcomes[fmt][1]))
        figures = outcomes[binding][1] if len(outcomes) == 1 else {**outcomes[binding][1], "backend": binding}
        return all(passed for passed, _ in outcomes.values()), figures

    return evaluate


def _ranking(ctx: BuildContext, candidates: Sequence[str], evaluate: Evaluate, gate: Gate, baseline: Outcome,
             deadline: float, workdir: Path) -> tuple[str, dict[str, float], list[str]]:
    """(how the layers were ranked, their scores, the ranked names: layers the budget left unscored last)."""
    if len(candidates) <= GAIN_RANKING_MAX_LAYERS:
        metric = gate.metric
        gains = single_layer_gain(candidates, evaluate, metric, baseline, deadline,
                                  higher_is_better=gate.op in (">=", ">"))
        return (f"single-layer gain in {metric}", gains,
                [*gains, *(name for name in candidates if name not in gains)])
    calibrated = ctx.qdq_calibration()
    qdq = workdir / POLICY_QDQ
    if not qdq.is_file():
        calibrated.quantize(qdq)
    samples = ctx.require_calibration()
    count = min(len(samples), NSR_RANKING_SAMPLES)
    subset = SampleSet(samples.images[:count], samples.groups[:count], samples.sources, samples.input_spec,
                       samples.feed)
    wanted = set(candidates)  # the QDQ model ranks all its int8 layers; the source may offer fewer
    scores = {name: noise for name, noise in layer_sensitivity(calibrated, qdq, subset).items() if name in wanted}
    return f"noise added in the QDQ model (NSR dB, {count} calibration samples)", scores, list(scores)


def search_int8(ctx: BuildContext, builds: dict[str, Build], validation: SampleSet, comparator: Comparator,
                reference: list[Any], gates: Sequence[Gate], budget_s: float,
                progress: Callable[[str], None], compared: Compared | None = None) -> dict[str, Any]:
    """Decide ``ctx.float_layers`` for the INT8 source the formats of ``builds`` share (set when a passing
    choice is found) and return the manifest record: the policy's own figures, the ranking, the layers kept
    float with their scores, every step tried, and the time spent (the calibration every INT8 artifact needs
    anyway is not counted). Every comparison made goes into ``compared`` (see :func:`artifact_evaluator`)."""
    fmt = ", ".join(builds)
    source = ctx.int8_source(next(iter(builds)))
    candidates = int8_layers(onnx.load(str(ctx.fp32_onnx), load_external_data=False), ctx.policy)
    record: dict[str, Any] = {
        "int8_source": source, "runs_on": fmt, "search_set": f"validation set, {len(validation)} samples",
        "gates": [str(g) for g in gates], "budget_s": budget_s, "candidates": len(candidates)}
    with tempfile.TemporaryDirectory(prefix="kvqe-search-") as tmp:
        if source == "qdq":  # calibrated once, before the clock starts: every variant reuses the ranges
            ctx.qdq_calibration().quantize(Path(tmp) / POLICY_QDQ)
        started = time.monotonic()
        deadline = started + budget_s
        evaluate = artifact_evaluator(ctx, source, builds, validation, comparator, reference, gates, Path(tmp),
                                      compared)
        progress(f"int8 search ({source}): the {ctx.policy.name} policy's INT8 on {fmt}, {len(validation)} "
                 "validation samples")
        baseline = evaluate(())
        record["policy_figures"] = {k: v for k, v in baseline[1].items() if isinstance(v, float)}
        if baseline[0] or budget_s <= 0:
            progress(f"int8 search ({source}): the policy alone {'passes' if baseline[0] else 'misses'} "
                     f"({_figures(baseline[1])}); no layer kept float")
            return {**record, "searched": False, "float_layers": [], "passed": baseline[0],
                    "seconds": round(time.monotonic() - started, 1)}
        if source == "nncf":  # only layers OpenVINO's conversion keeps as such are NNCF's to keep float
            from kvqe.export.openvino_export import quantisable_names

            present = quantisable_names(ctx.fp32_onnx, ctx.policy)
            candidates = [name for name in candidates if name in present]
            record["candidates"] = len(candidates)
        missed = next((gate for gate in gates if not gate(baseline[1])), gates[0])  # the gate ranking serves
        progress(f"int8 search ({source}): the policy misses its gates ({_figures(baseline[1])}); ranking "
                 f"{len(candidates)} int8 layers")
        method, scores, ranked = _ranking(ctx, candidates, evaluate, missed, baseline, deadline, Path(tmp))
        result = search_float_layers(ranked, evaluate, max(0.0, deadline - time.monotonic()), baseline=baseline)
    if result.float_layers is not None:
        ctx.float_layers[source] = result.float_layers
        progress(f"int8 search ({source}): {len(result.float_layers)} of {len(ranked)} layers kept float pass "
                 f"({_figures(result.figures or {})}) after {len(result.steps)} steps")
    else:
        progress(f"int8 search ({source}): no tried choice passed within {budget_s:g} s; the policy's INT8 is kept")
    return {**record, "searched": True, "ranking": method, **result.record(scores),
            "seconds": round(time.monotonic() - started, 1)}
