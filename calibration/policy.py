"""Quantisation policy per model, as data: which ops stay in float and why, and the quantiser knobs.

Adapters translate one policy for each quantiser (ONNX Runtime: ``op_types_to_quantize`` and
``nodes_to_exclude``; NNCF: ``IgnoredScope`` and ``ModelType``).
"""
from __future__ import annotations

from dataclasses import dataclass

import onnx


@dataclass(frozen=True)
class QuantPolicy:
    """``quantize_ops``: ONNX op types that get int8 (everything else stays float).
    ``exclude_nodes``: ONNX node names kept in float even though their type is quantised.
    ``keep_first_last_conv``: keep the graph's first and last ``float_tail_convs`` Convs in float
    (the layers that work in image space).
    ``transformer``: quantise as a transformer (NNCF ModelType.TRANSFORMER; SmoothQuant is its knob).
    ``smooth_quant``: NNCF SmoothQuant alpha, or None to disable (can collapse small Swins: gate it)."""

    name: str
    quantize_ops: tuple[str, ...]
    exclude_nodes: tuple[str, ...] = ()
    keep_first_last_conv: bool = False
    float_tail_convs: int = 1
    transformer: bool = False
    smooth_quant: float | None = None
    reason: str = ""

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "quantize_ops": list(self.quantize_ops), "exclude_nodes": list(self.exclude_nodes),
                "keep_first_last_conv": self.keep_first_last_conv, "float_tail_convs": self.float_tail_convs,
                "transformer": self.transformer, "smooth_quant": self.smooth_quant, "reason": self.reason}


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

# RRDB (Real-ESRGAN x4plus): besides the first conv, its whole image-space tail (the two upsampling
# convs, conv_hr, conv_last: about 7% of the multiply-adds) stays float. Measured on real photos with
# --calib-size 16: ONNX Runtime INT8 34.2 dB with this policy vs 33.5 dB with only first/last float;
# OpenVINO 31.5 dB either way. Both still miss the 35 dB gate: the error comes from the 23-block trunk.
RRDB_SR_POLICY = QuantPolicy(
    name="rrdb-sr",
    quantize_ops=("Conv",),
    keep_first_last_conv=True,
    float_tail_convs=4,
    reason="trunk convolutions int8; first conv and the 4 image-space tail convs float",
)

# The vqa-student: its fixed statistics divide local deviations and square pixel values (a 7x7 window over
# x and x*x, whose difference is the local variance): one int8 scale cannot hold x*x and the variance
# is a small difference of large numbers, so the statistics stay float and only the learned head's
# matrix products (the ensemble's linear layers) get int8.
NSS_HEAD_POLICY = QuantPolicy(
    name="nss-head",
    quantize_ops=("MatMul", "Gemm"),
    reason="fixed statistics (windowed variance, divisions, logs, sorting) float; the MLP heads int8",
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
