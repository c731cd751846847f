"""TensorRT runner (10.x/11.x Python API) over a serialized engine, with device buffers from cuda-python.

An engine only runs on the GPU model and TensorRT version that built it, so every engine carries a
fingerprint (its build record ``<engine>.json``: GPU name, compute capability, TensorRT version) and the
runner refuses an engine whose fingerprint differs from this machine's, with a message saying what to
rebuild. The engine is deserialized from the bytes the bundle verified, and its build record is one of
the engine's verified companion files (a bundle lists it in ``extra_files``), never a file read beside it.
``tensorrt`` and ``cuda-python`` are imported lazily: without them, or without a GPU, loading raises
:class:`BackendUnavailableError` (the CLI's exit 4).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from kvqe.errors import BackendUnavailableError, BadInputError, BundleError, missing_extra
from kvqe.files import ModelFiles
from kvqe.runtimes.base import Pool, Runner, TensorSpec

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


def read_engine(path: Path) -> ModelFiles:
    """An engine file with its build record as the companion, when there is one (export-time use)."""
    record = fingerprint_path(path)
    return ModelFiles.read(path, (record.name,) if record.is_file() else ())


def read_fingerprint(files: ModelFiles) -> dict[str, str]:
    """The fingerprint in the engine's build record, a companion of ``files``."""
    name = fingerprint_path(Path(files.name)).name
    data = files.companions.get(name)
    if data is None:
        raise BundleError(f"{files.name} has no build record ({name}) saying which GPU and "
                          f"TensorRT version built it: {REBUILD_HINT}")
    try:
        fingerprint = json.loads(data.decode("utf-8"))["fingerprint"]
        return {key: str(fingerprint[key]) for key in FINGERPRINT_KEYS}
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{name}: not a kvqe TensorRT build record ({exc!r}): {REBUILD_HINT}") from None


def check_fingerprint(recorded: dict[str, Any], here: dict[str, Any]) -> None:
    """Raise :class:`BackendUnavailableError` unless the engine's fingerprint matches this machine's."""
    differs = [key for key in FINGERPRINT_KEYS if str(recorded.get(key)) != str(here.get(key))]
    if differs:
        raise BackendUnavailableError(
            f"TensorRT engine built for {describe_fingerprint(recorded)}, this machine has "
            f"{describe_fingerprint(here)} ({', '.join(differs)} differ): {REBUILD_HINT}")


@dataclass
class _Slot:
    """One caller's execution state: an execution context with its own CUDA stream and device buffers
    (tensor name -> (device pointer, bytes)); TensorRT's contexts are not thread-safe."""

    context: trt.IExecutionContext
    stream: Any
    buffers: dict[str, tuple[Any, int]] = field(default_factory=dict)


