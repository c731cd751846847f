"""SinSR's one-step inference in torch, split into the three stages the runtime runs as ONNX graphs.

``SinSREncoder`` (y0 -> bicubic x4 -> VQ encode), ``SinSRDenoiser`` (cat[x_T / std, y0] -> x0, t = 14 baked
in) and ``SinSRDecoder`` (quantize -> decode). ``SinSR.forward`` is the whole step with the same numpy-side
constants (:mod:`kvqe.sdk.pipelines.sinsr_glue`), so torch and the runtime agree.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kvqe.models.sinsr.unet import UNetModelSwin
from kvqe.models.sinsr.vq import VQModelTorch
from kvqe.sdk.pipelines import sinsr_glue as glue


def pad_to_multiple(y: torch.Tensor, multiple: int = glue.MULTIPLE) -> torch.Tensor:
    """Reflect-pad bottom/right to multiples of ``multiple``; wide pads reflect repeatedly, as numpy does."""
    for dim in (-2, -1):
        missing = -y.shape[dim] % multiple
        while missing:
            step = min(missing, y.shape[dim] - 1)
            pad = (0, step, 0, 0) if dim == -1 else (0, 0, 0, step)
            y = F.pad(y, pad, mode="reflect")
            missing -= step
    return y


def bicubic_x4(y0: torch.Tensor) -> torch.Tensor:
    """PyTorch bicubic x4 (a = −0.75, half-pixel, clamped borders, no antialias), *not* clamped."""
    return F.interpolate(y0, scale_factor=float(glue.SCALE), mode="bicubic", align_corners=False)


class SinSREncoder(nn.Module):
    """Padded ``y0`` (N, 3, h, w) in [−1, 1], h and w multiples of 64 -> ``z_y`` (N, 3, h, w)."""

    def __init__(self, vq: VQModelTorch) -> None:
        super().__init__()
        self.vq = vq

    def forward(self, y0: torch.Tensor) -> torch.Tensor:
        return self.vq.encode(bicubic_x4(y0))


class SinSRDenoiser(nn.Module):
    """``cat[unet_x, y0]`` (N, 6, h, w) -> ``x0`` prediction (N, 3, h, w) at t = 14."""

    def __init__(self, unet: UNetModelSwin) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        timestep = torch.full((1,), glue.TIMESTEP, dtype=torch.int64, device=x.device)
        return self.unet(x[:, :3], timestep, x[:, 3:])


class SinSRDecoder(nn.Module):
    """``x0`` (N, 3, h, w) -> quantize -> decode -> raw decoder output (N, 3, 4h, 4w), uncropped, unclamped."""

    def __init__(self, vq: VQModelTorch) -> None:
        super().__init__()
        self.vq = vq

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        return self.vq.decode(x0)


class SinSR(nn.Module):
    """Both networks (``state_dict``: ``unet.*``, ``vq.*``); ``forward(lr, eps)`` is the whole one step."""

    def __init__(self, unet: UNetModelSwin, vq: VQModelTorch) -> None:
        super().__init__()
        self.unet = unet
        self.vq = vq

    def stages(self) -> dict[str, nn.Module]:
        """The three exportable stages, in pipeline order (they share this module's weights)."""
        return {"encoder": SinSREncoder(self.vq), "denoiser": SinSRDenoiser(self.unet),
                "decoder": SinSRDecoder(self.vq)}

    def forward(self, lr: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
        """LR (N, 3, h, w) in [0, 1] -> SR (N, 3, 4h, 4w) in [0, 1].

        ``eps``: noise at the padded size; default :func:`kvqe.sdk.pipelines.sinsr_glue.noise` (seeded).
        """
        height, width = lr.shape[-2:]
        encoder, denoiser, decoder = self.stages().values()
        y0 = pad_to_multiple((lr - 0.5) / 0.5)
        z_y = encoder(y0)
        if eps is None:
            eps = torch.from_numpy(glue.noise(tuple(z_y.shape))).to(z_y.device)
        x_t = z_y + float(glue.NOISE_SCALE) * eps
        x0 = denoiser(torch.cat([x_t / float(glue.INPUT_SCALE), y0], dim=1))
        dec = decoder(x0)[..., : height * glue.SCALE, : width * glue.SCALE]
        return dec.clamp(-1.0, 1.0) * 0.5 + 0.5
