"""One loaded model shared by many threads (issue #23): for every installed backend, 8 threads calling
``score()``, ``enhance()``, a bare runner and a composed SR pipeline on real media give, call for call,
what one thread gets for the same input, bit for bit.

Every backend here is deterministic for a given compiled model and input: ONNX Runtime's CPU kernels do
not depend on which thread calls them, and OpenVINO's infer requests of one compiled model run the same
kernels (measured: zero difference across requests, LATENCY and THROUGHPUT hints alike). So results are
compared with ``==``; a request shared between two calls shows as a wrong number, a wrong shape or an
error. Each thread works on its own input at any moment (thread k, call m: input (k + m) mod n).
"""
from __future__ import annotations

import hashlib
import json
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np
import onnx
import pytest
import skimage.data
from onnx import TensorProto, helper, numpy_helper

import kvqe
from kvqe.bundle import read_bundle
from kvqe.files import ModelFiles
from kvqe.runtimes import Runner, create_runner, is_available
from kvqe.samples import sample_video_path
from kvqe.sdk.loader import embedded_bundle_path
from kvqe.sdk.pipelines.sinsr import RestoreThenSinSR

THREADS = 8
BACKENDS = ["onnxruntime", "openvino", "tensorrt"]
R = TypeVar("R")


# --- running calls from threads --------------------------------------------------------------------------

def hammer(call: Callable[[int], R], count: int, calls: int) -> tuple[list[tuple[int, R]], int]:
    """``THREADS`` threads released together, each making ``calls`` calls ``call(i)`` with i = (k + m) mod
    ``count``; returns every (i, result) and the peak number of calls in flight at once."""
    barrier = threading.Barrier(THREADS)
    lock = threading.Lock()
    active, peak = 0, 0

    def worker(k: int) -> list[tuple[int, R]]:
        nonlocal active, peak
        barrier.wait()
        done = []
        for m in range(calls):
            with lock:
                active += 1
                peak = max(peak, active)
            try:
                done.append(((k + m) % count, call((k + m) % count)))
            finally:
                with lock:
                    active -= 1
        return done

    with ThreadPoolExecutor(THREADS) as pool:
        futures = [pool.submit(worker, k) for k in range(THREADS)]
        results = [pair for future in futures for pair in future.result()]
    return results, peak


def assert_identical(results: list[tuple[int, np.ndarray]], reference: list[np.ndarray], what: str) -> None:
    """Every threaded result equals the single-threaded one for its input, bit for bit."""
    wrong = [(i, _difference(out, reference[i])) for i, out in results if not _equal(out, reference[i])]
    print(f"\n{what}: {len(results)} calls from {THREADS} threads, {len(wrong)} differ from one thread's")
    assert not wrong, f"{what}: {len(wrong)} of {len(results)} calls differ (input, max |diff|): {wrong[:5]}"


def _equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and bool(np.array_equal(a, b))


def _difference(a: np.ndarray, b: np.ndarray) -> float | str:
    if a.shape != b.shape:
        return f"shape {a.shape} != {b.shape}"
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


# --- real media --------------------------------------------------------------------------------------------

def _photo(name: str) -> np.ndarray:
    return cv2.cvtColor(getattr(skimage.data, name)(), cv2.COLOR_RGB2BGR)


def _pan(photo: np.ndarray, frames: int, step: int) -> list[np.ndarray]:
    """A short clip: a 320x180 window panning right over ``photo``."""
    return [np.ascontiguousarray(photo[40:220, 20 + i * step:340 + i * step]) for i in range(frames)]


@pytest.fixture(scope="module")
def vqa_sources() -> list[tuple[Any, float | None]]:
    """Eight different (source, fps) for ``score()``: the sample video (decoded by OpenCV), three clips
    panned over photos (3 keyframes each at fps 2) and four photos."""
    clips: list[tuple[Any, float | None]] = [(str(sample_video_path()), None)]
    clips += [(_pan(_photo(name), 6, step), 2.0) for name, step in (("coffee", 24), ("rocket", 40),
                                                                      ("hubble_deep_field", 16))]
    images = [_photo("astronaut")[60:400, 100:460], _photo("chelsea"), _photo("immunohistochemistry")[:300],
              _photo("colorwheel")]
    return clips + [(image, None) for image in images]


@pytest.fixture(scope="module")
def sr_crops() -> list[np.ndarray]:
    """Eight photo crops of eight different sizes (a request mixed up between callers changes shape)."""
    names = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field",
             "colorwheel", "astronaut")
    return [np.ascontiguousarray(_photo(name)[100 + 3 * i:100 + 3 * i + 24 + 4 * i, 150:150 + 40 - 2 * i])
            for i, name in enumerate(names)]


# --- bundles per backend ----------------------------------------------------------------------------------

