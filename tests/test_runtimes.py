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


def _two_in_two_out(path) -> None:
    """``(a, b) -> (a + b, a * b)`` as an ONNX file (opset 17), dynamic shapes."""
    import onnx
    from onnx import TensorProto, helper

    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n", "c"]) for n in ("a", "b")]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n", "c"]) for n in ("sum", "product")]
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["sum"]), helper.make_node("Mul", ["a", "b"], ["product"])],
                              "two", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_run_many_feeds_every_input_and_returns_every_output(tmp_path, backend: str) -> None:
    if not is_available(backend):
        pytest.skip(f"{backend} is not installed")
    _two_in_two_out(tmp_path / "two.onnx")
    a, b = np.array([[1.0, 2.0]], np.float32), np.array([[3.0, 5.0]], np.float32)
    options = {"multi_io": True} if backend == "openvino" else {}
    with create_runner(backend, tmp_path / "two.onnx", threads=1, **options) as runner:
        total, product = runner.run_many({"a": a, "b": b})
        np.testing.assert_array_equal(total, [[4.0, 7.0]])
        np.testing.assert_array_equal(product, [[3.0, 10.0]])
        assert runner.input_metadata().name == "a"  # run() and the metadata describe the first input
    if backend == "openvino":  # without multi_io a multi-input model is refused, as before
        with pytest.raises(BadInputError, match="single-input"):
            create_runner(backend, tmp_path / "two.onnx").load()


def test_run_many_is_refused_by_single_input_backends() -> None:
    from kvqe.runtimes.base import Runner, TensorSpec

    class Single(Runner):
        def _load(self) -> None: ...
        def _input_metadata(self) -> TensorSpec:
            return TensorSpec("x", np.dtype(np.float32), (None,))
        def _run(self, batch: np.ndarray) -> np.ndarray:
            return batch
        def _close(self) -> None: ...

    with Single() as runner, pytest.raises(BadInputError, match="run_many"):
        runner.run_many({"x": np.zeros(1, np.float32)})
    with pytest.raises(RuntimeError, match="load"):
        Single().run_many({})
