"""Quantisation policy per model, as data: which ops stay in float and why, and the quantiser knobs.

Adapters translate one policy for each quantiser (ONNX Runtime: ``op_types_to_quantize`` and
``nodes_to_exclude``; NNCF: ``IgnoredScope`` and ``ModelType``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import onnx

from kvqe.errors import BadInputError


@dataclass(frozen=True)
class QuantPolicy:
    """``quantize_ops``: ONNX op types that get int8 (everything else stays float).
    ``exclude_nodes``: ONNX node names kept in float even though their type is quantised.
    ``keep_first_last_conv``: keep the graph's first and last ``float_tail_convs`` Convs in float
    (the layers that work in image space).
    ``transformer``: quantise as a transformer (NNCF ModelType.TRANSFORMER; SmoothQuant is its knob).
    ``smooth_quant``: NNCF SmoothQuant alpha, or None to disable (can collapse small Swins: gate it).
    ``conv_smoothing``: SmoothQuant alpha for the inputs of the quantised Convs, applied to the FP32 ONNX
    before either quantiser (:mod:`kvqe.calibration.smoothing`), or None to leave them as they are.
    ``openvino_from_qdq``: OpenVINO INT8 is the QDQ ONNX of ONNX Runtime's calibration converted to IR
    (its Q/DQ pairs become FakeQuantize nodes that the CPU plugin runs in int8) instead of NNCF's own."""

    name: str
    quantize_ops: tuple[str, ...]
    exclude_nodes: tuple[str, ...] = ()
    keep_first_last_conv: bool = False
    float_tail_convs: int = 1
    transformer: bool = False
    smooth_quant: float | None = None
    conv_smoothing: float | None = None
    openvino_from_qdq: bool = False
    reason: str = ""

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "quantize_ops": list(self.quantize_ops), "exclude_nodes": list(self.exclude_nodes),
                "keep_first_last_conv": self.keep_first_last_conv, "float_tail_convs": self.float_tail_convs,
                "transformer": self.transformer, "smooth_quant": self.smooth_quant, "conv_smoothing": self.conv_smoothing,
                "openvino_from_qdq": self.openvino_from_qdq, "reason": self.reason}


# Swin: PTQ of LayerNorm, Softmax, GELU and the residual Adds wrecks accuracy (their activations have
# outliers that one int8 scale cannot hold), so only the matmul-heavy ops are quantised: the linear
# layers (MatMul/Gemm), the patch-embedding Conv, and nothing else.
SWIN_POLICY = QuantPolicy(
    name="swin-matmul-only",
    quantize_ops=("Conv", "MatMul", "Gemm"),
    transformer=True,
    reason="LayerNorm, Softmax, GELU and residual Add kept in float (Swin PTQ outliers)",
)

# Convolutional SR: only convolutions are quantised (PReLU/LeakyReLU, the residual Adds and the pixel-shuffle
# upsampling stay float); the first and last conv work in image space and stay float too
# (docs/decisions/0005-conv-sr-first-last-conv-float.md).
CONV_SR_POLICY = QuantPolicy(
    name="conv-sr",
    quantize_ops=("Conv",),
    keep_first_last_conv=True,
    reason="convolutions int8; activations, residual adds, upsampling in float; first/last conv float",
)

# A diffusion denoiser UNet with Swin blocks whose prediction is vector-quantised next (a latent-diffusion SR
# denoiser): its convolutions and the Swin linear layers get int8 inputs; GroupNorm, Softmax, GELU, SiLU and
# every residual Add stay float, and so do the first conv (it reads the noisy latent and the LR image) and the
# last one (its x0 is vector-quantised: a small error flips codebook entries).
SWIN_UNET_VQ_POLICY = QuantPolicy(
    name="swin-unet-vq",
    quantize_ops=("Conv", "MatMul", "Gemm"),
    keep_first_last_conv=True,
    transformer=True,
    reason="conv and matmul inputs int8; GroupNorm, Softmax, GELU, SiLU, residual adds float; "
           "first conv (noisy latent + LR) and last conv (x0, vector-quantised next) float",
)

