"""Artifact builders, one per (format, precision), picked through a dict.

Every builder takes the FP32 ONNX (already validated against torch) and writes its files into the
staging directory. One QDQ ONNX made by calibration serves ONNX Runtime and TensorRT INT8; OpenVINO
INT8 comes from NNCF on the same calibration set; FP16 comes from an FP16 ONNX (ONNX Runtime,
TensorRT) or an FP16-compressed IR (OpenVINO, executed at an explicit precision).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kvqe.calibration.contract import SampleSet
from kvqe.calibration.policy import QuantPolicy
from kvqe.calibration.tasks import task_named
from kvqe.errors import BadInputError
from kvqe.models.registry import ModelCard

if TYPE_CHECKING:
    from kvqe.calibration.ort_quant import QdqCalibration

FORMATS = ("onnx", "onnxruntime-int8", "openvino", "tensorrt")
BACKENDS = {"onnx": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt"}  # what runs each built format


@dataclass
class BuildContext:
    """What builders share: the card, staging dir, FP32 ONNX, calibration set, policy, options, and the layers
    the INT8 search keeps float on top of the policy's (``float_layers``, by INT8 source: every artifact made
    from the QDQ ONNX shares one choice, NNCF's OpenVINO INT8 has its own). Owns the calibrated model once
    made: :meth:`close` it."""

    card: ModelCard
    stage: Path
    fp32_onnx: Path
    calibration: SampleSet | None
    policy: QuantPolicy
    calib_method: str = "percentile"
    per_channel: bool = True
    tile: int = 256
    prefix: str = "model"  # file name stem: "model", or the stage of a pipeline bundle ("denoiser")
    built: dict[str, Path] = field(default_factory=dict)  # intermediate ONNX files by precision
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    float_layers: dict[str, tuple[str, ...]] = field(default_factory=dict)
    calibrated: QdqCalibration | None = None

    def require_calibration(self) -> SampleSet:
        if self.calibration is None:
            raise BadInputError("INT8 needs calibration data: pass --calib DIR (videos and/or images)")
        return self.calibration

    def qdq_calibration(self) -> QdqCalibration:
        """The FP32 ONNX calibrated for ONNX Runtime's quantiser, once (every QDQ variant reuses it)."""
        if self.calibrated is None:
            from kvqe.calibration.ort_quant import QdqCalibration

            self.calibrated = QdqCalibration(self.fp32_onnx, self.require_calibration(), self.policy,
                                             method=self.calib_method, per_channel=self.per_channel)
        return self.calibrated

    def int8_source(self, fmt: str) -> str:
        """Where ``fmt``'s INT8 comes from: ``qdq`` (ONNX Runtime's QDQ ONNX, also converted for TensorRT and,
        with ``openvino_from_qdq``, OpenVINO) or ``nncf`` (OpenVINO quantised by NNCF)."""
        return "nncf" if fmt == "openvino" and not self.policy.openvino_from_qdq else "qdq"

    def nncf_policy(self) -> QuantPolicy:
        """The policy with the layers the search chose for NNCF's INT8 added to the nodes it keeps float."""
        extra = self.float_layers.get("nncf", ())
        return replace(self.policy, exclude_nodes=(*self.policy.exclude_nodes, *extra)) if extra else self.policy

    def close(self) -> None:
        if self.calibrated is not None:
            self.calibrated.close()
            self.calibrated = None

    def onnx_for(self, precision: str) -> Path:
        """The ONNX graph of a precision (FP16 ONNX, QDQ INT8 ONNX), built once and shared."""
        if precision == "fp32":
            return self.fp32_onnx
        if precision not in self.built:
            path = self.stage / f"{self.prefix}.{precision}.onnx"
            if precision == "fp16":
                from kvqe.export.fp16 import convert_fp16

                self.records[precision] = convert_fp16(self.fp32_onnx, path)
            else:
                self.records[precision] = self.qdq_calibration().quantize(path, self.float_layers.get("qdq", ()))
            self.built[precision] = path
        return self.built[precision]


