"""Accuracy-driven mixed-precision INT8, two ways, on realesr-animevideov3 (issue #28):

(a) kvqe's own search (:mod:`kvqe.calibration.mixed_precision`): single-layer-gain ranking, then bisection
    for the shortest ranked prefix kept float that passes a mean and a worst-sample PSNR gate; ONNX Runtime
    QDQ, scored against ONNX Runtime FP32;
(b) NNCF's ``quantize_with_accuracy_control`` (:mod:`kvqe.export.openvino_accuracy_control`) with ``max_drop``
    set so that it targets the same mean PSNR, and
    again with the same +1.5 dB margin over NNCF's own plain INT8; OpenVINO IR, scored against the OpenVINO FP32 IR (f32).

The gate is the one the plain ``conv-sr`` policy misses on the search set: its ONNX Runtime INT8 mean + 1.5 dB
and worst + 1.0 dB. Each row: float layers kept out of the int8 candidates, PSNR mean/worst on the search set
and on an unseen test set of other photos, seconds, and the INT8 / FP32 latency on the same backend (median
of interleaved runs on one 128x128 input). realesrgan-x4plus is not run: see docs/int8_nncf_comparison.md.
``--smoke``: the same steps on one 32x32 crop per photo, one round, each search cut short, to check that the
script runs (its figures mean nothing).

Usage: python bench/int8_search_vs_nncf.py [--rounds N] [--workdir DIR] [--smoke]
"""
from __future__ import annotations

import argparse
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import openvino as ov
from _common import interleaved, print_machine, table  # bench/ is on sys.path when a script of it runs

from kvqe.calibration.accuracy import SrImages
from kvqe.calibration.comparison import reference_outputs
from kvqe.calibration.contract import SampleSet
from kvqe.calibration.gates import Gate
from kvqe.calibration.mixed_precision import (
    qdq_evaluator,
    search_float_layers,
    single_layer_gain,
)
from kvqe.calibration.ort_quant import QdqCalibration, quantize_qdq
from kvqe.calibration.policy import POLICIES
from kvqe.calibration.sensitivity import image_psnr, run_onnx
from kvqe.export.onnx_export import OnnxExportSpec, export_onnx
from kvqe.export.openvino_accuracy_control import quantize_ir_with_accuracy_control
from kvqe.export.openvino_export import quantize_int8_ir
from kvqe.models.registry import get_model
from kvqe.runtimes import create_runner

MODEL = "realesr-animevideov3"
CALIBRATION = ("rocket", "astronaut", "coffee")  # 4 crops each
SEARCH = ("brick", "coins", "clock")  # 3 crops each: the set both methods tune on
TEST = ("cat", "moon", "page")  # 3 crops each: neither method sees these
CEILING = 60.0
F32 = {"INFERENCE_PRECISION_HINT": "f32"}


@dataclass(frozen=True)
class Scale:
    """How much a run measures: crops per photo (calibration, search, test) and their size, the latency
    input's size, the seconds (a) spends ranking layers and bisecting, and (b)'s revert steps (None: NNCF's
    default, as many as there are quantised layers)."""

    per_image: tuple[int, int, int]
    crop: int
    latency_size: int
    ranking_s: float
    search_s: float
    nncf_iterations: int | None


FULL = Scale((4, 3, 3), 64, 128, math.inf, 600.0, None)
SMOKE = Scale((1, 1, 1), 32, 32, 5.0, 5.0, 1)


def crops(names: tuple[str, ...], per_image: int, seed: int, size: int) -> SampleSet:
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
    return SampleSet(np.stack(images), np.arange(len(images)), tuple(sources), get_model(MODEL).card.input)


def ov_outputs(path: Path, samples: SampleSet) -> list[np.ndarray]:
    compiled = ov.Core().compile_model(str(path), "CPU", F32)
    return [np.asarray(compiled(x)[compiled.output(0)]) for x in samples.inputs()]


def scores(reference: list[np.ndarray], outputs: list[np.ndarray]) -> tuple[float, float]:
    values = [image_psnr((0.0, 1.0))(r, o) for r, o in zip(reference, outputs)]
    return float(np.mean(values)), float(np.min(values))