def _file_entry(path: Path) -> dict[str, Any]:
    return {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "bytes": path.stat().st_size}


def _openvino_ir(onnx_path: Path, out: Path) -> tuple[list[Path], dict[str, Any], dict[str, Any]]:
    """The FP32 IR of the ONNX model (weights kept in f32), as the bundle writer would list it."""
    import openvino as ov

    xml = out / "model.openvino.fp32.xml"
    ov.save_model(ov.convert_model(str(onnx_path)), str(xml), compress_to_fp16=False)
    return [xml, xml.with_suffix(".bin")], {}, {"inference_precision": "f32"}


def _tensorrt_engine(onnx_path: Path, out: Path, task: str) -> tuple[list[Path], dict[str, Any], dict[str, Any]]:
    """An FP32 engine of the ONNX model with its build record, profiled for this test's inputs."""
    from kvqe.export.tensorrt_build import build_engine

    engine = out / "model.tensorrt.fp32.engine"
    model_input = onnx.load(str(onnx_path), load_external_data=False).graph.input[0]
    name, dims = model_input.name, [d.dim_value for d in model_input.type.tensor_type.shape.dim]
    tile = 64
    profile: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]
    if task == "sr":  # a tile plus 10 context pixels per side, down to a 1x1 edge tile
        side = tile + 2 * 10
        profile = {name: ((1, 3, 1, 1), (1, 3, side, side), (1, 3, side, side))}
    else:  # the fixed crop, batches of 1..8
        crop = (dims[1], dims[2], dims[3])
        profile = {name: ((1, *crop), (8, *crop), (8, *crop))}
    record = build_engine(onnx_path, engine, profiles=[profile], workspace_bytes=1 << 30)
    return [engine, engine.with_suffix(".json")], {**record, "max_tile": tile} if task == "sr" else record, {}


def _bundle_on(task: str, backend: str, out: Path) -> Path:
    """The embedded ``task`` bundle plus a ``backend`` fp32 artifact converted from its ONNX model."""
    source = embedded_bundle_path(task)
    shutil.copytree(source, out)
    onnx_path = out / "model.fp32.onnx"
    files, export, runtime = (_openvino_ir(onnx_path, out) if backend == "openvino"
                              else _tensorrt_engine(onnx_path, out, task))
    manifest = json.loads((out / "manifest.json").read_text())
    entry = {**manifest["artifacts"][0], **_file_entry(files[0]), "backend": backend, "format": backend,
             "extra_files": [_file_entry(p) for p in files[1:]], "runtime": runtime,
             "export": export or manifest["artifacts"][0].get("export", {})}
    manifest["artifacts"].append(entry)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], str | Path]:
    """``bundle(task, backend)``: the embedded bundle for ONNX Runtime, else a copy with that backend's
    artifact (made once per module)."""
    made: dict[tuple[str, str], str | Path] = {}

    def bundle(task: str, backend: str) -> str | Path:
        if not is_available(backend):
            pytest.skip(f"{backend} is not usable here (its package does not import"
                        f"{', or no GPU answers' if backend == 'tensorrt' else ''})")
        if (task, backend) not in made:
            made[task, backend] = task if backend == "onnxruntime" else _bundle_on(
                task, backend, tmp_path_factory.mktemp(f"{task}-{backend}") / "bundle")
        return made[task, backend]

    return bundle


def _runner(bundle: str | Path, backend: str, **options: Any) -> Runner:
    """A runner of the bundle's ``backend`` fp32 artifact, from its verified bytes."""
    loaded = read_bundle(embedded_bundle_path(bundle) if isinstance(bundle, str) else bundle)
    artifact = loaded.find(backend, "fp32")
    assert artifact is not None
    return create_runner(backend, loaded.read_verified(artifact), threads=0,
                         **{**artifact.runtime_options, **options})


