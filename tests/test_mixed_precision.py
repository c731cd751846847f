"""Accuracy-driven mixed precision (kvqe.calibration.mixed_precision): the bisection on a synthetic
evaluator, and the search on realesr-animevideov3 with photos no policy or other test uses."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kvqe.calibration.contract import SampleSet
from kvqe.calibration.mixed_precision import (
    layer_sensitivity,
    qdq_evaluator,
    search_float_layers,
    single_layer_gain,
)
from kvqe.calibration.ort_quant import quantize_qdq
from kvqe.calibration.policy import POLICIES
from kvqe.calibration.sensitivity import image_psnr
from kvqe.export.onnx_export import OnnxExportSpec, export_onnx
from kvqe.models.registry import get_model

SR = "realesr-animevideov3"


def _crops(names: list[str], per_image: int, seed: int, size: int = 64) -> SampleSet:
    import skimage.data

    rng = np.random.default_rng(seed)
    images, sources = [], []
    for name in names:
        photo = getattr(skimage.data, name)()
        photo = np.stack([photo] * 3, -1) if photo.ndim == 2 else photo[..., :3]
        for _ in range(per_image):
            top, left = (int(rng.integers(0, photo.shape[i] - size)) for i in (0, 1))
            images.append(photo[top:top + size, left:left + size])
            sources.append(f"{name}@{top},{left}")
    return SampleSet(np.stack(images), np.arange(len(images)), tuple(sources), get_model(SR).card.input)


def test_search_finds_the_smallest_passing_prefix() -> None:
    ranked = [f"conv{i}" for i in range(16)]
    # each float layer among the first five adds 1 dB; the worst sample trails the mean by 2 dB
    def evaluate(keep: tuple[str, ...]) -> tuple[float, float]:
        mean = 30.0 + sum(1.0 for name in keep if int(name[4:]) < 5)
        return mean, mean - 2.0

    result = search_float_layers(ranked, evaluate, gate=33.0, gate_min=31.0, budget_s=60.0)
    assert result.float_layers == ("conv0", "conv1", "conv2")
    assert result.metric == 33.0 and result.metric_min == 31.0
    assert len(result.steps) == 1 + int(np.log2(16)) and not result.steps[0]["passed"]
    # the worst-sample gate alone can fail a step whose mean passes
    strict = search_float_layers(ranked, evaluate, gate=33.0, gate_min=32.0, budget_s=60.0)
    assert strict.float_layers is not None and len(strict.float_layers) == 4
    # no budget: only the all-int8 point is tried, and nothing passed
    spent = search_float_layers(ranked, evaluate, gate=33.0, gate_min=31.0, budget_s=0.0)
    assert spent.budget_exhausted and len(spent.steps) == 1 and spent.float_layers is None
    record = result.record({name: -20.0 + i for i, name in enumerate(ranked)})
    assert record["float_layers"] == ["conv0", "conv1", "conv2"] and record["sensitivity"]["conv2"] == -18.0


@pytest.mark.e2e
def test_search_reaches_a_gate_the_policy_misses(tmp_path: Path) -> None:
    entry = get_model(SR)
    module = entry.factory().eval()
    entry.load_weights(module, {})
    fp32 = tmp_path / "model.fp32.onnx"
    example = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    export_onnx(module, OnnxExportSpec.from_card(entry.card), example, fp32)
    policy = POLICIES["conv-sr"]
    calibration = _crops(["immunohistochemistry", "hubble_deep_field", "retina"], 4, seed=2)
    validation = _crops(["grass", "gravel", "camera"], 3, seed=3)
    evaluate = qdq_evaluator(fp32, calibration, validation, policy, image_psnr((0.0, 1.0)), tmp_path)
    base_mean, base_min = evaluate(())
    assert base_mean >= 35.0  # the policy alone passes the release gate on unseen photos
    qdq = tmp_path / "all.onnx"
    quantize_qdq(fp32, qdq, calibration, policy)
    ranking = layer_sensitivity(fp32, qdq, calibration, policy)
    int8_convs = len(ranking)
    assert int8_convs >= 10 and all(np.isfinite(v) for v in ranking.values())
    # a gate 1.5 dB above what the policy reaches: the search must keep a few layers float to pass it
    gate, gate_min = base_mean + 1.5, base_min + 1.0
    gains = single_layer_gain(list(ranking), evaluate)
    result = search_float_layers(list(gains), evaluate, gate, gate_min, budget_s=600.0)
    assert result.float_layers is not None and not result.budget_exhausted
    assert result.metric is not None and result.metric >= gate and result.metric_min is not None
    assert 0 < len(result.float_layers) <= int8_convs // 2  # most of the trunk stays int8
    # the ranking matters: as many of the least helpful layers kept float gain clearly less
    least, _ = evaluate(tuple(list(gains)[-len(result.float_layers):]))
    assert least < result.metric - 0.5
    print(f"least {least:.2f} dB; base {base_mean:.2f}/{base_min:.2f} dB; float {len(result.float_layers)}/{int8_convs}: "
          f"{result.metric:.2f}/{result.metric_min:.2f} dB; steps {result.steps}")
