"""OpenVINO IR from the validated FP32 ONNX: FP32 or FP16-compressed IR, and INT8 IR quantised by NNCF.

- :func:`convert_to_ir`: ``openvino.convert_model`` then ``openvino.save_model``; dynamic axes survive. Names
  OpenVINO generates from a process-wide counter (``Constant_9350``) are renumbered by graph position first,
  so the same ONNX always gives the same IR bytes, whatever was converted before in the process.
- :func:`quantize_int8_ir`: ``nncf.quantize`` with the one adapter from :class:`SampleSet` to
  ``nncf.Dataset`` and the model's :class:`QuantPolicy` translated to NNCF's ``IgnoredScope``.
- :func:`ir_from_qdq`: for a policy with ``openvino_from_qdq``, the QDQ ONNX ONNX Runtime runs, converted.

The policy names ONNX op types; NNCF matches OpenVINO op types. :data:`ONNX_TO_OPENVINO` maps what a policy
may quantise, and every other op type NNCF would quantise on CPU (:data:`NNCF_QUANTISABLE`) goes into the
ignored scope, so only the policy's ops get FakeQuantize inputs. An IR is always *executed* at an explicit
precision (see :mod:`kvqe.runtimes.openvino`); FakeQuantize'd ops run in int8 on CPU."""
from __future__ import annotations

import collections
import contextlib
import logging
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx
import openvino as ov

from kvqe.calibration.contract import SampleSet
from kvqe.calibration.policy import QuantPolicy, float_mac_fraction, float_nodes
from kvqe.calibration.smoothing import inverse_scales, smoothed_weight, smoothing_plan
from kvqe.errors import BadInputError, missing_extra

# ONNX op type in a policy -> the OpenVINO op types the ONNX frontend turns it into
ONNX_TO_OPENVINO: dict[str, tuple[str, ...]] = {
    "Conv": ("Convolution", "GroupConvolution"),
    "ConvTranspose": ("ConvolutionBackpropData", "GroupConvolutionBackpropData"),
    "MatMul": ("MatMul",),
    "Gemm": ("MatMul",),
    "Add": ("Add",),
    "Mul": ("Multiply",),
}
# OpenVINO op types NNCF quantises (inputs get FakeQuantize) for CPU: the OpenVINO metatypes whose
# hardware op has an activation or weight quantiser in NNCF 3.x's CPU setup
# (nncf.common.hardware.setups.cpu), plus NormalizeL2 for older NNCF versions. SoftMax and Gelu have
# none: NNCF never puts a FakeQuantize on their inputs.
NNCF_QUANTISABLE: tuple[str, ...] = (
    "AdaptiveAvgPool", "Add", "AvgPool", "Convolution", "ConvolutionBackpropData", "Divide", "Equal", "FloorMod",
    "GRUSequence", "Greater", "GreaterEqual", "GroupConvolution", "GroupConvolutionBackpropData",
    "GroupNormalization", "Interpolate", "LSTMSequence", "Less", "LessEqual", "LogicalAnd", "LogicalNot",
    "LogicalOr", "LogicalXor", "MVN", "MatMul", "Maximum", "Minimum", "Multiply", "NormalizeL2", "NotEqual",
    "Power", "ReduceL2", "ReduceMean", "ReduceSum", "ScaledDotProductAttention", "Sqrt", "Subtract",
)
# ops that only move or convert data: a FakeQuantize before them quantises the input of what follows
LAYOUT_ONLY = frozenset({"Convert", "Reshape", "Transpose", "Concat", "Slice", "StridedSlice", "Squeeze", "Unsqueeze",
                         "Split", "VariadicSplit", "Gather"})
PRESETS = ("performance", "mixed")
_GENERATED_NAME = re.compile(r"^(?P<stem>[A-Za-z][A-Za-z0-9]*)_\d+(?P<rest>(?:[_/].*)?)$")


def convert_to_ir(onnx_path: Path, xml_path: Path, *, compress_to_fp16: bool) -> None:
    """Convert ``onnx_path`` to an IR at ``xml_path`` (``.bin`` beside it), FP32 or with FP16 weights.

    FP16 compression stores the weights in fp16 with Convert (decompression) nodes in front of them; the
    graph still computes at the precision the runtime is compiled with.
    """
    model = _convert(onnx_path)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(xml_path), compress_to_fp16=compress_to_fp16)


