"""TensorRT engines and runner.

Without TensorRT or a GPU (as here), the code paths that need neither run against small fakes: missing
package / no GPU -> BackendUnavailableError, device fingerprint, engine fingerprint mismatch, the build
record's key, optimisation profile checks. The build-and-run tests need ``tensorrt``, ``cuda-python`` and an NVIDIA GPU.
"""
from __future__ import annotations

import ctypes
import itertools
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

import kvqe.runtimes.tensorrt as trt_runtime
from kvqe.errors import BackendUnavailableError, BadInputError, BundleError
from kvqe.export import tensorrt_build
from kvqe.export.tensorrt_build import build_engine, engine_cache_key
from kvqe.files import ModelFiles
from kvqe.runtimes import create_runner
from kvqe.runtimes.tensorrt import TensorRTRunner, check_fingerprint, device_fingerprint, fingerprint_path
from kvqe.sdk.loader import embedded_bundle_path
from kvqe.specs import InputSpec

A10 = {"gpu": "NVIDIA A10", "compute_capability": "8.6", "tensorrt": "10.13.0.35"}
# an SR input tiled at 128 + 10 context pixels per side (an edge tile down to 1x1), batch 1
SR_PROFILE = {"input": ((1, 3, 1, 1), (1, 3, 148, 148), (1, 3, 148, 148))}
T4 = {"gpu": "Tesla T4", "compute_capability": "7.5", "tensorrt": "10.13.0.35"}


def _real_tensorrt_problem() -> str | None:
    """None when tensorrt, cuda-python and a GPU are all usable here, else why not."""
    try:
        device_fingerprint()
    except BackendUnavailableError as exc:
        return str(exc)
    return None


_PROBLEM = _real_tensorrt_problem()
needs_gpu = pytest.mark.skipif(_PROBLEM is not None, reason=f"TensorRT on a GPU is not available: {_PROBLEM}")


class FakeCudart:
    """The few cuda-python runtime calls the fingerprint uses, answering ``(error, value)`` like the real one."""

    class cudaError_t:
        cudaSuccess = 0
        cudaErrorNoDevice = 100

    def __init__(self, devices: list[dict[str, str]]) -> None:
        self.devices = devices

    def cudaGetDeviceCount(self) -> tuple[int, int]:
        if not self.devices:
            return self.cudaError_t.cudaErrorNoDevice, 0
        return self.cudaError_t.cudaSuccess, len(self.devices)

    def cudaGetDeviceProperties(self, device: int) -> tuple[int, SimpleNamespace]:
        major, minor = self.devices[device]["compute_capability"].split(".")
        name = self.devices[device]["gpu"].encode() + b"\x00" * 8  # a fixed-size C char array
        return self.cudaError_t.cudaSuccess, SimpleNamespace(name=name, major=int(major), minor=int(minor))

    def cudaGetErrorString(self, error: int) -> tuple[int, bytes]:
        return self.cudaError_t.cudaSuccess, b"no CUDA-capable device is detected"


@pytest.fixture
def fake_machine(monkeypatch: pytest.MonkeyPatch):
    """Install fake tensorrt/cuda-python modules; returns a setter for the visible GPUs."""
    cudart = FakeCudart([])
    monkeypatch.setattr(trt_runtime, "import_tensorrt", lambda: SimpleNamespace(__version__=A10["tensorrt"]))
    monkeypatch.setattr(trt_runtime, "import_cudart", lambda: cudart)
    monkeypatch.setattr(tensorrt_build, "import_tensorrt", lambda: SimpleNamespace(__version__=A10["tensorrt"]))

    def set_devices(*devices: dict[str, str]) -> None:
        cudart.devices = list(devices)

    return set_devices


@pytest.mark.skipif(_PROBLEM is None, reason="tensorrt is installed here")
def test_missing_tensorrt_is_backend_unavailable(tmp_path: Path) -> None:
    for attempt in (lambda: create_runner("tensorrt", tmp_path / "model.engine"),
                    lambda: build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", profiles=[],
                                         workspace_bytes=1 << 30),
                    device_fingerprint):
        with pytest.raises(BackendUnavailableError) as caught:
            attempt()
        assert caught.value.exit_code == 4
        assert "pip install 'kvqe[tensorrt]'" in str(caught.value) or "GPU" in str(caught.value)