class TensorRTRunner(Runner):
    """Runs a TensorRT engine (any inputs and outputs, by name) on CUDA device 0.

    Threads: safe to share. The engine is thread-safe, an execution context is not (it holds the input
    shape and tensor addresses of the call in flight), and a stream or device buffer used by two calls
    would interleave their copies. So each concurrent caller takes a :class:`_Slot` from a pool (a context,
    a stream, buffers; one made at load, another whenever all are busy) rather than queueing on a lock:
    calls on separate streams overlap on the GPU (one's copies with another's kernels). The price is
    one context's activation memory per concurrent caller at the peak.
    """

    name = "tensorrt"
    model_attribute = "engine"

    def __init__(self, engine: ModelFiles | Path, *, threads: int = 0,
                 fingerprint: dict[str, Any] | None = None) -> None:
        """``engine``: the serialized engine with its build record ``<engine>.json`` as a companion, or a
        path (read at load time, the record from beside it); ``fingerprint``: the engine's recorded
        fingerprint (e.g. from the bundle manifest), which takes precedence over the build record.
        ``threads`` is accepted for a uniform interface (a GPU ignores it)."""
        super().__init__()
        import_tensorrt()  # a missing package is reported when the runner is made, as for other backends
        import_cudart()
        self.engine: ModelFiles | Path | None = engine  # None once loaded from bytes (see Runner)
        self.threads = threads
        self.fingerprint = fingerprint
        self._name = engine.name if isinstance(engine, ModelFiles) else Path(engine).name
        self._cudart: Any = None
        self._logger: trt.ILogger | None = None
        self._runtime: trt.Runtime | None = None
        self._engine: trt.ICudaEngine | None = None
        self._slots: Pool[_Slot] | None = None
        self._inputs: tuple[str, ...] = ()
        self._outputs: tuple[str, ...] = ()

    def _files(self) -> ModelFiles:
        assert self.engine is not None  # dropped only after a load, and then the runner cannot load again
        if isinstance(self.engine, ModelFiles):
            return self.engine
        try:
            return read_engine(Path(self.engine))
        except BadInputError as exc:
            raise BundleError(f"cannot read TensorRT engine {self.engine}: {exc}") from None

    def _load(self) -> None:
        here = device_fingerprint()  # no tensorrt, cuda-python or GPU: BackendUnavailableError first
        files = self._files()
        recorded = self.fingerprint if self.fingerprint is not None else read_fingerprint(files)
        check_fingerprint(recorded, here)
        try:
            self._deserialize(files.main)
        except BaseException:
            self._close()
            raise

    def _deserialize(self, serialized: bytes) -> None:
        import_tensorrt()
        import tensorrt as trt

        self._cudart = import_cudart()
        self._logger = trt.Logger(trt.Logger.WARNING)  # must outlive the runtime and engine
        self._runtime = trt.Runtime(self._logger)
        engine = self._engine = self._runtime.deserialize_cuda_engine(serialized)
        if engine is None:
            raise BundleError(f"TensorRT could not deserialize {self._name}: {REBUILD_HINT}")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if not inputs or not outputs:
            raise BundleError(f"{self._name}: expected inputs and outputs, found inputs {inputs} and outputs {outputs}")
        self._inputs, self._outputs = tuple(inputs), tuple(outputs)
        self._slots = Pool(self._new_slot)
        self._slots.add(self._new_slot())

    def _new_slot(self) -> _Slot:
        """A fresh execution context with its own stream (no buffers yet)."""
        cudart, engine = self._cudart, self._engine
        assert engine is not None
        context = engine.create_execution_context()
        if context is None:
            raise BackendUnavailableError(f"TensorRT could not create an execution context for {self._name} "
                                          "(out of GPU memory?)")
        return _Slot(context, cuda_call(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate"))

    def _spec(self, name: str) -> TensorSpec:
        import tensorrt as trt

        assert self._engine is not None
        shape = dims(self._engine.get_tensor_shape(name))
        dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name)))
        return TensorSpec(name, dtype, tuple(None if d < 0 else d for d in shape))

    def _input_specs(self) -> tuple[TensorSpec, ...]:
        return tuple(self._spec(name) for name in self._inputs)

    def _output_specs(self) -> tuple[TensorSpec, ...]:
        """Every output as :meth:`_infer` returns it: float32 whatever the engine computes."""
        return tuple(TensorSpec(spec.name, np.dtype(np.float32), spec.shape)
                     for spec in map(self._spec, self._outputs))

    def _device_buffer(self, slot: _Slot, name: str, nbytes: int) -> Any:
        """A device allocation of at least ``nbytes`` for ``name`` in ``slot``, reused while big enough."""
        cudart = self._cudart
        pointer, size = slot.buffers.get(name, (None, 0))
        if pointer is None or size < nbytes:
            if pointer is not None:
                cuda_call(cudart, cudart.cudaFree(pointer), "cudaFree")
                del slot.buffers[name]
            pointer = cuda_call(cudart, cudart.cudaMalloc(max(nbytes, 1)), "cudaMalloc")
            slot.buffers[name] = (pointer, nbytes)
        return pointer

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self._slots is not None
        with self._slots.take() as slot:
            return self._infer_in(slot, feeds)

    def _infer_in(self, slot: _Slot, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One call on ``slot``'s context, stream and buffers: copy in, execute, copy out, synchronize."""
        import tensorrt as trt

        cudart, context, engine, stream = self._cudart, slot.context, self._engine, slot.stream
        assert engine is not None
        for name in self._inputs:
            if not context.set_input_shape(name, tuple(feeds[name].shape)):
                low, _, high = engine.get_tensor_profile_shape(name, 0)
                raise BadInputError(f"tensorrt: input {name} shape {feeds[name].shape} is outside the engine's "
                                    f"optimisation profile ({dims(low)} .. {dims(high)})")
        outputs = {name: np.empty(dims(context.get_tensor_shape(name)),
                                  dtype=np.dtype(trt.nptype(engine.get_tensor_dtype(name))))
                   for name in self._outputs}
        for name in self._inputs:
            batch = feeds[name]
            device = self._device_buffer(slot, name, batch.nbytes)
            cuda_call(cudart, cudart.cudaMemcpyAsync(device, batch.ctypes.data, batch.nbytes,
                                                     cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, stream),
                      "cudaMemcpyAsync (host to device)")
            context.set_tensor_address(name, int(device))
        for name, output in outputs.items():
            context.set_tensor_address(name, int(self._device_buffer(slot, name, output.nbytes)))
        if not context.execute_async_v3(int(stream)):
            shapes = ", ".join(f"{name} {feeds[name].shape}" for name in self._inputs)
            raise BackendUnavailableError(f"TensorRT failed to run {self._name} on input {shapes}")
        for name, output in outputs.items():
            cuda_call(cudart, cudart.cudaMemcpyAsync(output.ctypes.data, slot.buffers[name][0], output.nbytes,
                                                     cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream),
                      "cudaMemcpyAsync (device to host)")
        cuda_call(cudart, cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        return {name: output.astype(np.float32, copy=False) for name, output in outputs.items()}

    def _close(self) -> None:
        cudart = self._cudart
        slots = self._slots.drain() if self._slots is not None else []
        if cudart is not None:
            for slot in slots:
                for pointer, _ in slot.buffers.values():
                    cudart.cudaFree(pointer)
                cudart.cudaStreamDestroy(slot.stream)
        del slots  # the contexts go before the engine that made them
        self._slots = None
        self._engine = self._runtime = self._logger = None
