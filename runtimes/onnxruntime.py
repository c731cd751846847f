"""ONNX Runtime runner (CPU execution provider)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from kvqe.errors import BadInputError
from kvqe.files import ModelFiles
from kvqe.runtimes.base import Runner, TensorSpec
from kvqe.runtimes.modelfiles import onnx_bytes, read_onnx

_ORT_TYPES: dict[str, np.dtype] = {
    "tensor(float)": np.dtype(np.float32), "tensor(float16)": np.dtype(np.float16),
    "tensor(double)": np.dtype(np.float64), "tensor(int64)": np.dtype(np.int64), "tensor(int32)": np.dtype(np.int32),
    "tensor(uint8)": np.dtype(np.uint8), "tensor(int8)": np.dtype(np.int8), "tensor(bool)": np.dtype(np.bool_),
}


class OnnxRuntimeRunner(Runner):
    """Runs an ONNX model (any inputs and outputs, by name) on the CPU provider.

    Threads: safe to share as it is. ONNX Runtime documents ``InferenceSession.run`` as callable from many
    threads at once on one session: the session is read-only after it is built, and each call gets its own
    execution frame (intermediate tensors). Concurrent calls share the session's intra-op thread pool.
    """

    name = "onnxruntime"
    model_attribute = "model"

    def __init__(self, model: ModelFiles | Path, *, threads: int = 0) -> None:
        """``model``: the ONNX bytes with any external data as companions, or a path (read at load time);
        ``threads``: intra-op threads (0 lets ONNX Runtime use every core)."""
        super().__init__()
        self.model: ModelFiles | Path | None = model  # None once loaded from bytes (see Runner)
        self.threads = threads
        self._session: ort.InferenceSession | None = None

    def _load(self) -> None:
        assert self.model is not None  # dropped only after a load, and then the runner cannot load again
        files = self.model if isinstance(self.model, ModelFiles) else read_onnx(Path(self.model))
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        session = ort.InferenceSession(onnx_bytes(files), sess_options=options, providers=["CPUExecutionProvider"])
        _forget_serialized_model(session)
        self._session = session

    def _input_specs(self) -> tuple[TensorSpec, ...]:
        assert self._session is not None
        return tuple(_spec(node) for node in self._session.get_inputs())

    def _output_specs(self) -> tuple[TensorSpec, ...]:
        assert self._session is not None
        return tuple(_spec(node) for node in self._session.get_outputs())

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self._session is not None
        names = [spec.name for spec in self.outputs()]
        return {name: np.asarray(value) for name, value in zip(names, self._session.run(names, feeds))}

    def _close(self) -> None:
        self._session = None


def _forget_serialized_model(session: ort.InferenceSession) -> None:
    """Let go of the serialized model ONNX Runtime's Python session keeps after building itself (its source:
    "holding the memory indefinitely"), which it only needs to rebuild the session when an execution
    provider fails and it falls back to another. With the CPU provider alone there is none to fall back to:
    fallback goes off and the bytes are dropped (nothing happens if a release names them otherwise)."""
    session.disable_fallback()
    if getattr(session, "_model_bytes", None) is not None:
        session._model_bytes = None


def _spec(node: ort.NodeArg) -> TensorSpec:
    """A session input's or output's name, element type and shape (symbolic dimensions as None)."""
    if node.type not in _ORT_TYPES:
        raise BadInputError(f"onnxruntime: {node.name} has element type {node.type}, which kvqe does not feed")
    return TensorSpec(node.name, _ORT_TYPES[node.type], tuple(d if isinstance(d, int) else None for d in node.shape))
