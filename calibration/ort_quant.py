"""ONNX Runtime static quantisation to a QDQ ONNX: the one adapter from :class:`SampleSet` to ORT's
``CalibrationDataReader``, :class:`QdqCalibration` (calibrate once, quantise many variants) and
:func:`quantize_qdq`.

The QDQ model is built for every consumer at once (ONNX Runtime CPU, OpenVINO, TensorRT's explicit
quantisation), so it follows TensorRT's rules, which are the strictest:

- int8 activations and weights, symmetric (zero point 0; weights in [-127, 127]);
- weights per output channel (``per_channel``), activations per tensor;
- biases stay float: TensorRT's ``DequantizeLinear`` takes int8/fp8/int4 but not int32, so ORT's
  default int32 bias quantisation (``QuantizeBias``) is switched off;
- only the policy's op types are quantised, and the policy's float nodes are excluded.

Where activations are quantised depends on the policy. Convolutional policies quantise the inputs and
the outputs of quantised ops (ORT's default; ONNX Runtime CPU then fuses QLinearConv chains, the faster
form). Transformer policies quantise only the inputs of quantised ops, so no op the policy keeps in float
(LayerNorm, Softmax, GELU, residual Add) ever reads a re-quantised tensor; that is also TensorRT's
recommended Q/DQ placement.

ORT's ``quant_pre_process`` is not run: its symbolic shape inference fails on the SR graphs' dynamic
height/width, and it would change little else (``docs/decisions/0006-one-qdq-onnx-for-every-runtime.md``).
Every file ORT writes (shape-inferred copy, augmented calibration model) goes to a
temporary directory, never beside the input or in the working directory.
"""
from __future__ import annotations

import collections
import contextlib
import io
import logging
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

from kvqe.calibration.contract import SampleSet
from kvqe.calibration.policy import QuantPolicy, conv_macs, float_nodes, int8_layers, mac_share
from kvqe.calibration.smoothing import smooth_conv_inputs
from kvqe.errors import BadInputError
from kvqe.files import atomic_output_file

METHODS: dict[str, CalibrationMethod] = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}
# symmetric int8 everywhere, float bias (see the module docstring). Not "CalibMaxIntermediateOutputs":
# ORT 1.31's MinMax calibrator drops (never reduces) the batches it clears, and MinMax only keeps
# per-tensor minima and maxima anyway.
EXTRA_OPTIONS: dict[str, Any] = {
    "ActivationSymmetric": True,
    "WeightSymmetric": True,
    "QuantizeBias": False,
}
# histogram calibrators keep every full activation of a collect pass in memory: feed them in strides of
# at most this many samples (their histograms merge across strides)
HISTOGRAM_STRIDE = 8


class SampleSetReader(CalibrationDataReader):
    """ORT ``CalibrationDataReader`` over a :class:`SampleSet`: ``{input_name: transform(image)}`` per
    image (batch of 1), in order; :meth:`rewind` starts again."""

    def __init__(self, samples: SampleSet, input_name: str) -> None:
        self.samples = samples
        self.input_name = input_name
        self._start, self._end = 0, len(samples)
        self._iterator: Iterator[int] = iter(range(self._start, self._end))

    def get_next(self) -> dict[str, np.ndarray] | None:
        index = next(self._iterator, None)
        if index is None:
            return None
        return {self.input_name: self.samples.transform(self.samples.images[index])}

    def rewind(self) -> None:
        self._iterator = iter(range(self._start, self._end))

    def set_range(self, start_index: int, end_index: int) -> None:
        self._start, self._end = start_index, min(end_index, len(self.samples))
        self.rewind()

    def __len__(self) -> int:
        return len(self.samples)


def graph_input_name(model: onnx.ModelProto) -> str:
    """The single non-initializer graph input of ``model``."""
    initializers = {i.name for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in initializers]
    if len(names) != 1:
        raise BadInputError(f"expected a model with one input, found {names}")
    return names[0]


