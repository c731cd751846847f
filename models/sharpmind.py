"""``vqa-sharpmind-swint``: the student of SharpMind, winner of the NTIRE 2025 short-form UGC video quality
(KVQ) challenge.

A Swin-T backbone (torchvision layout under ``backbone.``) gives the outputs of its 4 stages; each is
averaged over H and W and the 96+192+384+768 = 1440 values are concatenated. Stage 4 is taken as the
stage output itself, not after torchvision's final ``norm``, so the backbone carries neither ``norm`` nor
``head``. A small head (Linear 1440->128, GELU, Linear 128->1) maps the vector to a per-frame score; the
runtime averages the frames into the video score.

Checkpoints must hold this layout: ``backbone.features.*`` (torchvision ``swin_t`` keys, ``norm.*`` and
``head.*`` left out) plus ``head.0.*`` and ``head.2.*``. A torchvision ``swin_t`` state_dict without its
``norm.*``/``head.*`` keys loads strictly into ``model.backbone``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kvqe.errors import BadInputError
from kvqe.models.registry import ModelCard, register_model
from kvqe.models.swin import STAGE_DIMS, SwinTBackbone
from kvqe.models.weights.checkpoint import checkpoint_provenance, load_strict, read_state_dict
from kvqe.specs import Crop, InputSpec, OutputSpec, Resize, Sampling

HIDDEN = 128


class SharpMindStudent(nn.Module):
    """Per-frame quality score: [N, 3, 224, 224] normalised RGB -> [N, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = SwinTBackbone()
        self.head = nn.Sequential(nn.Linear(sum(STAGE_DIMS), HIDDEN), nn.GELU(), nn.Linear(HIDDEN, 1))

    def forward(self, x: Tensor) -> Tensor:
        pooled = [stage.mean(dim=(1, 2)) for stage in self.backbone(x)]
        return self.head(torch.cat(pooled, dim=1))


def _load_weights(module: nn.Module, parts: dict[str, Path]) -> dict[str, Any]:
    """Fill ``module`` strictly from the user's ``model`` checkpoint; return its provenance."""
    path = parts.get("model")
    if path is None:
        raise BadInputError(
            "vqa-sharpmind-swint has no default weights: pass --weights model=PATH "
            "(a state_dict of this layout: backbone.features.* in torchvision swin_t keys, plus head.*)"
        )
    load_strict(module, read_state_dict(path), path)
    return {"source": "user checkpoint", "files": checkpoint_provenance("model", path)}


CARD = ModelCard(
    name="vqa-sharpmind-swint",
    task="vqa",
    description="SharpMind NTIRE 2025 KVQ student: Swin-T multi-stage pooled features, MLP head",
    input=InputSpec(
        colour_order="RGB", layout="NCHW", dtype="float32", value_range=(0.0, 1.0),
        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
        resize=Resize(short_side=224, interpolation="area"), crop=Crop(height=224, width=224),
        sampling=Sampling(kind="keyframes", per_second=1, position="middle", max_frames=8, pad="repeat_last"),
    ),
    output=OutputSpec(score_range=(0.0, 1.0), pooling="mean"),
    # kvqe.models.flops: count_params -> 27,702,395; count_macs on [8, 3, 224, 224] -> 35,919,864,832.
    params=27_702_395,
    gflops=35.92,
    flops_input="8 keyframes at 224x224 (one video)",
    weights_source="user checkpoint (state_dict of this layout; e.g. a fine-tuned torchvision swin_t backbone)",
    quant_policy="swin-matmul-only",
    licence="as the user's checkpoint",
    weight_parts=("model",),
    default_weights=None,
)


@register_model(CARD, load_weights=_load_weights)
def vqa_sharpmind_swint() -> SharpMindStudent:
    """Untrained ``vqa-sharpmind-swint`` student."""
    return SharpMindStudent()
