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

# Convolutional SR: convolutions are quantised; PReLU/LeakyReLU, the residual Adds, the nearest/pixel
# shuffle upsampling and the final image-space convs are decided by the sensitivity analysis recorded
# in the export report (first and last conv carry the image range and are excluded).
CONV_SR_POLICY = QuantPolicy(
    name="conv-sr",
    quantize_ops=("Conv",),
    keep_first_last_conv=True,
    reason="convolutions int8; activations, residual adds, upsampling in float; first/last conv float",
)

# SinSR's denoiser (UNetModelSwin): its convolutions and the Swin linear layers get int8 inputs; GroupNorm,
# Softmax, GELU, SiLU and every residual Add stay float, and so do the first conv (it reads the noisy latent
# and the LR image) and the last one (its x0 is vector-quantised: a small error flips codebook entries).
SINSR_UNET_POLICY = QuantPolicy(
    name="sinsr-unet",
    quantize_ops=("Conv", "MatMul", "Gemm"),
    keep_first_last_conv=True,
    transformer=True,
    reason="conv and matmul inputs int8; GroupNorm, Softmax, GELU, SiLU, residual adds float; "
           "first conv (noisy latent + LR) and last conv (x0, vector-quantised next) float",
)

# RRDB (Real-ESRGAN x4plus): the error comes from the trunk's dense concatenations. A conv5 reads
# cat(x, x1..x4), where the last growth feature x4 reaches ~5x the range of the trunk channels (72x between
# the widest and narrowest channel of one conv input), and one per-tensor int8 scale must hold them all.
# SmoothQuant on the Conv inputs (alpha 0.5, a float Mul per int8 Conv: 0.2% of the multiply-adds) brings
# that ratio to 9x. The first conv and the image-space tail (the two upsampling convs, conv_hr, conv_last)
# stay float: 7.6% of the Conv multiply-adds; the other 346 Convs (92.4%) are int8.
# Measured (validation: 8 crops of 96x96 from two held-out photos; --calib-size 16 from
# /work/data/calib_sr: 3 scikit-image photos + carphone.mp4; PSNR/SSIM of the uint8 output vs FP32):
#   ONNX Runtime, percentile: no smoothing 34.2 dB / 0.914 (33.1 dB with every conv int8); minmax 30.9 dB;
#     percentile 99.99 instead of ORT's default 99.999: 35.0 dB. Float trunk convs instead of
#     smoothing: every conv5 (+43% of MACs float) 37.0 dB, every conv1 (+7%) 35.1 dB, conv5 of the last 23
#     RDBs (+14%) 35.6 dB, both (+21%) 37.0 dB. Output Q/DQ of conv5 dropped: 34.3 dB; its input Q/DQ
#     dropped: 35.7 dB (the input quantiser is the error). With smoothing (this policy): 38.2 dB / 0.964.
#   OpenVINO, NNCF (performance preset, its default mean-of-minmax activation ranges): no smoothing 31.5 dB
#     / 0.869 (global minmax ranges 30.1 dB). Smoothing the ONNX changed nothing (31.5 dB): OpenVINO's
#     converter folds the Mul into the Convolution, so it is inserted into the converted model instead; with
#     it 33.7 dB / 0.933 (mean-quantile ranges 33.8 dB, histogram ranges 33.7 dB, mixed preset 33.7 dB;
#     fast_bias_correction off, i.e. NNCF's full BiasCorrection, did not finish in 10 min here): still short.
#   OpenVINO running this policy's QDQ ONNX (converted: FakeQuantize, 346 Convolutions executed as u8 by
#     the CPU plugin, 5 in f32): 38.1 dB / 0.964. So OpenVINO INT8 is built from the QDQ ONNX.
# Whole export (kvqe-export realesrgan-x4plus --formats onnx,openvino,onnxruntime-int8 --precision
# fp32,fp16,int8 --calib /work/data/calib_sr): --calib-size 16: ORT INT8 38.2 dB / 0.964, OpenVINO INT8
# 38.1 dB / 0.964, 205 s; default --calib-size 64 (28 samples): 38.3 and 38.2 dB / 0.963, 458 s (shared CPU).
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

# The vqa-student: its fixed statistics divide local deviations and square pixel values (a 7x7 window over
# x and x*x, whose difference is the local variance): one int8 scale cannot hold x*x and the variance
# is a small difference of large numbers, so the statistics stay float and only the learned heads'
# matrix products (the two ensembles' linear layers) get int8. The frozen EfficientNet-Lite0 of the fragment
# contrast stays float too: its features are a difference of two passes (fragments minus whole frame), and
# int8 convs move that difference. Measured (session 9; --calib: 24 test-split videos of the distillation set,
# 7 validation videos; the 33 backbone convs int8, the 6 statistics convs float): scores off FP32 by up to
# 10.7 points in ONNX Runtime (PLCC 0.983) and 4.1 in OpenVINO, against 0.39 and 0.54 with this policy, and
# no speed to show for it (ONNX Runtime, 8 keyframes, 2 threads: 0.388 s against 0.385 s here, FP32 0.401 s).
# OpenVINO INT8 is ONNX Runtime's QDQ model converted: NNCF's own quantisation of the same heads (nncf 3.4.0,
# openvino 2026.4.1; session 16, --calib: 24 test-split videos) moved the 126 test-split scores off FP32 by up
# to 5.19 points (mean 0.58) and failed the SROCC gate on its 7 validation videos (0.964), where the QDQ model
# moves them by up to 0.58 (mean 0.13) in both runtimes (24 training-split videos as --calib: 1.12 against
# 0.36 on the validation videos).
NSS_HEAD_POLICY = QuantPolicy(
    name="nss-head",
    quantize_ops=("MatMul", "Gemm"),
    openvino_from_qdq=True,
    reason="fixed statistics (windowed variance, divisions, logs, sorting) and the frozen backbone of the "
           "fragment contrast float; the MLP heads int8; OpenVINO INT8 from the QDQ ONNX",
)

POLICIES = {policy.name: policy
            for policy in (SWIN_POLICY, CONV_SR_POLICY, RRDB_SR_POLICY, SINSR_UNET_POLICY, NSS_HEAD_POLICY)}


def float_nodes(model: onnx.ModelProto, policy: QuantPolicy) -> list[str]:
    """Names of the nodes the policy keeps in float although their op type is quantised."""
    names = list(policy.exclude_nodes)
    if policy.keep_first_last_conv:
        convs = [node.name for node in model.graph.node if node.op_type == "Conv"]
        names += sorted({convs[0], *convs[-policy.float_tail_convs:]}) if convs else []
    return names


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


def float_mac_fraction(model: onnx.ModelProto, float_convs: list[str]) -> float | None:
    """Share of the model's Conv multiply-adds done by ``float_convs`` (the rest run in int8), rounded to
    4 places; None when shape inference cannot size every Conv, 0.0 for a model without Convs."""
    try:
        macs = conv_macs(model)
    except BadInputError:
        return None
    total = sum(macs.values())
    return round(sum(macs.get(name, 0) for name in set(float_convs)) / total, 4) if total else 0.0
