"""The registered ``sinsr`` model: card, two-checkpoint loader and factories."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from kvqe.errors import BadInputError
from kvqe.models.registry import ModelCard, register_model
from kvqe.models.sinsr.configs import UNET_FULL, UNET_SMALL, VQ_FULL, VQ_SMALL
from kvqe.models.sinsr.one_step import SinSR
from kvqe.models.sinsr.unet import UNetModelSwin
from kvqe.models.sinsr.vq import VQModelTorch
from kvqe.models.weights.checkpoint import checkpoint_provenance, load_strict, read_state_dict
from kvqe.sdk.pipelines import sinsr_glue
from kvqe.specs import InputSpec, OutputSpec, Tile

CHECKPOINTS = {"unet": "SinSR_v1.pth", "vq": "autoencoder_vq_f4.pth"}
_WEIGHTS_FLAGS = " ".join(f"--weights {part}={name}" for part, name in CHECKPOINTS.items())
# sinsr and sinsr+realesrgan bundles tile exactly (kvqe.sdk.pipelines.sinsr.SinSRRunner.run_exact): kept tiles of 128 LR
# pixels with 32 of context (the decoder's reach) for the VQ's high-resolution parts and the restore stage;
# "blend" serves bundles without the split VQ graphs only (their global GroupNorm statistics and VQ attention
# make plain tiles differ, so their windows are blended where they overlap)
TILE = Tile(size=128, pad=32, pre_pad=0, blend=True)
# how kvqe.export.pipelines.sinsr exports the stages (see kvqe.sdk.pipelines.sinsr for the runtime glue)
PIPELINE_EXTRA: dict[str, Any] = {
    "pipeline": "sinsr",
    "stage_channels": {"encoder": 3, "denoiser": 6, "decoder": 3},
    "int8_stages": ["denoiser"],  # INT8 is attempted for the UNet; the VQ encoder/decoder stay float
    "stage_policies": {"denoiser": "swin-unet-vq"},  # others: the card's quant_policy
    "out_scales": [1, 2, 4],
}


def build_sinsr(unet_kwargs: Mapping[str, Any], vq_kwargs: Mapping[str, Any]) -> SinSR:
    """A :class:`SinSR` from the official constructor kwargs (random init, eval mode)."""
    return SinSR(UNetModelSwin(**unet_kwargs), VQModelTorch(**vq_kwargs)).eval()


def small_sinsr() -> SinSR:
    """The reduced configs of the test fixtures (UNet 4.7 M, VQ 3.5 M params)."""
    return build_sinsr(UNET_SMALL, VQ_SMALL)


def tiny_sinsr() -> SinSR:
    """The reduced nets cut to one UNet level (Swin in its middle block only, depth 1) and one res block per VQ
    level: every stage and graph of the real pipeline, exported in seconds rather than minutes (tests that
    prove the export's plumbing, the benchmarks' smoke runs). The fixtures hold no weights for it."""
    return build_sinsr({**UNET_SMALL, "channel_mult": [1], "num_res_blocks": [1], "attention_resolutions": [],
                        "swin_depth": 1},
                       {**VQ_SMALL, "ddconfig": {**VQ_SMALL["ddconfig"], "num_res_blocks": 1}})


def check_sinsr_parts(parts: Mapping[str, Path], optional: Mapping[str, str] | None = None) -> None:
    """Raise naming both checkpoints unless ``unet`` and ``vq`` are given (and no unknown part is).

    ``optional``: further parts a pipeline accepts, part -> what it is (e.g. ``restore``).
    """
    missing = [part for part in CHECKPOINTS if part not in parts]
    unknown = sorted(set(parts) - set(CHECKPOINTS) - set(optional or {}))
    if missing or unknown:
        what = f"missing {', '.join(missing)}" if missing else f"unknown part(s) {', '.join(unknown)}"
        more = "".join(f"; optionally --weights {part}=... ({about})" for part, about in (optional or {}).items())
        raise BadInputError(f"sinsr needs two checkpoints, {CHECKPOINTS['unet']} and {CHECKPOINTS['vq']} "
                            f"({what}); pass {_WEIGHTS_FLAGS}{more}")


def load_sinsr_weights(module: nn.Module, parts: dict[str, Path]) -> dict[str, Any]:
    """Load ``unet`` and ``vq`` checkpoints strictly into ``module.unet`` / ``module.vq``."""
    check_sinsr_parts(parts)
    files: dict[str, Any] = {}
    for part in CHECKPOINTS:
        path = parts[part]
        load_strict(getattr(module, part), read_state_dict(path), path)
        files.update(checkpoint_provenance(part, path))
    names = " and ".join(f"{parts[part].name} ({part})" for part in CHECKPOINTS)
    return {"source": f"user-supplied checkpoints {names}", "files": files}


@register_model(
    ModelCard(
        name="sinsr",
        task="sr",
        description="SinSR: one-step diffusion x4 SR (ResShift UNetModelSwin distilled to one step) in the latent "
        "of ResShift's VQ-f4 autoencoder; runs as three graphs (encoder, denoiser, decoder) with numpy glue.",
        input=InputSpec(colour_order="RGB", layout="NCHW", dtype="float32", value_range=(0.0, 1.0),
                        mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), tile=TILE, multiple_of=sinsr_glue.MULTIPLE),
        output=OutputSpec(scale=sinsr_glue.SCALE, value_range=(0.0, 1.0), clamp=True),
        params=173_916_365,
        gflops=558.67,
        flops_input="one 64x64 LR input (256x256 output)",
        weights_source="official SinSR_v1.pth and autoencoder_vq_f4.pth supplied by the user",
        licence="CC BY-NC-SA 4.0 (SinSR) and S-Lab non-commercial (ResShift VQ-f4): never bundled",
        weight_parts=tuple(CHECKPOINTS),
        extra={"stages": ["encoder", "denoiser", "decoder"], "glue": "kvqe.sdk.pipelines.sinsr_glue",
               "flops_input_shape": [1, 3, 64, 64], **PIPELINE_EXTRA},
    ),
    load_weights=load_sinsr_weights,
    check_weights=check_sinsr_parts,
)
def sinsr() -> SinSR:
    return build_sinsr(UNET_FULL, VQ_FULL)
