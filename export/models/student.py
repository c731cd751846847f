"""``vqa-student``: kvqe's distilled no-reference VQA model (small, multi-scale, two views).

Input per frame: 6 x 224 x 224 (``kvqe.sdk.preprocess.fragments_and_global``): a mosaic of 7 x 7
native-resolution 32 x 32 patches (channels 0-2: compression, blur and noise stay visible) and the
whole frame resized (channels 3-5: content and exposure). Each view goes through its own small
conv pyramid (the context view at half resolution); after every stage the feature map is
pooled into its mean and standard deviation, so low-level detail and global context both reach the
head. Output per frame: a score in [0, 100] (VMAF's scale); the runtime averages frames.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from kvqe.errors import BadInputError
from kvqe.export.registry import ModelCard, register_model
from kvqe.export.weights.checkpoint import checkpoint_provenance, load_strict, read_state_dict

DETAIL_WIDTHS = (32, 64, 96, 128)
CONTEXT_WIDTHS = (16, 32, 48, 64)
SCORE_SCALE = 100.0


def _conv_bn_act(c_in: int, c_out: int, kernel: int, stride: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False),
                               nn.BatchNorm2d(c_out)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class Branch(nn.Module):
    """A plain conv pyramid: a stride-2 stem, then one stage per width (stride-2 conv, then a residual
    3x3 conv); returns every stage's output. Dense 3x3 convolutions: on CPUs they run far faster per
    multiply-add than depthwise ones, which matters for training on two cores."""

    def __init__(self, widths: tuple[int, ...], stem: int = 16) -> None:
        super().__init__()
        self.stem = _conv_bn_act(3, stem, 3, 2)
        self.down = nn.ModuleList()
        self.refine = nn.ModuleList()
        c_in = stem
        for width in widths:
            self.down.append(_conv_bn_act(c_in, width, 3, 2))
            self.refine.append(_conv_bn_act(width, width, 3, act=False))
            c_in = width

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outputs = []
        for down, refine in zip(self.down, self.refine):
            x = down(x)
            x = torch.relu(x + refine(x))
            outputs.append(x)
        return outputs


def mean_std_pool(features: list[torch.Tensor]) -> torch.Tensor:
    """Each map's per-channel mean and standard deviation over H and W, concatenated."""
    pooled = []
    for f in features:
        mean = f.mean(dim=(2, 3))
        std = (f.pow(2).mean(dim=(2, 3)) - mean.pow(2)).clamp_min(1e-6).sqrt()
        pooled += [mean, std]
    return torch.cat(pooled, dim=1)


class KvqeStudent(nn.Module):
    """Two-view, multi-scale, mean/std-pooled student; [N, 6, 224, 224] -> [N, 1] scores in [0, 100]."""

    def __init__(self) -> None:
        super().__init__()
        self.detail = Branch(DETAIL_WIDTHS)
        self.context = Branch(CONTEXT_WIDTHS)
        self.context_downsample = nn.AvgPool2d(2)
        features = 2 * (sum(DETAIL_WIDTHS) + sum(CONTEXT_WIDTHS))
        self.head = nn.Sequential(nn.Linear(features, 128), nn.GELU(), nn.Linear(128, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        detail = mean_std_pool(self.detail(x[:, :3]))
        context = mean_std_pool(self.context(self.context_downsample(x[:, 3:])))
        return SCORE_SCALE * torch.sigmoid(self.head(torch.cat([detail, context], dim=1)))


def _load_student_weights(module: torch.nn.Module, parts: dict[str, Path]) -> dict[str, Any]:
    path = parts.get("model")
    if path is None:
        raise BadInputError("vqa-student needs --weights model=CKPT: a checkpoint made by `kvqe distill`")
    load_strict(module, read_state_dict(path), path)
    provenance: dict[str, Any] = {"source": "kvqe distill checkpoint", "files": checkpoint_provenance("model", path)}
    record = torch.load(path, map_location="cpu", weights_only=True).get("training")
    if isinstance(record, dict):  # written by `kvqe distill`: how the weights were made travels on
        provenance["training"] = record
    return provenance


IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

CARD = ModelCard(
    name="vqa-student",
    task="vqa",
    description="kvqe's distilled no-reference VQA student (VMAF teacher): native-resolution fragments "
    "plus global context, two small CNNs, multi-scale mean/std pooling.",
    input={
        "colour_order": "RGB", "layout": "NCHW", "dtype": "float32", "value_range": [0.0, 1.0],
        "mean": IMAGENET_MEAN * 2, "std": IMAGENET_STD * 2,
        "fragments": {"grid": 7, "patch": 32},
        "sampling": {"kind": "keyframes", "per_second": 1, "position": "middle", "max_frames": 8, "pad": "none"},
    },
    output={"score_range": [0.0, 100.0], "pooling": "mean", "units": "VMAF v0.6.1 (teacher)"},
    # kvqe.export.flops: count_params -> 708,897; count_macs on [8, 6, 224, 224] -> 1,139,104,768
    params=708_897,
    gflops=1.14,
    flops_input="8 keyframes at 6x224x224 (one video)",
    weights_source="a checkpoint distilled with `kvqe distill` (VMAF v0.6.1 teacher by default)",
    licence="Apache-2.0 (kvqe)",
    quant_policy="conv-sr",
)


@register_model(CARD, load_weights=_load_student_weights)
def vqa_student() -> KvqeStudent:
    return KvqeStudent()
