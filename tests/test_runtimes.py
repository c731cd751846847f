"""The Runner protocol's checks, the backend registry, and a runtime that never imports torch."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from kvqe.errors import BackendUnavailableError, BadInputError, BundleError, ModelClosedError
from kvqe.runtimes import create_runner, is_available
from kvqe.sdk.loader import embedded_bundle_path


def test_onnxruntime_runner_checks_inputs() -> None:
    runner = create_runner("onnxruntime", embedded_bundle_path("sr") / "model.fp32.onnx", threads=1)
    with pytest.raises(RuntimeError, match="load"):
        runner.run_single(np.zeros((1, 3, 8, 8), np.float32))
    with runner:
        (spec,) = runner.inputs()
        assert (spec.name, spec.shape) == ("input", (None, 3, None, None))
        assert runner.run_single(np.zeros((1, 3, 8, 8), np.float32)).shape == (1, 3, 32, 32)
        with pytest.raises(BadInputError, match="dtype"):
            runner.run_single(np.zeros((1, 3, 8, 8), np.float64))
        with pytest.raises(BadInputError, match="shape"):
            runner.run_single(np.zeros((1, 4, 8, 8), np.float32))


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
def test_infer_feeds_every_input_and_returns_every_output_by_name(tmp_path, backend: str) -> None:
    if not is_available(backend):
        pytest.skip(f"{backend} is not installed")
    _two_in_two_out(tmp_path / "two.onnx")
    a, b = np.array([[1.0, 2.0]], np.float32), np.array([[3.0, 5.0]], np.float32)
    with create_runner(backend, tmp_path / "two.onnx", threads=1) as runner:
        assert [s.name for s in runner.inputs()] == ["a", "b"]
        assert [s.name for s in runner.outputs()] == ["sum", "product"]
        out = runner.infer({"a": a, "b": b})
        np.testing.assert_array_equal(out["sum"], [[4.0, 7.0]])
        np.testing.assert_array_equal(out["product"], [[3.0, 10.0]])
        with pytest.raises(BadInputError, match="missing b"):
            runner.infer({"a": a})
        with pytest.raises(BadInputError, match="unknown c"):
            runner.infer({"a": a, "b": b, "c": b})
        with pytest.raises(BadInputError, match="input b dtype"):
            runner.infer({"a": a, "b": b.astype(np.float64)})
        with pytest.raises(BadInputError, match="single-input, single-output"):  # the convenience refuses it
            runner.run_single(a)


def test_a_runner_checks_its_state_and_inputs_before_the_backend_runs() -> None:
    from kvqe.runtimes.base import Runner, TensorSpec

    class Double(Runner):
        def _load(self) -> None: ...
        def _input_specs(self) -> tuple[TensorSpec, ...]:
            return (TensorSpec("x", np.dtype(np.float32), (None, 2)),)
        def _output_specs(self) -> tuple[TensorSpec, ...]:
            return (TensorSpec("y", np.dtype(np.float32), (None, 2)),)
        def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return {"y": 2 * feeds["x"]}
        def _close(self) -> None: ...

    with pytest.raises(RuntimeError, match="load"):
        Double().infer({})
    with Double() as runner:
        np.testing.assert_array_equal(runner.run_single(np.ones((1, 2), np.float32)), [[2.0, 2.0]])
        with pytest.raises(BadInputError, match="shape"):
            runner.infer({"x": np.ones((1, 3), np.float32)})
    with pytest.raises(ModelClosedError, match="closed"):
        runner.outputs()


# --- runners parse bytes: verified bundle files, ONNX external data from companions only ----------------------

def _external_data_model(directory, location: str = "weights.bin"):
    """``y = x @ W + b`` (W 16x8, b 8) with W and b stored in ``location`` beside ``model.onnx``; returns the
    model path and the expected output for the input ``x`` of ones."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    weight, bias = rng.standard_normal((16, 8)).astype(np.float32), rng.standard_normal(8).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])], "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])],
        [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = directory / "model.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=location,
              size_threshold=0)
    return path, np.ones((2, 16), np.float32) @ weight + bias


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_onnx_external_data_comes_from_the_companions(tmp_path, backend: str) -> None:
    if not is_available(backend):
        pytest.skip(f"{backend} is not installed")
    from kvqe.files import ModelFiles

    path, expected = _external_data_model(tmp_path)
    x = np.ones((2, 16), np.float32)
    with create_runner(backend, path) as runner:  # a path: the data file it names is read beside it
        np.testing.assert_allclose(runner.run_single(x), expected, rtol=1e-5, atol=1e-5)
    files = ModelFiles.read(path, ("weights.bin",))
    (tmp_path / "weights.bin").write_bytes(b"\0" * 1024)  # the disk changes: the bytes given are what runs
    with create_runner(backend, files) as runner:
        np.testing.assert_allclose(runner.run_single(x), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(BundleError, match="'weights.bin', which is not among the model's verified files"):
        create_runner(backend, ModelFiles(files.name, files.main)).load()  # not read from disk either
    with pytest.raises(BundleError, match="reads bytes .* of 'weights.bin'"):
        create_runner(backend, ModelFiles(files.name, files.main, {"weights.bin": b"short"})).load()


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_runner_from_bytes_drops_them_once_loaded(backend: str) -> None:
    """A runner made from a bundle's verified bytes keeps no copy after load(), so it loads once; a runner
    made from a path reads it again at each load."""
    if not is_available(backend):
        pytest.skip(f"{backend} is not installed")
    from kvqe.bundle import read_bundle

    bundle = read_bundle(embedded_bundle_path("sr"))
    artifact = bundle.find("onnxruntime", "fp32")
    assert artifact is not None
    batch = np.zeros((1, 3, 8, 8), np.float32)
    runner = create_runner(backend, bundle.read_verified(artifact), threads=1)
    with runner:
        assert runner.run_single(batch).shape == (1, 3, 32, 32)
        assert runner.model is None  # type: ignore[attr-defined]
    with pytest.raises(ModelClosedError, match="closed; load the bundle again"):
        runner.load()
    runner = create_runner(backend, bundle.path / artifact.file, threads=1)
    for _ in range(2):
        with runner:
            assert runner.run_single(batch).shape == (1, 3, 32, 32)


@pytest.mark.parametrize("location", ["../weights.bin", "sub/weights.bin", "/tmp/weights.bin"])
def test_onnx_external_data_outside_the_model_folder_is_refused(tmp_path, location: str) -> None:
    import onnx

    from kvqe.files import ModelFiles

    path, _ = _external_data_model(tmp_path)
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        next(entry for entry in tensor.external_data if entry.key == "location").value = location
    files = ModelFiles("model.onnx", model.SerializeToString(), {"weights.bin": (tmp_path / "weights.bin").read_bytes()})
    with pytest.raises(BundleError, match=f"{location!r}, which is not a plain file name"):
        create_runner("onnxruntime", files).load()
    path.write_bytes(files.main)
    with pytest.raises(BundleError, match="not a plain file name"):
        create_runner("onnxruntime", path).load()


def test_bundle_runner_parses_the_verified_bytes(tmp_path) -> None:
    """The loader reads each artifact once, verified; the runner parses those bytes, not the file."""
    import shutil

    from kvqe.bundle import read_bundle
    from kvqe.sdk.loader import create_bundle_runner

    shutil.copytree(embedded_bundle_path("sr"), tmp_path / "sr")
    bundle = read_bundle(tmp_path / "sr")
    runner = create_bundle_runner(bundle, {"model": bundle.artifacts[0]}, threads=1)
    (tmp_path / "sr" / "model.fp32.onnx").write_bytes(b"swapped after the check")
    with runner:
        assert runner.run_single(np.zeros((1, 3, 8, 8), np.float32)).shape == (1, 3, 32, 32)
    with pytest.raises(BundleError, match="sha256|bytes"):
        create_bundle_runner(bundle, {"model": bundle.artifacts[0]})
