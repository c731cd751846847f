"""ONNX Runtime runner (CPU execution provider)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from kvqe.runtimes.base import Runner, TensorSpec

_ORT_TYPES: dict[str, np.dtype] = {"tensor(float)": np.dtype(np.float32), "tensor(float16)": np.dtype(np.float16)}


class OnnxRuntimeRunner(Runner):
    """Runs an ONNX model on the CPU provider: single-input, single-output through ``run``, any through
    ``run_many``."""

    name = "onnxruntime"

    def __init__(self, model_path: Path, *, threads: int = 0) -> None:
        """``threads``: intra-op threads (0 lets ONNX Runtime use every core)."""
        super().__init__()
        self.model_path = model_path
        self.threads = threads
        self._session: ort.InferenceSession | None = None

    def _load(self) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = ort.InferenceSession(
            str(self.model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )

    def _input_metadata(self) -> TensorSpec:
        assert self._session is not None
        node = self._session.get_inputs()[0]
        shape = tuple(d if isinstance(d, int) else None for d in node.shape)
        return TensorSpec(node.name, _ORT_TYPES[node.type], shape)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        assert self._session is not None
        name = self._session.get_inputs()[0].name
        (output,) = self._session.run(None, {name: batch})
        return np.asarray(output)

    def _run_many(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        assert self._session is not None
        return [np.asarray(output) for output in self._session.run(None, feeds)]

    def _close(self) -> None:
        self._session = None