def quantize_int8_ir(fp32_xml_or_onnx: Path, xml_path: Path, calibration: SampleSet, policy: QuantPolicy, *,
                     subset_size: int | None = None, preset: str = "performance") -> dict[str, Any]:
    """Quantise the FP32 model with NNCF on ``calibration`` and save the INT8 IR at ``xml_path``.

    Only the policy's op types are quantised; ``keep_first_last_conv`` keeps the first and last
    Convolution float; ``transformer`` selects ``ModelType.TRANSFORMER``, and SmoothQuant runs only when
    the policy gives its alpha; ``conv_smoothing`` smooths the inputs of the Convs that get int8 first (on
    the FP32 ONNX, as for ONNX Runtime). A policy with ``openvino_from_qdq`` is refused: its IR is the QDQ
    ONNX converted (:func:`ir_from_qdq`, as :mod:`kvqe.export.artifacts` does). Returns the calibration
    record for the manifest.
    """
    if policy.openvino_from_qdq:
        raise BadInputError(f"policy {policy.name!r} builds OpenVINO INT8 from the QDQ ONNX: convert that "
                            "with ir_from_qdq instead of quantising with NNCF")
    try:
        import nncf
        from nncf.quantization.advanced_parameters import (
            AdvancedQuantizationParameters,
            AdvancedSmoothQuantParameters,
        )
    except ImportError:
        raise missing_extra("nncf", "export") from None
    if preset not in PRESETS:
        raise BadInputError(f"unknown NNCF preset {preset!r}; choose {' or '.join(PRESETS)}")
    if len(calibration) == 0:
        raise BadInputError("the calibration set is empty")
    subset = len(calibration) if subset_size is None else subset_size
    if not 0 < subset <= len(calibration):
        raise BadInputError(f"subset_size {subset} must be in 1..{len(calibration)} (the calibration set)")

    if policy.smooth_quant is not None and not policy.transformer:
        raise BadInputError(f"policy {policy.name!r}: NNCF applies SmoothQuant only with transformer=True")
    smoothing = None
    onnx_model = onnx.load(str(fp32_xml_or_onnx)) if fp32_xml_or_onnx.suffix == ".onnx" and \
        fp32_xml_or_onnx.is_file() else None
    if onnx_model is not None and policy.conv_smoothing is not None and "Conv" in policy.quantize_ops:
        keep = set(float_nodes(onnx_model, policy))
        convs = [n.name for n in onnx_model.graph.node if n.op_type == "Conv" and n.name not in keep]
        plan, smoothing = smoothing_plan(fp32_xml_or_onnx, calibration, policy.conv_smoothing, convs)
        model = _convert(fp32_xml_or_onnx)
        smooth_ir(model, plan, onnx_model)
    elif policy.conv_smoothing is not None and fp32_xml_or_onnx.suffix == ".xml":
        raise BadInputError(f"policy {policy.name!r} smooths Conv inputs, which needs the FP32 ONNX, not an IR")
    elif fp32_xml_or_onnx.suffix == ".onnx":
        model = _convert(fp32_xml_or_onnx)
    elif fp32_xml_or_onnx.suffix == ".xml" and fp32_xml_or_onnx.is_file():
        model = ov.Core().read_model(str(fp32_xml_or_onnx))
    else:
        raise BadInputError(f"{fp32_xml_or_onnx} is not an existing FP32 ONNX or OpenVINO IR (.xml) file")
    ignored_types, ignored_names = ignored_scope(model, policy)
    float_share = None if onnx_model is None else float_mac_fraction(
        onnx_model, [name.split("/")[0] for name in ignored_names])
    del onnx_model  # a diffusion UNet's graph can be large: not held through calibration
    before = {op.get_friendly_name() for op in model.get_ops()}
    alpha = -1.0 if policy.smooth_quant is None else float(policy.smooth_quant)
    model_type = nncf.ModelType.TRANSFORMER if policy.transformer else None
    dataset = nncf.Dataset(calibration.images, calibration.transform)  # the one SampleSet -> NNCF adapter
    with _output_to_stderr():  # NNCF's progress bars and log lines: keep stdout for --json
        quantized = nncf.quantize(
            model, dataset,
            preset=nncf.QuantizationPreset.MIXED if preset == "mixed" else nncf.QuantizationPreset.PERFORMANCE,
            target_device=nncf.TargetDevice.CPU,
            subset_size=subset,
            model_type=model_type,
            ignored_scope=nncf.IgnoredScope(names=ignored_names, types=ignored_types, validate=True),
            advanced_parameters=AdvancedQuantizationParameters(
                smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=alpha)),
        )
    _canonical_names(quantized, before)  # NNCF's new constants are named from the process-wide counter
    consumers = fake_quantize_consumers(quantized)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(xml_path), compress_to_fp16=False)
    return {
        "quantizer": "nncf", "nncf": nncf.__version__, "openvino": ov.get_version(), "policy": policy.name,
        "preset": preset, "target_device": "CPU", "subset_size": subset,
        "model_type": "transformer" if policy.transformer else None,
        "smooth_quant": None if alpha < 0 else alpha,
        "ignored_types": ignored_types, "ignored_names": ignored_names,
        "fake_quantize_nodes": _count(quantized, "FakeQuantize"),
        "fake_quantize_consumers": dict(sorted(consumers.items())),
        "float_conv_mac_fraction": float_share,
        "smoothing": smoothing,
        "int8_weight_constants": sum(op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8
                                     for op in quantized.get_ops()),
    }