def latency_ratio(fp32: Path, int8: Path, backend: str, rounds: int, size: int) -> float:
    """INT8 / FP32 median seconds on one ``size`` x ``size`` input, the two runs interleaved."""
    x = np.random.default_rng(1).random((1, 3, size, size), dtype=np.float32)
    if backend == "onnxruntime":
        sessions = {k: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for k, p in
                    (("fp32", fp32), ("int8", int8))}
        cases = {k: (lambda s=s: s.run(None, {s.get_inputs()[0].name: x})) for k, s in sessions.items()}
    else:
        compiled = {k: ov.Core().compile_model(str(p), "CPU", F32) for k, p in (("fp32", fp32), ("int8", int8))}
        cases = {k: (lambda c=c: c(x)) for k, c in compiled.items()}
    medians = interleaved(cases, rounds)
    return medians["int8"] / medians["fp32"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds per latency case")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the models here (default: a temp dir)")
    parser.add_argument("--smoke", action="store_true", help="tiny sets, one round, short searches: does it run?")
    args = parser.parse_args()
    scale, rounds = (SMOKE, 1) if args.smoke else (FULL, args.rounds)
    print_machine()
    with tempfile.TemporaryDirectory(prefix="kvqe-bench-int8-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        entry = get_model(MODEL)
        module = entry.factory().eval()
        entry.load_weights(module, {})
        fp32 = work / "model.fp32.onnx"
        export_onnx(module, OnnxExportSpec.from_card(entry.card),
                    np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32), fp32)
        policy = POLICIES["conv-sr"]
        calibration, search, test = (crops(names, count, seed, scale.crop) for names, count, seed in
                                     zip((CALIBRATION, SEARCH, TEST), scale.per_image, (11, 12, 13)))
        ort_ref = {"search": run_onnx(fp32, search), "test": run_onnx(fp32, test)}
        ov_ref = {"search": ov_outputs(fp32, search), "test": ov_outputs(fp32, test)}
        rows = []

        # plain policy, both backends
        plain_qdq, plain_ir = work / "plain.qdq.onnx", work / "plain.int8.xml"
        quantize_qdq(fp32, plain_qdq, calibration, policy)
        quantize_int8_ir(fp32, plain_ir, calibration, policy)
        plain_ort = scores(ort_ref["search"], run_onnx(plain_qdq, search))
        gate, gate_min = plain_ort[0] + 1.5, plain_ort[1] + 1.0
        calibrated = QdqCalibration(fp32, calibration, policy)
        candidates = len(calibrated.candidates)
        for name, path, backend, ref, run in (
                ("plain conv-sr (ORT QDQ)", plain_qdq, "onnxruntime", ort_ref, run_onnx),
                ("plain conv-sr (OpenVINO NNCF)", plain_ir, "openvino", ov_ref, ov_outputs)):
            s, t = scores(ref["search"], run(path, search)), scores(ref["test"], run(path, test))
            rows.append([name, f"0/{candidates}", *s, *t, "-",
                         latency_ratio(fp32, path, backend, rounds, scale.latency_size)])

        # (a) kvqe's search: ranges calibrated once, every layer's gain measured, then bisection
        began = time.monotonic()
        comparator = SrImages(search, entry.card.output)
        with create_runner("onnxruntime", fp32) as runner:
            reference = reference_outputs(runner, search.inputs(), comparator)
        gates = (Gate("psnr", ">=", gate), Gate("psnr_min", ">=", gate_min))
        evaluate = qdq_evaluator(calibrated, search, comparator, reference, gates, work)
        baseline = evaluate(())
        gains = single_layer_gain(calibrated.candidates, evaluate, "psnr", baseline, began + scale.ranking_s)
        result = search_float_layers(list(gains), evaluate, scale.search_s, baseline=baseline)
        searched = time.monotonic() - began
        keep = result.float_layers or ()
        chosen = work / "search.qdq.onnx"
        calibrated.quantize(chosen, keep)
        calibrated.close()
        rows.append(["(a) kvqe search (ORT QDQ)", f"{len(keep)}/{candidates}",
                     *scores(ort_ref["search"], run_onnx(chosen, search)),
                     *scores(ort_ref["test"], run_onnx(chosen, test)), round(searched, 1),
                     latency_ratio(fp32, chosen, "onnxruntime", rounds, scale.latency_size)])

        # (b) NNCF accuracy control: the same mean gate, then the same +1.5 dB margin over NNCF's own plain INT8
        own_gate = scores(ov_ref["search"], ov_outputs(plain_ir, search))[0] + 1.5
        records = {}
        for label, target in (("same mean gate", gate), ("own plain + 1.5 dB", own_gate)):
            ir = work / f"nncf_ac_{len(records)}.int8.xml"
            record = records[label] = quantize_ir_with_accuracy_control(
                fp32, ir, calibration, search, policy, image_psnr((0.0, 1.0)), CEILING - target,
                budget_iterations=scale.nncf_iterations, ceiling=CEILING)
            rows.append([f"(b) NNCF accuracy control, {label} {target:.2f} dB",
                         f"{len(record['reverted_to_float'])}/{record['int8_candidates']}",
                         *scores(ov_ref["search"], ov_outputs(ir, search)),
                         *scores(ov_ref["test"], ov_outputs(ir, test)),
                         record["seconds"], latency_ratio(fp32, ir, "openvino", rounds, scale.latency_size)])

        print(f"\ngate (search set): mean >= {gate:.2f} dB, worst >= {gate_min:.2f} dB "
              f"(NNCF gates the mean only: max_drop {CEILING - gate:.2f} dB below a {CEILING:.0f} dB ceiling)")
        table(f"{MODEL}, calibration {'/'.join(CALIBRATION)}, search {'/'.join(SEARCH)}, test {'/'.join(TEST)} "
              f"({scale.crop}x{scale.crop} crops; PSNR vs FP32 on the same backend)",
              ["method", "float layers", "search mean dB", "search worst dB", "test mean dB", "test worst dB",
               "seconds", "int8/fp32 latency"], rows)
        print(f"\n(a) float: {', '.join(keep) or '-'}; steps: "
              f"{[(s['float_layers'], s['figures']['psnr'], s['passed']) for s in result.steps]}")
        for label, record in records.items():
            reverted = record["reverted_onnx_nodes"]
            print(f"(b) {label}: float {', '.join(reverted) or '-'}; passed {record['passed']}; "
                  f"also float in (a): {', '.join(sorted(set(keep) & set(reverted))) or '-'}")


if __name__ == "__main__":
    main()
