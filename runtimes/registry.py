"""Backends by name, imported lazily; a missing optional backend is a clear error naming its extra."""
from __future__ import annotations

import importlib
import importlib.util
import inspect
from pathlib import Path
from typing import Any

from kvqe.errors import BackendUnavailableError, BadInputError, KvqeError, missing_extra
from kvqe.files import ModelFiles
from kvqe.runtimes.base import Runner

# backend name -> (runner module, runner class, python module it needs, pip extra that provides it)
_FILE_BACKENDS: dict[str, tuple[str, str, str, str | None]] = {
    "onnxruntime": ("kvqe.runtimes.onnxruntime", "OnnxRuntimeRunner", "onnxruntime", None),
    "openvino": ("kvqe.runtimes.openvino", "OpenVinoRunner", "openvino", "openvino"),
    "tensorrt": ("kvqe.runtimes.tensorrt", "TensorRTRunner", "tensorrt", "tensorrt"),
}
# ordered fastest first: what ``auto`` tries
AUTO_ORDER = ("tensorrt", "openvino", "onnxruntime")
KNOWN_BACKENDS = ("onnxruntime", "openvino", "tensorrt", "torch")


def is_available(backend: str) -> bool:
    """True if ``backend`` has a runner here, its Python package is installed and, for TensorRT, a
    GPU answers (so ``auto`` falls back instead of choosing an engine that cannot load)."""
    entry = _FILE_BACKENDS.get(backend)
    if entry is None or importlib.util.find_spec(entry[2]) is None:
        return False
    if backend == "tensorrt":
        from kvqe.runtimes.tensorrt import device_fingerprint

        try:
            device_fingerprint()
        except KvqeError:
            return False
    return True


def create_runner(backend: str, model: ModelFiles | Path, **options: Any) -> Runner:
    """A (not yet loaded) runner of ``backend`` for ``model``: the artifact's verified bytes
    (:meth:`kvqe.bundle.Bundle.read_verified`), or a path, which the runner reads as it is when it loads
    (export-time use, where there is nothing to verify against)."""
    if backend not in KNOWN_BACKENDS:
        raise BadInputError(f"unknown backend {backend!r}; choose one of {', '.join(KNOWN_BACKENDS)} or auto")
    entry = _FILE_BACKENDS.get(backend)
    if entry is None:
        raise BackendUnavailableError(
            f"backend {backend!r} cannot run bundle artifacts in this kvqe version; "
            f"available: {', '.join(_FILE_BACKENDS)}"
        )
    module_name, class_name, requirement, extra = entry
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        if extra is None:
            raise BackendUnavailableError(f"{requirement} is not installed; reinstall kvqe") from None
        raise missing_extra(requirement, extra) from None
    runner_class = getattr(module, class_name)
    accepted = [p.name for p in inspect.signature(runner_class).parameters.values() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise BadInputError(f"the {backend} backend has no option {unknown[0]!r} (its options: {', '.join(accepted)}); "
                            "pass it only with a backend that takes it")
    runner: Runner = runner_class(model, **options)
    return runner