def test_no_gpu_is_backend_unavailable(fake_machine, tmp_path: Path) -> None:
    fake_machine()
    with pytest.raises(BackendUnavailableError, match="needs an NVIDIA GPU.*no CUDA-capable device"):
        device_fingerprint()
    with pytest.raises(BackendUnavailableError, match="needs an NVIDIA GPU"):
        build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", profiles=[], workspace_bytes=1 << 30)
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"engine")
    with pytest.raises(BackendUnavailableError, match="needs an NVIDIA GPU"):
        TensorRTRunner(engine).load()


def test_device_fingerprint(fake_machine) -> None:
    fake_machine(A10, T4)
    assert device_fingerprint() == A10
    assert device_fingerprint(1) == T4
    with pytest.raises(BackendUnavailableError, match="device 2 does not exist"):
        device_fingerprint(2)


def test_runner_refuses_an_engine_built_elsewhere(fake_machine, tmp_path: Path) -> None:
    fake_machine(T4)
    engine = tmp_path / "model.int8.engine"
    engine.write_bytes(b"not deserialised: the fingerprint is checked first")
    with pytest.raises(BundleError, match="no build record .*rebuild with kvqe-export --formats tensorrt"):
        TensorRTRunner(engine).load()
    fingerprint_path(engine).write_text(json.dumps({"fingerprint": A10}))
    with pytest.raises(BackendUnavailableError) as caught:
        TensorRTRunner(engine).load()
    message = str(caught.value)
    assert caught.value.exit_code == 4
    assert "engine built for NVIDIA A10 (compute capability 8.6) with TensorRT 10.13.0.35" in message
    assert "this machine has Tesla T4 (compute capability 7.5)" in message
    assert "gpu, compute_capability differ" in message
    assert message.endswith("rebuild with kvqe-export --formats tensorrt")
    with pytest.raises(BackendUnavailableError, match="tensorrt differ"):  # the manifest's copy wins
        TensorRTRunner(engine, fingerprint={**T4, "tensorrt": "10.3.0"}).load()
    check_fingerprint(T4, T4)


def test_fingerprint_comes_from_the_verified_build_record(fake_machine, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """From bytes, the build record is the engine's companion: a record lying beside it is not read."""
    fake_machine(T4)
    monkeypatch.chdir(tmp_path)
    fingerprint_path(Path("m.engine")).write_text(json.dumps({"fingerprint": T4}))
    with pytest.raises(BundleError, match=r"m.engine has no build record \(m.json\)"):
        TensorRTRunner(ModelFiles("m.engine", b"engine")).load()
    record = json.dumps({"fingerprint": A10}).encode()
    with pytest.raises(BackendUnavailableError, match="engine built for NVIDIA A10"):
        TensorRTRunner(ModelFiles("m.engine", b"engine", {"m.json": record})).load()
    with pytest.raises(BundleError, match="not a kvqe TensorRT build record"):
        TensorRTRunner(ModelFiles("m.engine", b"engine", {"m.json": b"{}"})).load()


class FakeGpu(FakeCudart):
    """One visible A10 with memory: the cuda-python calls the runner makes, on host arrays."""

    class cudaMemcpyKind:
        cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost = 1, 2

    def __init__(self) -> None:
        super().__init__([A10])
        self.memory: dict[int, np.ndarray] = {}
        self.streams: set[int] = set()
        self._next = itertools.count(1)

    def cudaMalloc(self, nbytes: int) -> tuple[int, int]:
        pointer = next(self._next)
        self.memory[pointer] = np.zeros(nbytes, np.uint8)
        return self.cudaError_t.cudaSuccess, pointer

    def cudaFree(self, pointer: int) -> tuple[int]:
        del self.memory[pointer]
        return (self.cudaError_t.cudaSuccess,)

    def cudaStreamCreate(self) -> tuple[int, int]:
        stream = next(self._next)
        self.streams.add(stream)
        return self.cudaError_t.cudaSuccess, stream

    def cudaStreamDestroy(self, stream: int) -> tuple[int]:
        self.streams.remove(stream)
        return (self.cudaError_t.cudaSuccess,)

    def cudaMemcpyAsync(self, dst: int, src: int, nbytes: int, kind: int, stream: int) -> tuple[int]:
        if kind == self.cudaMemcpyKind.cudaMemcpyHostToDevice:
            self.memory[dst][:nbytes] = np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(src))
        else:
            ctypes.memmove(dst, self.memory[src].ctypes.data, nbytes)
        return (self.cudaError_t.cudaSuccess,)

    def cudaStreamSynchronize(self, stream: int) -> tuple[int]:
        return (self.cudaError_t.cudaSuccess,)