# RRDB (Real-ESRGAN x4plus): a trunk conv5 reads cat(x, x1..x4), whose channels' ranges differ too much for
# one per-tensor int8 scale. SmoothQuant on the int8 conv inputs (alpha 0.5) flattens them; the first conv and
# the image-space tail stay float; OpenVINO converts the QDQ ONNX because NNCF's own INT8 misses the gate
# (docs/decisions/0002-rrdb-sr-int8-smoothquant.md, 0003-openvino-int8-from-qdq.md).
RRDB_SR_POLICY = QuantPolicy(
    name="rrdb-sr",
    quantize_ops=("Conv",),
    keep_first_last_conv=True,
    float_tail_convs=4,
    conv_smoothing=0.5,
    openvino_from_qdq=True,
    reason="trunk convolutions int8 with SmoothQuant-smoothed inputs (alpha 0.5); first conv and the 4 "
           "image-space tail convs float (7.6% of the conv multiply-adds); OpenVINO INT8 from the QDQ ONNX",
)

# The vqa-student: its fixed statistics (windowed variance from x and x*x, divisions, logs) cannot share one
# int8 scale, and its frozen backbone's features are a difference of two passes that int8 convs move, so only
# the learned heads' matrix products get int8; OpenVINO converts the QDQ ONNX, as NNCF's own INT8 of the same
# heads failed the SROCC gate (docs/decisions/0004-vqa-student-int8-heads-only.md and
# 0003-openvino-int8-from-qdq.md).
NSS_HEAD_POLICY = QuantPolicy(
    name="nss-head",
    quantize_ops=("MatMul", "Gemm"),
    openvino_from_qdq=True,
    reason="fixed statistics (windowed variance, divisions, logs, sorting) and the frozen backbone of the "
           "fragment contrast float; the MLP heads int8; OpenVINO INT8 from the QDQ ONNX",
)

POLICIES = {policy.name: policy
            for policy in (SWIN_POLICY, CONV_SR_POLICY, RRDB_SR_POLICY, SWIN_UNET_VQ_POLICY, NSS_HEAD_POLICY)}


def float_nodes(model: onnx.ModelProto, policy: QuantPolicy) -> list[str]:
    """Names of the nodes the policy keeps in float although their op type is quantised."""
    names = list(policy.exclude_nodes)
    if policy.keep_first_last_conv:
        convs = [node.name for node in model.graph.node if node.op_type == "Conv"]
        names += sorted({convs[0], *convs[-policy.float_tail_convs:]}) if convs else []
    return names


def int8_layers(model: onnx.ModelProto, policy: QuantPolicy) -> list[str]:
    """Names of the nodes the policy gives int8: the layers a search may keep float on top of the policy's."""
    keep = set(float_nodes(model, policy))
    return [n.name for n in model.graph.node if n.op_type in policy.quantize_ops and n.name not in keep]


def conv_macs(model: onnx.ModelProto, height: int = 64, width: int = 64) -> dict[str, int]:
    """Multiply-adds of every Conv (by node name) for one ``height`` x ``width`` input (batch 1), from ONNX
    shape inference. For a fully convolutional net their shares do not depend on the input size."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    initializers = {t.name: list(t.dims) for t in probe.graph.initializer}
    (data,) = [i for i in probe.graph.input if i.name not in initializers]
    dims = data.type.tensor_type.shape.dim
    for dim, value in zip(dims, (1, 3, height, width)):
        if dim.dim_value <= 0:  # a dynamic axis: give it the probe's size (static ones are kept)
            dim.ClearField("dim_param")
            dim.dim_value = value
    inferred = onnx.shape_inference.infer_shapes(probe, data_prop=True)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in (*inferred.graph.value_info, *inferred.graph.output)}
    macs = {}
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        out, weight = shapes.get(node.output[0], []), initializers.get(node.input[1], [])
        if not out or not weight or 0 in out:
            raise BadInputError(f"cannot infer the shape of Conv {node.name}'s output or weight")
        macs[node.name] = math.prod(out) * math.prod(weight[1:])
    return macs


def mac_share(macs: dict[str, int], float_convs: list[str]) -> float:
    """Share of the Conv multiply-adds ``macs`` (by node name) done by ``float_convs``, rounded to 4 places
    (0.0 for a model without Convs)."""
    total = sum(macs.values())
    return round(sum(macs.get(name, 0) for name in set(float_convs)) / total, 4) if total else 0.0


def float_mac_fraction(model: onnx.ModelProto, float_convs: list[str]) -> float | None:
    """Share of the model's Conv multiply-adds done by ``float_convs`` (the rest run in int8), rounded to
    4 places; None when shape inference cannot size every Conv, 0.0 for a model without Convs."""
    try:
        return mac_share(conv_macs(model), float_convs)
    except BadInputError:
        return None
