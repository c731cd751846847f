"""TensorRT runner (10.x/11.x Python API) over a serialized engine, with device buffers from cuda-python.

An engine only runs on the GPU model and TensorRT version that built it, so every engine carries a
fingerprint (``<engine>.json`` beside it: GPU name, compute capability, TensorRT version) and the
runner refuses an engine whose fingerprint differs from this machine's, with a message saying what to
rebuild. ``tensorrt`` and ``cuda-python`` are imported lazily: without them, or without a GPU, loading
raises :class:`BackendUnavailableError` (the CLI's exit 4).
"""
from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from kvqe.errors import BackendUnavailableError, BadInputError, BundleError, missing_extra
from kvqe.runtimes.base import Runner, TensorSpec

if TYPE_CHECKING:  # typed against tensorrt-stubs; imported for real only inside functions
    import tensorrt as trt

FINGERPRINT_KEYS = ("gpu", "compute_capability", "tensorrt")
REBUILD_HINT = "rebuild with kvqe-export --formats tensorrt"


def import_tensorrt() -> ModuleType:
    """The ``tensorrt`` module, or the missing-extra error (also when only type stubs are installed)."""
    try:
        import tensorrt as trt
    except ImportError:
        raise missing_extra("tensorrt", "tensorrt") from None
    if not hasattr(trt, "Builder"):  # e.g. the namespace package that tensorrt-stubs leaves behind
        raise missing_extra("tensorrt", "tensorrt")
    return trt


def import_cudart() -> Any:
    """cuda-python's runtime API (``cuda.bindings.runtime``; ``cuda.cudart`` before cuda-python 12.6)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError:
            raise missing_extra("cuda-python", "tensorrt") from None
    return runtime


def cuda_call(cudart: Any, result: Any, what: str) -> Any:
    """Unpack a cuda-python ``(error, *values)`` result; a CUDA error becomes BackendUnavailableError."""
    error, *values = result if isinstance(result, tuple) else (result,)
    if error != cudart.cudaError_t.cudaSuccess:
        raise BackendUnavailableError(f"CUDA {what} failed: {_error_text(cudart, error)}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def _error_text(cudart: Any, error: Any) -> str:
    try:
        _, text = cudart.cudaGetErrorString(error)
        return text.decode() if isinstance(text, bytes) else str(text)
    except Exception:  # noqa: BLE001 (best effort: the code itself is still reported)
        return str(error)


def device_fingerprint(device: int = 0) -> dict[str, str]:
    """What a TensorRT engine is tied to on this machine: GPU name, compute capability, TensorRT version.

    Raises :class:`BackendUnavailableError` without tensorrt, cuda-python or a visible CUDA GPU.
    """
    tensorrt = import_tensorrt()
    cudart = import_cudart()
    error, count = cudart.cudaGetDeviceCount()
    if error != cudart.cudaError_t.cudaSuccess or count == 0:
        reason = "no CUDA device" if error == cudart.cudaError_t.cudaSuccess else _error_text(cudart, error)
        raise BackendUnavailableError(f"TensorRT needs an NVIDIA GPU, and none is usable here ({reason})")
    if device >= count:
        raise BackendUnavailableError(f"CUDA device {device} does not exist ({count} visible)")
    props = cuda_call(cudart, cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return {"gpu": name.rstrip("\x00").strip(), "compute_capability": f"{props.major}.{props.minor}",
            "tensorrt": str(tensorrt.__version__)}


def dims(shape: trt.Dims) -> tuple[int, ...]:
    """A TensorRT ``Dims`` as a tuple (-1 marks a dynamic dimension)."""
    return tuple(int(shape[i]) for i in range(len(shape)))


def describe_fingerprint(fingerprint: dict[str, Any]) -> str:
    return (f"{fingerprint.get('gpu', '?')} (compute capability {fingerprint.get('compute_capability', '?')}) "
            f"with TensorRT {fingerprint.get('tensorrt', '?')}")


def fingerprint_path(engine_path: Path) -> Path:
    """Where an engine's build record (fingerprint, ONNX hash, profiles) is kept: ``<engine>.json``."""
    return engine_path.with_suffix(".json")


