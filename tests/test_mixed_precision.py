"""Accuracy-driven mixed precision (kvqe.calibration.mixed_precision): the bisection on a synthetic
evaluator, and the search on realesr-animevideov3 with photos no policy or other test uses."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support import photo_crops

from kvqe.calibration.accuracy import SrImages
from kvqe.calibration.comparison import reference_outputs
from kvqe.calibration.contract import SampleSet
from kvqe.calibration.gates import Gate
from kvqe.calibration.mixed_precision import (
    Evaluate,
    Outcome,
    layer_sensitivity,
    qdq_evaluator,
    search_float_layers,
    single_layer_gain,
)
from kvqe.calibration.ort_quant import QdqCalibration
from kvqe.calibration.policy import POLICIES
from kvqe.calibration.tasks import SR as SR_TASK
from kvqe.export.onnx_export import OnnxExportSpec, export_onnx
from kvqe.models.registry import get_model
from kvqe.runtimes import create_runner

SR = "realesr-animevideov3"


def _crops(names: list[str], per_image: int, seed: int, size: int = 64) -> SampleSet:
    return photo_crops(names, per_image, seed, size, SR)


def test_search_finds_the_smallest_passing_prefix() -> None:
    ranked = [f"conv{i}" for i in range(16)]
    calls: list[int] = []

    # each float layer among the first five adds 1 dB; the worst sample trails the mean by 2 dB
    def judge(gate: float, gate_min: float) -> Evaluate:
        def evaluate(keep: tuple[str, ...]) -> Outcome:
            calls.append(len(keep))
            mean = 30.0 + sum(1.0 for name in keep if int(name[4:]) < 5)
            return mean >= gate and mean - 2.0 >= gate_min, {"psnr": mean, "psnr_min": mean - 2.0}
        return evaluate

    result = search_float_layers(ranked, judge(33.0, 31.0), budget_s=60.0)
    assert result.float_layers == ("conv0", "conv1", "conv2")
    assert result.figures == {"psnr": 33.0, "psnr_min": 31.0}
    assert len(result.steps) == 1 + int(np.log2(16)) and not result.steps[0]["passed"]
    # the worst-sample gate alone can fail a step whose mean passes
    strict = search_float_layers(ranked, judge(33.0, 32.0), budget_s=60.0)
    assert strict.float_layers is not None and len(strict.float_layers) == 4
    # no budget: only the all-int8 point is tried, and nothing passed
    spent = search_float_layers(ranked, judge(33.0, 31.0), budget_s=0.0)
    assert spent.budget_exhausted and len(spent.steps) == 1 and spent.float_layers is None
    # a known baseline is recorded, not evaluated again
    calls.clear()
    known = search_float_layers(ranked, judge(33.0, 31.0), 60.0, baseline=(False, {"psnr": 30.0, "psnr_min": 28.0}))
    assert 0 not in calls and known.steps[0]["figures"]["psnr"] == 30.0 and known.float_layers == result.float_layers
    record = result.record({name: -20.0 + i for i, name in enumerate(ranked)})
    assert record["float_layers"] == ["conv0", "conv1", "conv2"] and record["scores"]["conv2"] == -18.0
    # the gain ranking stops at its deadline and orders what it measured
    base = (False, {"psnr": 30.0})
    gains = single_layer_gain(ranked[:8], judge(33.0, 31.0), "psnr", base)
    assert list(gains)[:5] == sorted(ranked[:5]) and gains["conv0"] == 1.0 and gains["conv7"] == 0.0
    assert single_layer_gain(ranked, judge(33.0, 31.0), "psnr", base, deadline=0.0) == {}
    # a metric where lower is better (max_abs): a drop is the gain
    errors = single_layer_gain(ranked[:8], lambda keep: (False, {"max_abs": 5.0 - len(keep) * (keep[0] == "conv3")}),
                               "max_abs", (False, {"max_abs": 5.0}), higher_is_better=False)
    assert next(iter(errors)) == "conv3" and errors["conv3"] == 1.0


@pytest.mark.e2e
def test_search_reaches_a_gate_the_policy_misses(tmp_path: Path) -> None:
    entry = get_model(SR)
    module = entry.factory().eval()
    entry.load_weights(module, {})
    fp32 = tmp_path / "model.fp32.onnx"
    example = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    export_onnx(module, OnnxExportSpec.from_card(entry.card), example, fp32)
    calibration = _crops(["immunohistochemistry", "hubble_deep_field", "retina"], 4, seed=2)
    validation = _crops(["grass", "gravel", "camera"], 3, seed=3)
    comparator = SrImages(validation, entry.card.output)
    with create_runner("onnxruntime", fp32) as runner:
        reference = reference_outputs(runner, validation.inputs(), comparator)
    with QdqCalibration(fp32, calibration, POLICIES["conv-sr"]) as calibrated:
        release = qdq_evaluator(calibrated, validation, comparator, reference, SR_TASK.gates("int8"), tmp_path)
        passed, base = release(())
        assert passed and base["psnr"] >= 35.0  # the policy alone passes the release gates on unseen photos
        qdq = tmp_path / "all.onnx"
        calibrated.quantize(qdq)
        ranking = layer_sensitivity(calibrated, qdq, calibration)
        int8_convs = len(ranking)
        assert int8_convs == len(calibrated.candidates) >= 10 and all(np.isfinite(v) for v in ranking.values())
        # gates 1.5 dB (mean) and 1 dB (worst) above what the policy reaches: a few layers must stay float
        gates = (Gate("psnr", ">=", base["psnr"] + 1.5), Gate("psnr_min", ">=", base["psnr_min"] + 1.0))
        evaluate = qdq_evaluator(calibrated, validation, comparator, reference, gates, tmp_path)
        baseline = evaluate(())
        assert not baseline[0]
        gains = single_layer_gain(calibrated.candidates, evaluate, "psnr", baseline)
        result = search_float_layers(list(gains), evaluate, budget_s=600.0, baseline=baseline)
        assert result.float_layers is not None and not result.budget_exhausted and result.figures is not None
        assert result.figures["psnr"] >= gates[0].threshold and result.figures["psnr_min"] >= gates[1].threshold
        assert 0 < len(result.float_layers) <= int8_convs // 2  # most of the trunk stays int8
        # the ranking matters: as many of the least helpful layers kept float gain clearly less
        _, least = evaluate(tuple(list(gains)[-len(result.float_layers):]))
        assert least["psnr"] < result.figures["psnr"] - 0.5
        # the chosen model, written again from the same ranges, is the one the search measured
        chosen = tmp_path / "chosen.onnx"
        record = calibrated.quantize(chosen, result.float_layers)
        assert set(result.float_layers) <= set(record["float_nodes"])
        with create_runner("onnxruntime", chosen) as runner:
            again = [comparator.read(runner, x) for x in validation.inputs()]
        assert comparator.overall(again, reference)["psnr"] == pytest.approx(result.figures["psnr"], abs=1e-9)
    print(f"least {least['psnr']:.2f} dB; base {base['psnr']:.2f}/{base['psnr_min']:.2f} dB; float "
          f"{len(result.float_layers)}/{int8_convs}: {result.figures['psnr']:.2f}/{result.figures['psnr_min']:.2f} dB; "
          f"steps {result.steps}")