@dataclass(frozen=True)
class BuiltArtifact:
    """Files (main one first) and what the manifest records about how they were made."""

    backend: str
    precision: str
    files: tuple[Path, ...]
    export: dict[str, Any]
    runtime: dict[str, Any] = field(default_factory=dict)
    calibration: bool = False


def _onnx(ctx: BuildContext, precision: str) -> BuiltArtifact:
    path = ctx.onnx_for(precision)
    record = ctx.records.get(precision, {})
    return BuiltArtifact("onnxruntime", precision, (path,), record, calibration=precision == "int8")


def _openvino(ctx: BuildContext, precision: str) -> BuiltArtifact:
    from kvqe.export import openvino_export

    xml = ctx.stage / f"{ctx.prefix}.openvino.{precision}.xml"
    if precision == "int8" and ctx.policy.openvino_from_qdq:  # the QDQ ONNX ONNX Runtime runs, converted
        record = openvino_export.ir_from_qdq(ctx.onnx_for("int8"), xml, ctx.records["int8"])
    elif precision == "int8":
        record = openvino_export.quantize_int8_ir(ctx.fp32_onnx, xml, ctx.require_calibration(), ctx.nncf_policy())
    else:
        openvino_export.convert_to_ir(ctx.fp32_onnx, xml, compress_to_fp16=precision == "fp16")
        record = {"converter": "openvino.convert_model", "compress_to_fp16": precision == "fp16"}
    # the CPU would run fp32 graphs in bf16 by default: always execute at an explicit f32
    return BuiltArtifact("openvino", precision, (xml, xml.with_suffix(".bin")), record,
                         runtime={"inference_precision": "f32"}, calibration=precision == "int8")


def _tensorrt(ctx: BuildContext, precision: str) -> BuiltArtifact:
    from kvqe.export.tensorrt_build import build_engine

    engine = ctx.stage / f"{ctx.prefix}.tensorrt.{precision}.engine"
    task = task_named(ctx.card.task)
    profile = task.profile(ctx.card.input, ctx.tile, _input_channels(ctx.fp32_onnx))
    record = build_engine(ctx.onnx_for(precision), engine, profiles=[{"input": profile}], workspace_bytes=1 << 30)
    if task.tiled:
        record = {**record, "max_tile": ctx.tile}  # the engine's profile bounds the tile the runtime may use
    return BuiltArtifact("tensorrt", precision, (engine, engine.with_suffix(".json")), record,
                         calibration=precision == "int8")


def _input_channels(onnx_path: Path) -> int:
    """Axis 1 of the graph's first input, as the FP32 ONNX fixes it (3, an RGB image, when it does not):
    an inner stage of a pipeline may take more channels than the image has."""
    import onnx

    dims = onnx.load(str(onnx_path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return dims[1].dim_value if len(dims) > 1 and dims[1].dim_value > 0 else 3


BUILDERS: dict[str, Callable[[BuildContext, str], BuiltArtifact]] = {
    "onnx": _onnx,
    "openvino": _openvino,
    "tensorrt": _tensorrt,
}


def requested_artifacts(formats: list[str], precisions: list[str]) -> list[tuple[str, str]]:
    """(format, precision) pairs to build, in a stable order; ``onnxruntime-int8`` is always INT8."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise BadInputError(f"unknown format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    bad = [p for p in precisions if p not in ("fp32", "fp16", "int8")]
    if bad:
        raise BadInputError(f"unknown precision(s) {', '.join(bad)}; choose from fp32, fp16, int8")
    pairs: list[tuple[str, str]] = []
    for fmt in FORMATS:
        if fmt not in formats:
            continue
        for precision in ("int8",) if fmt == "onnxruntime-int8" else precisions:
            backend_pair = ("onnx" if fmt == "onnxruntime-int8" else fmt, precision)
            if backend_pair not in pairs:
                pairs.append(backend_pair)
    return pairs