def read_fingerprint(engine_path: Path) -> dict[str, str]:
    """The fingerprint recorded beside ``engine_path``."""
    path = fingerprint_path(engine_path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        fingerprint = record["fingerprint"]
        return {key: str(fingerprint[key]) for key in FINGERPRINT_KEYS}
    except FileNotFoundError:
        raise BundleError(f"{engine_path.name} has no build record ({path.name}) saying which GPU and "
                          f"TensorRT version built it: {REBUILD_HINT}") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{path}: not a kvqe TensorRT build record ({exc!r}): {REBUILD_HINT}") from None


def check_fingerprint(recorded: dict[str, Any], here: dict[str, Any]) -> None:
    """Raise :class:`BackendUnavailableError` unless the engine's fingerprint matches this machine's."""
    differs = [key for key in FINGERPRINT_KEYS if str(recorded.get(key)) != str(here.get(key))]
    if differs:
        raise BackendUnavailableError(
            f"TensorRT engine built for {describe_fingerprint(recorded)}, this machine has "
            f"{describe_fingerprint(here)} ({', '.join(differs)} differ): {REBUILD_HINT}")


class TensorRTRunner(Runner):
    """Runs a single-input, single-output TensorRT engine on CUDA device 0."""

    name = "tensorrt"

    def __init__(self, engine_path: Path, *, threads: int = 0, fingerprint: dict[str, Any] | None = None) -> None:
        """``fingerprint``: the engine's recorded fingerprint (e.g. from the bundle manifest); read from
        ``<engine>.json`` when None. ``threads`` is accepted for a uniform interface (a GPU ignores it)."""
        super().__init__()
        import_tensorrt()  # a missing package is reported when the runner is made, as for other backends
        import_cudart()
        self.engine_path = engine_path
        self.threads = threads
        self.fingerprint = fingerprint
        self._cudart: Any = None
        self._logger: trt.ILogger | None = None
        self._runtime: trt.Runtime | None = None
        self._engine: trt.ICudaEngine | None = None
        self._context: trt.IExecutionContext | None = None
        self._stream: Any = None
        self._input = ""
        self._output = ""
        self._buffers: dict[str, tuple[Any, int]] = {}  # tensor name -> (device pointer, bytes)

    def _load(self) -> None:
        here = device_fingerprint()  # no tensorrt, cuda-python or GPU: BackendUnavailableError first
        recorded = self.fingerprint if self.fingerprint is not None else read_fingerprint(self.engine_path)
        check_fingerprint(recorded, here)
        try:
            serialized = self.engine_path.read_bytes()
        except OSError as exc:
            raise BundleError(f"cannot read TensorRT engine {self.engine_path}: {exc}") from None
        try:
            self._deserialize(serialized)
        except BaseException:
            self._close()
            raise

    def _deserialize(self, serialized: bytes) -> None:
        import_tensorrt()
        import tensorrt as trt

        cudart = self._cudart = import_cudart()
        self._logger = trt.Logger(trt.Logger.WARNING)  # must outlive the runtime and engine
        self._runtime = trt.Runtime(self._logger)
        engine = self._engine = self._runtime.deserialize_cuda_engine(serialized)
        if engine is None:
            raise BundleError(f"TensorRT could not deserialize {self.engine_path.name}: {REBUILD_HINT}")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise BundleError(f"{self.engine_path.name}: expected one input and one output, "
                              f"found inputs {inputs} and outputs {outputs}")
        self._input, self._output = inputs[0], outputs[0]
        self._context = engine.create_execution_context()
        self._stream = cuda_call(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")

    def _input_metadata(self) -> TensorSpec:
        import tensorrt as trt

        assert self._engine is not None
        shape = dims(self._engine.get_tensor_shape(self._input))
        dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(self._input)))
        return TensorSpec(self._input, dtype, tuple(None if d < 0 else d for d in shape))

    def _device_buffer(self, name: str, nbytes: int) -> Any:
        """A device allocation of at least ``nbytes`` for ``name``, reused while big enough."""
        cudart = self._cudart
        pointer, size = self._buffers.get(name, (None, 0))
        if pointer is None or size < nbytes:
            if pointer is not None:
                cuda_call(cudart, cudart.cudaFree(pointer), "cudaFree")
            pointer = cuda_call(cudart, cudart.cudaMalloc(max(nbytes, 1)), "cudaMalloc")
            self._buffers[name] = (pointer, nbytes)
        return pointer

    def _run(self, batch: np.ndarray) -> np.ndarray:
        import tensorrt as trt

        cudart, context, engine = self._cudart, self._context, self._engine
        assert context is not None and engine is not None
        if not context.set_input_shape(self._input, tuple(batch.shape)):
            low, _, high = engine.get_tensor_profile_shape(self._input, 0)
            raise BadInputError(f"tensorrt: input shape {batch.shape} is outside the engine's optimisation "
                                f"profile ({dims(low)} .. {dims(high)})")
        out_shape = dims(context.get_tensor_shape(self._output))
        output = np.empty(out_shape, dtype=np.dtype(trt.nptype(engine.get_tensor_dtype(self._output))))
        d_in = self._device_buffer(self._input, batch.nbytes)
        d_out = self._device_buffer(self._output, output.nbytes)
        stream = self._stream
        cuda_call(cudart, cudart.cudaMemcpyAsync(d_in, batch.ctypes.data, batch.nbytes,
                                                 cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, stream),
                  "cudaMemcpyAsync (host to device)")
        context.set_tensor_address(self._input, int(d_in))
        context.set_tensor_address(self._output, int(d_out))
        if not context.execute_async_v3(int(stream)):
            raise BackendUnavailableError(f"TensorRT failed to run {self.engine_path.name} on input {batch.shape}")
        cuda_call(cudart, cudart.cudaMemcpyAsync(output.ctypes.data, d_out, output.nbytes,
                                                 cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream),
                  "cudaMemcpyAsync (device to host)")
        cuda_call(cudart, cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        return output.astype(np.float32, copy=False)

    def _close(self) -> None:
        cudart = self._cudart
        if cudart is not None:
            for pointer, _ in self._buffers.values():
                cudart.cudaFree(pointer)
            if self._stream is not None:
                cudart.cudaStreamDestroy(self._stream)
        self._buffers.clear()
        self._stream = self._context = self._engine = self._runtime = self._logger = None