class FakeEngine:
    """An engine computing ``y = 2x + 1`` on (n, 3) float32; its contexts keep the call's shape and
    addresses as TensorRT's do, and pause between setting them and executing (so a shared one races)."""

    num_io_tensors = 2

    def __init__(self, gpu: FakeGpu) -> None:
        self.gpu, self.contexts = gpu, 0

    def get_tensor_name(self, index: int) -> str:
        return ("x", "y")[index]

    def get_tensor_mode(self, name: str) -> str:
        return "input" if name == "x" else "output"

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return (-1, 3)

    def get_tensor_dtype(self, name: str) -> str:
        return "float"

    def create_execution_context(self) -> SimpleNamespace:
        self.contexts += 1
        gpu = self.gpu
        state: dict[str, Any] = {}

        def execute_async_v3(stream: int) -> bool:
            time.sleep(0.002)
            rows = state["shape"][0]
            x = gpu.memory[state["x"]][:rows * 12].view(np.float32)
            gpu.memory[state["y"]][:rows * 12] = (2 * x + 1).view(np.uint8)
            return True

        return SimpleNamespace(set_input_shape=lambda name, shape: state.update(shape=shape) or True,
                               get_tensor_shape=lambda name: state["shape"],
                               set_tensor_address=lambda name, pointer: state.update({name: pointer}),
                               execute_async_v3=execute_async_v3)


class FakeLogger:
    WARNING = 2

    def __init__(self, level: int) -> None:
        self.level = level


def _fake_tensorrt(gpu: FakeGpu) -> SimpleNamespace:
    engine = FakeEngine(gpu)
    return SimpleNamespace(
        __version__=A10["tensorrt"], engine=engine, Logger=FakeLogger, nptype=lambda dtype: np.float32,
        TensorIOMode=SimpleNamespace(INPUT="input", OUTPUT="output"),
        Runtime=lambda log: SimpleNamespace(deserialize_cuda_engine=lambda data: engine if data == b"engine" else None))


