"""The Runner protocol's checks, the backend registry, and a runtime that never imports torch."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from kvqe.errors import BackendUnavailableError, BadInputError
from kvqe.runtimes import create_runner, is_available
from kvqe.sdk.loader import embedded_bundle_path


def test_onnxruntime_runner_checks_inputs() -> None:
    runner = create_runner("onnxruntime", embedded_bundle_path("sr") / "model.fp32.onnx", threads=1)
    with pytest.raises(RuntimeError, match="load"):
        runner.run(np.zeros((1, 3, 8, 8), np.float32))
    with runner:
        spec = runner.input_metadata()
        assert (spec.name, spec.shape) == ("input", (None, 3, None, None))
        assert runner.run(np.zeros((1, 3, 8, 8), np.float32)).shape == (1, 3, 32, 32)
        with pytest.raises(BadInputError, match="dtype"):
            runner.run(np.zeros((1, 3, 8, 8), np.float64))
        with pytest.raises(BadInputError, match="shape"):
            runner.run(np.zeros((1, 4, 8, 8), np.float32))


def test_backend_registry() -> None:
    assert is_available("onnxruntime")
    with pytest.raises(BadInputError, match="unknown backend"):
        create_runner("tflite", embedded_bundle_path("sr"))
    with pytest.raises(BackendUnavailableError):
        create_runner("tensorrt", embedded_bundle_path("sr"))


def test_runtime_path_does_not_import_torch() -> None:
    code = ("import sys, kvqe, kvqe.cli, kvqe.sdk.loader; m = kvqe.load('sr'); "
            "import numpy as np; m.enhance(np.zeros((8, 8, 3), np.uint8)); "
            "assert 'torch' not in sys.modules, 'torch imported'; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.stdout.strip() == "ok", result.stderr
