"""OpenVINO runner (CPU plugin) for an IR (.xml with its .bin) or an ONNX file, read from memory.

OpenVINO's CPU plugin picks its own inference precision unless told: on a CPU with AVX-512 BF16 or AMX
an "FP32" model silently runs in bf16. So the precision is always set explicitly when compiling, read
back from the compiled model (:attr:`OpenVinoRunner.executed_precision`) and refused when the plugin
would run something else (an f16 hint on a CPU without FP16 arithmetic falls back to bf16 silently).
Quantised ops (FakeQuantize in an NNCF IR, Q/DQ in an ONNX) run in int8 whatever the hint says; the
hint governs everything else.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from kvqe.errors import BackendUnavailableError, BadInputError, BundleError
from kvqe.files import ModelFiles
from kvqe.runtimes.base import Pool, Runner, TensorSpec
from kvqe.runtimes.modelfiles import onnx_bytes, read_onnx

DEVICE = "CPU"
# precision name -> (OpenVINO element type name, the CPU capability it needs)
PRECISIONS: dict[str, tuple[str, str]] = {"f32": ("f32", "FP32"), "bf16": ("bf16", "BF16"), "f16": ("f16", "FP16")}
PERFORMANCE_HINTS = ("LATENCY", "THROUGHPUT")
_INPUT_TYPES: dict[str, np.dtype] = {"f32": np.dtype(np.float32), "f16": np.dtype(np.float16)}


class OpenVinoRunner(Runner):
    """Runs a model (any inputs and outputs, by name) on OpenVINO's CPU plugin at an explicit precision.

    Threads: safe to share. The compiled model is thread-safe, but an InferRequest holds its input and
    output tensors, so it serves one call at a time: the runner keeps a :class:`Pool` of requests (one made
    at load, another whenever every request is busy); a call takes an idle request, copies its output out
    and gives the request back. How far concurrent calls overlap is the compiled model's streams' business:
    LATENCY (the default) compiles one stream that uses every core for one call, THROUGHPUT several
    streams that run calls side by side (more calls per second, each slower).
    """

    name = "openvino"
    model_attribute = "model"

    def __init__(self, model: ModelFiles | Path, *, threads: int = 0, inference_precision: str = "f32",
                 performance_hint: str = "LATENCY", multi_io: bool | None = None) -> None:
        """``model``: an IR (``.xml`` with its ``.bin`` as a companion) or an ONNX file, as bytes, or a path
        (read at load time); ``threads``: INFERENCE_NUM_THREADS (0 leaves it to OpenVINO);
        ``inference_precision``: the INFERENCE_PRECISION_HINT, ``f32`` | ``bf16`` | ``f16``;
        ``performance_hint``: LATENCY | THROUGHPUT. ``multi_io`` is the manifest's ``runtime.multi_io``
        (schema v1), accepted and not needed: every model runs through the one named path."""
        super().__init__()
        if inference_precision not in PRECISIONS:
            raise BadInputError(f"openvino: inference precision {inference_precision!r} is not one of "
                                f"{', '.join(PRECISIONS)}")
        if performance_hint not in PERFORMANCE_HINTS:
            raise BadInputError(f"openvino: performance hint {performance_hint!r} is not one of "
                                f"{', '.join(PERFORMANCE_HINTS)}")
        if threads < 0:
            raise BadInputError(f"openvino: threads must be >= 0, got {threads}")
        self.model: ModelFiles | Path | None = model  # None once loaded from bytes (see Runner)
        self.threads = threads
        self.inference_precision = inference_precision
        self.performance_hint = performance_hint
        self.executed_precision: str | None = None  # read back from the compiled model by load()
        self._compiled: ov.CompiledModel | None = None
        self._requests: Pool[ov.InferRequest] | None = None

    def _files(self) -> ModelFiles:
        """The model's bytes: as given, or read from the path with the same checks."""
        model = self.model
        assert model is not None  # dropped only after a load, and then the runner cannot load again
        name = model.name if isinstance(model, ModelFiles) else str(model)
        suffix = Path(name).suffix
        if suffix not in (".xml", ".onnx"):
            raise BadInputError(f"openvino: {name} is neither an OpenVINO IR (.xml) nor an ONNX file")
        if isinstance(model, ModelFiles):
            weights = Path(model.name).with_suffix(".bin").name
            if suffix == ".xml" and weights not in model.companions:
                raise BundleError(f"openvino: the IR weights {weights} are not among the verified files of "
                                  f"{model.name}; the bundle must list them in the artifact's extra_files")
            return model
        path = Path(model)
        if not path.is_file():
            raise BadInputError(f"openvino: model file {path} does not exist")
        if suffix == ".xml":
            if not path.with_suffix(".bin").is_file():
                raise BadInputError(f"openvino: the IR weights {path.with_suffix('.bin')} are missing beside "
                                    f"{path.name}")
            return ModelFiles.read(path)
        return read_onnx(path)

    def _read(self, core: ov.Core, files: ModelFiles) -> ov.Model:
        """Parse the model from memory (an IR with its weights, or ONNX with its external data filled in)."""
        try:
            if Path(files.name).suffix == ".xml":
                return core.read_model(files.main, files.companions[Path(files.name).with_suffix(".bin").name])
            return core.read_model(onnx_bytes(files))
        except RuntimeError as exc:
            raise BadInputError(f"openvino: cannot read {files.name}: {exc}") from None

    def _load(self) -> None:
        files = self._files()
        core = ov.Core()
        element_type, capability = PRECISIONS[self.inference_precision]
        capabilities = list(core.get_property(DEVICE, "OPTIMIZATION_CAPABILITIES"))
        if capability not in capabilities:
            raise BackendUnavailableError(
                f"openvino: this CPU cannot run {self.inference_precision} (its capabilities: "
                f"{', '.join(capabilities)}); OpenVINO would silently run another precision. "
                f"Choose inference precision f32{' or bf16' if 'BF16' in capabilities else ''}."
            )
        model = self._read(core, files)
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": element_type,
                                  "PERFORMANCE_HINT": self.performance_hint}
        if self.threads > 0:
            config["INFERENCE_NUM_THREADS"] = self.threads
        compiled = core.compile_model(model, DEVICE, config)
        executed = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        if executed != element_type:
            raise BackendUnavailableError(
                f"openvino: asked for inference precision {element_type}, the CPU plugin compiled {executed}; "
                "refusing to run a precision that was not asked for"
            )
        self.executed_precision = executed
        self._compiled = compiled
        self._requests = Pool(compiled.create_infer_request)
        self._requests.add(compiled.create_infer_request())

    def _input_specs(self) -> tuple[TensorSpec, ...]:
        assert self._compiled is not None
        specs = []
        for index, port in enumerate(self._compiled.inputs):
            type_name = port.get_element_type().get_type_name()
            if type_name not in _INPUT_TYPES:
                raise BadInputError(f"openvino: input element type {type_name} is not supported (f32, f16)")
            specs.append(TensorSpec(_port_name(port, "input", index), _INPUT_TYPES[type_name], _shape(port)))
        return tuple(specs)

    def _output_specs(self) -> tuple[TensorSpec, ...]:
        """Every output as :meth:`_infer` returns it: float32 whatever the graph computes."""
        assert self._compiled is not None
        return tuple(TensorSpec(_port_name(port, "output", index), np.dtype(np.float32), _shape(port))
                     for index, port in enumerate(self._compiled.outputs))

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self._requests is not None
        inputs, outputs = self.inputs(), self.outputs()
        with self._requests.take() as request:
            request.infer({index: feeds[spec.name] for index, spec in enumerate(inputs)})
            return {spec.name: np.array(request.get_output_tensor(index).data, dtype=np.float32, copy=True)
                    for index, spec in enumerate(outputs)}

    def _close(self) -> None:
        self._requests = None
        self._compiled = None

    def properties(self) -> dict[str, Any]:
        """What actually ran, for the manifest: OpenVINO version, device, executed precision, hints."""
        self._require_loaded()
        assert self._compiled is not None
        return {"openvino": ov.get_version(), "device": DEVICE, "inference_precision": self.executed_precision,
                "performance_hint": str(self._compiled.get_property("PERFORMANCE_HINT")),
                "threads": int(self._compiled.get_property("INFERENCE_NUM_THREADS"))}


def _port_name(port: Any, kind: str, index: int) -> str:
    """A port's tensor name; an unnamed one is ``input``/``output`` (index 0) or ``input1``, ``output2``..."""
    return str(port.get_any_name()) if port.get_names() else f"{kind}{index or ''}"


def _shape(port: Any) -> tuple[int | None, ...]:
    return tuple(None if dim.is_dynamic else dim.get_length() for dim in port.get_partial_shape())