def quantized_node_counts(model: onnx.ModelProto, op_types: tuple[str, ...]) -> dict[str, int]:
    """Nodes of ``op_types`` whose data input comes from a ``DequantizeLinear`` (they run in int8), by
    op type."""
    dq_outputs = {out for node in model.graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    counts = collections.Counter(
        node.op_type for node in model.graph.node
        if node.op_type in op_types and node.input and node.input[0] in dq_outputs
    )
    return dict(sorted(counts.items()))


class QdqCalibration:
    """One model calibrated once: the FP32 ONNX as the quantiser sees it (the inputs of the policy's int8 Convs
    smoothed when the policy says so) and its activation ranges on ``calibration``. :meth:`quantize` then
    writes QDQ models with more layers kept float without calibrating again (ORT's calibration cache), so
    an accuracy search tries many variants at the cost of one calibration. A variant is the model
    :func:`quantize_qdq` would write with the same ``exclude``, except that smoothing always follows the
    policy (a smoothed Conv left float computes the same function).

    Holds a temporary directory: use it as a context manager. Not to be shared between threads.
    """

    def __init__(self, fp32_onnx: Path, calibration: SampleSet, policy: QuantPolicy, *, method: str = "minmax",
                 per_channel: bool = True) -> None:
        if method not in METHODS:
            raise BadInputError(f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}")
        if len(calibration) == 0:
            raise BadInputError("the calibration set is empty")
        self.fp32_onnx, self.calibration, self.policy = fp32_onnx, calibration, policy
        self.method, self.per_channel = method, per_channel
        model = onnx.load(str(fp32_onnx))
        self.input_name = graph_input_name(model)
        self.policy_float = tuple(sorted(float_nodes(model, policy)))
        self.candidates = tuple(int8_layers(model, policy))
        int8_convs = [n.name for n in model.graph.node if n.op_type == "Conv" and n.name not in self.policy_float]
        try:
            self._macs: dict[str, int] | None = conv_macs(model)
        except BadInputError:
            self._macs = None
        del model
        self._tmp = tempfile.TemporaryDirectory(prefix="kvqe-quant-")
        self.source = Path(self._tmp.name) / "model.fp32.onnx"  # ORT writes "<input>-inferred.onnx" beside it
        self._cache = Path(self._tmp.name) / "ranges.json"
        self.smoothing = None
        if policy.conv_smoothing is not None and "Conv" in policy.quantize_ops:
            self.smoothing = smooth_conv_inputs(fp32_onnx, self.source, calibration, policy.conv_smoothing,
                                                int8_convs)
        else:
            shutil.copyfile(fp32_onnx, self.source)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._tmp.cleanup()

    def quantize(self, out_onnx: Path, exclude: Sequence[str] = ()) -> dict[str, Any]:
        """Write the symmetric int8 QDQ model to ``out_onnx`` with ``exclude`` (node names) kept float on top
        of the policy's float nodes; returns the calibration record for the manifest. The first call
        calibrates; later ones reuse its ranges."""
        unknown = sorted(set(exclude) - set(self.candidates))
        if unknown:
            raise BadInputError(f"cannot keep {', '.join(unknown[:5])} float: not among the layers policy "
                                f"{self.policy.name!r} quantises in {self.fp32_onnx.name}")
        policy = self.policy
        keep_float = sorted({*self.policy_float, *exclude})
        with tempfile.TemporaryDirectory(prefix="kvqe-qdq-") as tmp:
            staged = Path(tmp) / "model.qdq.onnx"
            with _quiet_ort_logging(), contextlib.redirect_stdout(io.StringIO()):  # its progress print()s
                quantize_static(
                    self.source, staged, SampleSetReader(self.calibration, self.input_name),
                    quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(policy.quantize_ops),
                    per_channel=self.per_channel,
                    reduce_range=False,
                    activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8,
                    nodes_to_exclude=keep_float,
                    calibrate_method=METHODS[self.method],
                    extra_options=_extra_options(policy, self.method, len(self.calibration)),
                    calibration_cache_path=self._cache,
                )
            quantized = onnx.load(str(staged))
            with atomic_output_file(out_onnx) as partial:
                shutil.copyfile(staged, partial)
        counts = quantized_node_counts(quantized, policy.quantize_ops)
        if not counts:
            raise BadInputError(f"{self.fp32_onnx.name}: policy {policy.name!r} quantised no node "
                                f"(op types {list(policy.quantize_ops)})")
        return {
            "quantizer": "onnxruntime",
            "onnxruntime": ort.__version__,
            "format": "QDQ",
            "method": self.method,
            "per_channel": self.per_channel,
            "activations": "int8 symmetric per-tensor, "
                           + ("inputs and outputs of quantised ops" if _quantize_outputs(policy)
                              else "inputs of quantised ops only"),
            "weights": "int8 symmetric " + ("per-channel" if self.per_channel else "per-tensor"),
            "bias": "float",
            "policy": policy.name,
            "samples": len(self.calibration),
            "quantized_nodes": counts,
            "float_nodes": keep_float,
            "float_conv_mac_fraction": None if self._macs is None else mac_share(self._macs, keep_float),
            "smoothing": self.smoothing,
        }


def quantize_qdq(
    fp32_onnx: Path,
    out_onnx: Path,
    calibration: SampleSet,
    policy: QuantPolicy,
    *,
    method: str = "minmax",
    per_channel: bool = True,
    exclude: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Calibrate ``fp32_onnx`` on ``calibration`` and write the symmetric int8 QDQ model to ``out_onnx``.

    ``exclude``: more node names to keep in float, on top of the policy's (the sensitivity analysis uses
    it). With the policy's ``conv_smoothing``, the inputs of the policy's int8 Convs are smoothed first
    (:func:`~kvqe.calibration.smoothing.smooth_conv_inputs`, same FP32 function, one float Mul per Conv).
    Returns the calibration record for the manifest. The output bytes are the same for the same
    inputs (ORT's calibration and quantiser are deterministic on CPU; a test holds it to that).
    """
    with QdqCalibration(fp32_onnx, calibration, policy, method=method, per_channel=per_channel) as calibrated:
        return calibrated.quantize(out_onnx, exclude)


def _extra_options(policy: QuantPolicy, method: str, samples: int) -> dict[str, Any]:
    options = dict(EXTRA_OPTIONS)
    if not _quantize_outputs(policy):
        options["OpTypesToExcludeOutputQuantization"] = list(policy.quantize_ops)
    if method != "minmax":
        options["CalibStridedMinMax"] = max(d for d in range(1, HISTOGRAM_STRIDE + 1) if samples % d == 0)
    return options


def _quantize_outputs(policy: QuantPolicy) -> bool:
    return not policy.transformer


class _DropQuantizerWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno <= logging.WARNING and "quantization" in Path(record.pathname).parts)


@contextlib.contextmanager
def _quiet_ort_logging() -> Iterator[None]:
    """ORT's quantiser logs "please consider pre-processing" warnings on the root logger; drop its
    warnings while it runs (not pre-processing is deliberate, see the module docstring)."""
    root = logging.getLogger()
    dropper = _DropQuantizerWarnings()
    root.addFilter(dropper)
    try:
        yield
    finally:
        root.removeFilter(dropper)