# --- the tests ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_score_from_threads_equals_one_thread(backend: str, bundles, vqa_sources) -> None:
    model = kvqe.load(bundles("vqa", backend), backend=backend)
    assert model.backend == backend

    def score(i: int) -> np.ndarray:
        source, fps = vqa_sources[i]
        result = model.score(source, fps=fps)
        return np.array([result.score, *result.frame_scores])

    reference = [score(i) for i in range(len(vqa_sources))]
    assert [len(r) - 1 for r in reference] == [2, 3, 3, 3, 1, 1, 1, 1]  # frames scored per source
    assert len({r[0] for r in reference}) == len(reference)  # eight different scores: a mix-up would show
    results, peak = hammer(score, len(vqa_sources), calls=3)
    assert_identical(results, reference, f"{backend} score()")
    assert peak >= 2, "the calls never overlapped: the test did not test concurrency"
    model.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_enhance_from_threads_equals_one_thread(backend: str, bundles, sr_crops) -> None:
    model = kvqe.load(bundles("sr", backend), backend=backend)
    assert model.backend == backend
    reference = [model.enhance(crop) for crop in sr_crops]
    assert [r.shape[:2] for r in reference] == [(4 * c.shape[0], 4 * c.shape[1]) for c in sr_crops]
    results, peak = hammer(lambda i: model.enhance(sr_crops[i]), len(sr_crops), calls=6)
    assert_identical(results, reference, f"{backend} enhance()")
    assert peak >= 2
    model.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_runner_from_threads_equals_one_thread(backend: str, bundles, sr_crops) -> None:
    """The runner itself, from the bundle's verified bytes: float outputs of eight input shapes."""
    batches = [np.ascontiguousarray(crop[None].transpose(0, 3, 1, 2)[:, ::-1], np.float32) / 255 for crop in sr_crops]
    with _runner(bundles("sr", backend), backend) as runner:
        reference = [runner.run_single(batch) for batch in batches]
        results, peak = hammer(lambda i: runner.run_single(batches[i]), len(batches), calls=6)
    assert_identical(results, reference, f"{backend} runner")
    assert peak >= 2


def test_openvino_throughput_hint_is_shared_safely_and_agrees(bundles, sr_crops) -> None:
    """THROUGHPUT compiles several streams that run concurrent calls side by side: still each call's own
    result, and the same bits as LATENCY's single stream."""
    bundle = bundles("sr", "openvino")
    batches = [np.ascontiguousarray(crop[None].transpose(0, 3, 1, 2)[:, ::-1], np.float32) / 255 for crop in sr_crops]
    with _runner(bundle, "openvino") as latency:
        reference = [latency.run_single(batch) for batch in batches]
    with _runner(bundle, "openvino", performance_hint="THROUGHPUT") as throughput:
        assert throughput.properties()["performance_hint"] == "THROUGHPUT"
        results, peak = hammer(lambda i: throughput.run_single(batches[i]), len(batches), calls=6)
    assert_identical(results, reference, "openvino THROUGHPUT runner vs LATENCY")
    assert peak >= 2


def _stage_graph(name: str, node: onnx.NodeProto, channels: int, weights: list[np.ndarray]) -> ModelFiles:
    """A one-node NCHW float graph ``name`` (input ``input``, output ``output``) as in-memory ONNX bytes."""
    graph = helper.make_graph(
        [node], name, [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", channels, "h", "w"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", 3, "H", "W"])],
        [numpy_helper.from_array(w, f"w{i}") for i, w in enumerate(weights)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return ModelFiles(f"{name}.onnx", model.SerializeToString())


def _sinsr_stages() -> dict[str, ModelFiles]:
    """Stand-ins for SinSR's three graphs with SinSR's shapes: encoder a 3x3 blur, denoiser a 1x1 mix of
    the noisy latent and y0, decoder a nearest x4 upsampling."""
    blur = np.full((3, 1, 3, 3), 1 / 9, np.float32)
    mix = np.zeros((3, 6, 1, 1), np.float32)
    mix[[0, 1, 2], [0, 1, 2]], mix[[0, 1, 2], [3, 4, 5]] = 0.3, 0.7
    return {
        "encoder": _stage_graph("encoder", helper.make_node("Conv", ["input", "w0"], ["output"], group=3,
                                                            pads=[1, 1, 1, 1]), 3, [blur]),
        "denoiser": _stage_graph("denoiser", helper.make_node("Conv", ["input", "w0"], ["output"]), 6, [mix]),
        "decoder": _stage_graph("decoder", helper.make_node("Resize", ["input", "", "w0"], ["output"],
                                                            mode="nearest"), 3,
                                [np.array([1, 1, 4, 4], np.float32)]),
    }


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_restore_then_sinsr_pipeline_from_threads_equals_one_thread(backend: str, bundles, sr_crops) -> None:
    """The composed pipeline (the real Real-ESRGAN restore stage, SinSR's glue and noise, stand-in SinSR
    graphs), every stage on ``backend``: threads get their own image's result."""
    restore = _runner(bundles("sr", backend), backend)
    stages = {name: create_runner(backend, files) for name, files in _sinsr_stages().items()}
    batches = [np.ascontiguousarray(crop[None].transpose(0, 3, 1, 2)[:, ::-1], np.float32) / 255 for crop in sr_crops]
    with RestoreThenSinSR(restore, stages["encoder"], stages["denoiser"], stages["decoder"], out_scale=2) as runner:
        reference = [runner.run_single(batch) for batch in batches]
        assert [r.shape for r in reference] == [(1, 3, 2 * b.shape[2], 2 * b.shape[3]) for b in batches]
        results, peak = hammer(lambda i: runner.run_single(batches[i]), len(batches), calls=4)
    assert_identical(results, reference, f"{backend} restore+SinSR pipeline")
    assert peak >= 2