def ir_from_qdq(qdq_onnx: Path, xml_path: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Convert an already calibrated QDQ ONNX (``record``: its calibration record) into the INT8 IR at
    ``xml_path``; returns the record for the manifest."""
    model = _convert(qdq_onnx)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    return {**record, "quantizer": "onnxruntime (QDQ ONNX) -> openvino.convert_model", "openvino": ov.get_version(),
            "fake_quantize_nodes": _count(model, "FakeQuantize"),
            "fake_quantize_consumers": dict(sorted(fake_quantize_consumers(model).items()))}


def smooth_ir(model: ov.Model, plan: dict[str, Any], onnx_model: onnx.ModelProto) -> None:
    """Apply a smoothing plan (:func:`kvqe.calibration.smoothing.smoothing_plan`: ONNX Conv name -> input
    channel scales ``s``) to ``model``, converted from ``onnx_model``: a ``Multiply`` by ``1/s``
    (``<conv>__smooth``) in front of each Convolution and its weights times ``s``. Done on the ov.Model, not
    on the ONNX, because OpenVINO's converter folds a Mul by a constant into the Convolution after it.

    The converter may also fold a Mul *after* a Convolution into it and rename it, so Convolutions are
    matched to ONNX Convs by graph position, checked by weight shape and, where OpenVINO kept it, by name.
    """
    from openvino import opset13

    existing = {op.get_friendly_name() for op in model.get_ops()}
    initializers = {t.name: tuple(t.dims) for t in onnx_model.graph.initializer}
    onnx_convs = [(n.name, initializers.get(n.input[1])) for n in onnx_model.graph.node if n.op_type == "Conv"]
    ov_convs = [op for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"]
    onnx_names = {name for name, _ in onnx_convs}
    mismatched = [name for (name, shape), op in zip(onnx_convs, ov_convs)
                  if tuple(op.input_value(1).get_partial_shape().to_shape()) != shape
                  or (op.get_friendly_name().split("/")[0] in onnx_names and op.get_friendly_name().split("/")[0] != name)]
    if len(onnx_convs) != len(ov_convs) or mismatched:
        raise BadInputError(f"cannot match the OpenVINO Convolutions to the ONNX Convs ({len(ov_convs)} vs "
                            f"{len(onnx_convs)}; first mismatch: {mismatched[:1]})")
    by_name = {name: op for (name, _), op in zip(onnx_convs, ov_convs)}
    missing = sorted(set(plan) - set(by_name))
    if missing:
        raise BadInputError(f"cannot smooth {', '.join(missing[:5])}: no such Conv in the ONNX model")
    for name, scales in plan.items():
        conv = by_name[name]
        weight_node = conv.input_value(1).get_node()
        if weight_node.get_type_name() != "Constant":
            raise BadInputError(f"cannot smooth {name}: its weights are computed ({weight_node.get_type_name()})")
        weight = weight_node.get_data()
        conv.input(1).replace_source_output(opset13.constant(smoothed_weight(weight, scales)).output(0))
        inverse = opset13.constant(inverse_scales(scales, weight.ndim))
        multiply = opset13.multiply(conv.input_value(0), inverse)
        multiply.set_friendly_name(f"{name}__smooth")
        conv.input(0).replace_source_output(multiply.output(0))
    model.validate_nodes_and_infer_types()
    _canonical_names(model, existing | {f"{name}__smooth" for name in plan})  # the new constants' counter names


def ignored_scope(model: ov.Model, policy: QuantPolicy) -> tuple[list[str], list[str]]:
    """The policy as NNCF's ignored scope over ``model``: (OpenVINO op types, node names).

    Types: every op type present that NNCF would quantise and the policy does not. Names: the policy's
    ``exclude_nodes`` (ONNX node names; the frontend keeps them, matched exactly or as ``name/...``),
    and with ``keep_first_last_conv`` the first and the last ``float_tail_convs`` Convolutions in graph order.
    """
    unknown = [op for op in policy.quantize_ops if op not in ONNX_TO_OPENVINO]
    if unknown:
        raise BadInputError(f"policy {policy.name!r} quantises ONNX op types {unknown} that kvqe cannot map to "
                            f"OpenVINO op types (known: {', '.join(ONNX_TO_OPENVINO)})")
    quantised = {ov_type for op in policy.quantize_ops for ov_type in ONNX_TO_OPENVINO[op]}
    ops = model.get_ordered_ops()
    present = {op.get_type_name() for op in ops}
    types = sorted((present & set(NNCF_QUANTISABLE)) - quantised)
    names: list[str] = []
    for wanted in policy.exclude_nodes:
        matches = [op.get_friendly_name() for op in ops if op.get_type_name() in quantised
                   and op.get_friendly_name().split("/")[0] == wanted]
        if not matches:
            raise BadInputError(f"policy {policy.name!r} excludes node {wanted!r}, which is not in the model")
        names += matches
    if policy.keep_first_last_conv:
        convs = [op.get_friendly_name() for op in ops if op.get_type_name() in ("Convolution", "GroupConvolution")]
        names += [convs[0], *convs[-policy.float_tail_convs:]] if convs else []
    return types, sorted(set(names))


def quantisable_names(onnx_path: Path, policy: QuantPolicy) -> set[str]:
    """ONNX node names still of a type the policy quantises after OpenVINO's conversion, which fuses some (an
    attention's MatMuls become ScaledDotProductAttention): the nodes NNCF's ignored scope can name."""
    quantised = {ov_type for op in policy.quantize_ops for ov_type in ONNX_TO_OPENVINO.get(op, ())}
    return {op.get_friendly_name().split("/")[0] for op in _convert(onnx_path).get_ordered_ops()
            if op.get_type_name() in quantised}


def fake_quantize_consumers(model: ov.Model) -> collections.Counter[str]:
    """How many times a FakeQuantize output reaches each op type, looking through the layout-only ops
    (:data:`LAYOUT_ONLY`) NNCF propagates quantisers across (e.g. Swin's window roll: Slice + Concat)."""
    counts: collections.Counter[str] = collections.Counter()
    for op in model.get_ops():
        if op.get_type_name() != "FakeQuantize":
            continue
        stack = [op]
        while stack:
            for output in stack.pop().outputs():
                for target in output.get_target_inputs():
                    node = target.get_node()
                    if node.get_type_name() in LAYOUT_ONLY:
                        stack.append(node)
                    else:
                        counts[node.get_type_name()] += 1
    return counts


@contextlib.contextmanager
def _output_to_stderr() -> Iterator[None]:
    """Send stdout and NNCF's logger (whose handler holds ``sys.stdout``) to stderr for the duration, the
    logger at WARNING: its INFO lines list every node it leaves unquantised, which the record already holds."""
    logger = logging.getLogger("nncf")
    handlers = [h for h in logger.handlers
                if isinstance(h, logging.StreamHandler) and h.stream in (sys.stdout, sys.__stdout__)]
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    for handler in handlers:
        handler.setStream(sys.stderr)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        logger.setLevel(level)
        for handler in handlers:
            handler.setStream(sys.stdout)


def _count(model: ov.Model, op_type: str) -> int:
    return sum(op.get_type_name() == op_type for op in model.get_ops())


def _convert(onnx_path: Path) -> ov.Model:
    """``openvino.convert_model`` with the generated node names renumbered by graph position.

    A graph whose Scan bodies read tensors of the enclosing graph (chunked attention and vector quantizers
    written as loops) is converted from a copy where those reads are explicit (:func:`scan_without_outer_scope`):
    OpenVINO's ONNX frontend miscounts a Scan's state variables otherwise.
    """
    if not onnx_path.is_file():
        raise BadInputError(f"{onnx_path} does not exist")
    source = onnx.load(str(onnx_path))
    if scan_without_outer_scope(source):
        with tempfile.TemporaryDirectory(prefix="kvqe-ov-") as tmp:
            explicit = Path(tmp) / onnx_path.name
            onnx.save(source, str(explicit))
            model = ov.convert_model(str(explicit))
    else:
        model = ov.convert_model(str(onnx_path))
    _canonical_names(model, _onnx_names(onnx_path))
    return model


def _outer_reads(graph: onnx.GraphProto) -> list[str]:
    """Names ``graph`` (and the subgraphs in it) reads but does not define: tensors of enclosing graphs."""
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    defined |= {out for node in graph.node for out in node.output if out}
    reads: list[str] = []
    for node in graph.node:
        reads += [name for name in node.input if name]
        for attribute in node.attribute:
            for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                reads += _outer_reads(sub)
    return [name for name in dict.fromkeys(reads) if name not in defined]


def scan_without_outer_scope(model: onnx.ModelProto) -> bool:
    """Rewrite every top-level Scan whose body reads enclosing-graph tensors so that it reads none: constants
    (initializers, Constant nodes) are copied into the body, computed tensors become extra state variables
    passed through unchanged (with their inferred types, so ranks stay known). Same results; returns
    whether anything changed. OpenVINO's ONNX frontend needs this (it counts outer reads as state)."""
    scans = [node for node in model.graph.node if node.op_type == "Scan"]
    if not any(_outer_reads(next(a.g for a in n.attribute if a.name == "body")) for n in scans):
        return False
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type for v in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)}
    constants = {t.name: t for t in model.graph.initializer}
    constants.update({n.output[0]: n.attribute[0].t for n in model.graph.node
                      if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    for node in scans:
        body = next(a.g for a in node.attribute if a.name == "body")
        outer = _outer_reads(body)
        if not outer:
            continue
        renamed = {name: f"{name}__{'body' if name in constants else 'carry_in'}" for name in outer}
        for inner in body.node:
            for k, name in enumerate(inner.input):
                inner.input[k] = renamed.get(name, name)
        copied = []
        for name in (n for n in outer if n in constants):
            tensor = onnx.TensorProto()
            tensor.CopyFrom(constants[name])
            tensor.name = renamed[name]
            copied.append(onnx.helper.make_node("Constant", [], [renamed[name]], value=tensor))
        carried = [n for n in outer if n not in constants]
        missing = [n for n in carried if n not in types]
        if missing:
            raise BadInputError(f"cannot infer the types of {', '.join(missing)} read by Scan {node.name}")
        nodes = copied + list(body.node) + [onnx.helper.make_node("Identity", [renamed[n]], [f"{n}__carry_out"])
                                            for n in carried]
        del body.node[:]
        body.node.extend(nodes)
        scan_inputs = next(a.i for a in node.attribute if a.name == "num_scan_inputs")
        states = len(node.input) - scan_inputs
        body_inputs = (list(body.input[:states]) + [onnx.helper.make_value_info(renamed[n], types[n]) for n in carried]
                       + list(body.input[states:]))
        body_outputs = (list(body.output[:states])
                        + [onnx.helper.make_value_info(f"{n}__carry_out", types[n]) for n in carried]
                        + list(body.output[states:]))
        node_inputs = list(node.input[:states]) + carried + list(node.input[states:])
        node_outputs = (list(node.output[:states]) + [f"{node.name}__{n}__carry_final" for n in carried]
                        + list(node.output[states:]))
        for field, values in ((body.input, body_inputs), (body.output, body_outputs), (node.input, node_inputs),
                              (node.output, node_outputs)):
            del field[:]
            field.extend(values)
    return True


def _onnx_names(path: Path) -> set[str]:
    graph = onnx.load(str(path), load_external_data=False).graph
    names = {node.name for node in graph.node} | {out for node in graph.node for out in node.output}
    return names | {i.name for i in graph.initializer} | {i.name for i in graph.input} | {o.name for o in graph.output}


def _canonical_names(model: ov.Model, kept: set[str]) -> None:
    """Rename ops whose friendly name OpenVINO generated (``<Type>_<counter>[...]``, not from the ONNX) to
    ``<Type>_<position in graph order>[...]``; names the ONNX gave are kept."""
    generated = []
    taken = set()
    for position, op in enumerate(model.get_ordered_ops()):
        name = op.get_friendly_name()
        match = _GENERATED_NAME.match(name)
        if match is None or name.split("/")[0] in kept:
            taken.add(name)
        else:
            generated.append((position, op, match))
    for position, op, match in generated:
        new = f"{match['stem']}_{position}{match['rest']}"
        while new in taken:
            new += "_"
        taken.add(new)
        op.set_friendly_name(new)