def test_one_runner_serves_many_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each concurrent caller runs on its own context, stream and buffers: 8 threads x 10 calls of
    different shapes all get their own ``2x + 1``; closing frees every buffer and stream."""
    gpu = FakeGpu()
    fake = _fake_tensorrt(gpu)
    monkeypatch.setattr(trt_runtime, "import_tensorrt", lambda: fake)
    monkeypatch.setattr(trt_runtime, "import_cudart", lambda: gpu)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    record = json.dumps({"fingerprint": A10}).encode()
    inputs = [np.arange(3 * rows, dtype=np.float32).reshape(rows, 3) * (k + 1) for k, rows in enumerate(range(1, 9))]
    runner = TensorRTRunner(ModelFiles("m.engine", b"engine", {"m.json": record})).load()
    barrier = threading.Barrier(8)

    def calls(k: int) -> list[bool]:
        barrier.wait()
        return [np.array_equal(runner.run_single(inputs[(k + m) % 8]), 2 * inputs[(k + m) % 8] + 1) for m in range(10)]

    with ThreadPoolExecutor(8) as pool:
        results = [ok for done in pool.map(calls, range(8)) for ok in done]
    assert results == [True] * 80
    assert 1 < fake.engine.contexts <= 8 and len(gpu.streams) == fake.engine.contexts
    runner.close()
    assert gpu.memory == {} and gpu.streams == set()
    with pytest.raises(BundleError, match="could not deserialize m.engine"):
        TensorRTRunner(ModelFiles("m.engine", b"garbage", {"m.json": record})).load()
    assert gpu.streams == set()


def test_engine_cache_key_is_stable() -> None:
    profiles = [SR_PROFILE]
    key = engine_cache_key("0" * 64, profiles, A10)
    assert key == "nvidia-a10-sm86-trt10.13.0.35-fcc3c9164437fd6f"  # pinned: same inputs, same key, forever
    as_lists = [{"input": tuple([list(shape) for shape in profiles[0]["input"]])}]
    assert engine_cache_key("0" * 64, as_lists, A10) == key
    others = {engine_cache_key("1" * 64, profiles, A10), engine_cache_key("0" * 64, profiles, T4),
              engine_cache_key("0" * 64, profiles, {**A10, "tensorrt": "11.0.0"}),
              engine_cache_key("0" * 64, [{"input": ((1, 3, 1, 1), (1, 3, 276, 276), (1, 3, 276, 276))}], A10)}
    assert key not in others and len(others) == 4


def test_profile_problems_are_listed_together() -> None:
    tensor = SimpleNamespace(name="input", shape=(-1, 3, 224, 224))
    network = SimpleNamespace(num_inputs=1, get_input=lambda i: tensor)
    failures = tensorrt_build._check_profiles(network, [])
    assert failures == ["inputs ['input'] have dynamic dimensions but no optimisation profile was given"]
    failures = tensorrt_build._check_profiles(network, [
        {"input": ((1, 3, 224, 224), (8, 3, 256, 256), (4, 3, 256, 256)), "mask": ((1,), (1,), (1,))},
        {"image": ((1, 3, 224, 224),) * 3},
    ])
    assert failures == [
        "profile 0: 'input' axis 0 needs 1 <= min <= opt <= max, got 1, 8, 4",
        "profile 0: 'input' axis 2 is fixed at 224 in the network",
        "profile 0: 'input' axis 3 is fixed at 224 in the network",
        "profile 0: 'mask' is not a network input (['input'])",
        "profile 1: no shapes for dynamic input 'input' (-1, 3, 224, 224)",
        "profile 1: 'image' is not a network input (['input'])",
    ]


# ---------------------------------------------------------------- real TensorRT on a GPU


@needs_gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_sr_engine_matches_onnxruntime(precision: str, tmp_path: Path) -> None:
    import skimage.data

    from kvqe.calibration.contract import SampleSet
    from kvqe.calibration.ort_quant import quantize_qdq
    from kvqe.calibration.policy import POLICIES
    from kvqe.calibration.sensitivity import image_psnr, run_onnx
    from kvqe.export.fp16 import convert_fp16

    bundle = embedded_bundle_path("sr")
    fp32 = bundle / "model.fp32.onnx"
    spec = InputSpec.from_json(json.loads((bundle / "manifest.json").read_text())["input"])
    photo = skimage.data.astronaut()
    crops = np.stack([photo[y:y + 64, x:x + 64] for y in (0, 200, 400) for x in (40, 300)])
    samples = SampleSet(crops, np.arange(len(crops)), tuple(map(str, range(len(crops)))), spec)
    onnx_path = {"fp32": lambda: fp32,
                 "fp16": lambda: (convert_fp16(fp32, tmp_path / "m.onnx"), tmp_path / "m.onnx")[1],
                 "int8": lambda: (quantize_qdq(fp32, tmp_path / "m.onnx", samples, POLICIES["conv-sr"]),
                                  tmp_path / "m.onnx")[1]}[precision]()
    engine = tmp_path / f"model.{precision}.engine"
    profile = {"input": ((1, 3, 1, 1), (1, 3, 84, 84), (1, 3, 84, 84))}  # tiles of 64 + 10 context per side
    record = build_engine(onnx_path, engine, profiles=[profile], workspace_bytes=1 << 30)
    assert record["fingerprint"] == device_fingerprint() and fingerprint_path(engine).is_file()
    reference = run_onnx(fp32, samples)
    metric = image_psnr((0.0, 1.0))
    with TensorRTRunner(engine) as runner:
        outputs = [runner.run_single(x) for x in samples.inputs()]
        with pytest.raises(BadInputError, match="optimisation profile"):
            runner.run_single(np.zeros((1, 3, 128, 128), np.float32))
    psnr = min(metric(a, b) for a, b in zip(reference, outputs))
    assert psnr >= {"fp32": 50.0, "fp16": 45.0, "int8": 35.0}[precision], psnr
