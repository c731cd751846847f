"""ResShift/SinSR ``UNetModelSwin``: an ADM-style UNet with a Swin layer after the first ResBlock of every
level (and in the middle), conditioned on the LR image by channel concatenation.

``state_dict`` keys, order and shapes follow the official module, so ``SinSR_v1.pth`` loads strictly.
Only the options the official configs use are implemented (2-D, scale-shift norm, conv resampling,
no ResBlock up/down, fp32); others raise ``ValueError``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from kvqe.models.sinsr.norm import GroupNorm32
from kvqe.models.sinsr.swin import SwinLayer


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (N,) -> (N, dim), **cos first**: ``cat([cos(t·f), sin(t·f)])``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32,
                                                           device=timesteps.device) / half)
    args = timesteps[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1)


class ResBlock(nn.Module):
    """GN -> SiLU -> conv; then ``GN(h)·(1+scale) + shift`` from the embedding -> SiLU -> dropout -> conv.

    The skip is the identity, or a 1x1 conv when the channel count changes.
    """

    def __init__(self, channels: int, emb_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(GroupNorm32(32, channels), nn.SiLU(), _conv3x3(channels, out_channels))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels))
        self.out_layers = nn.Sequential(GroupNorm32(32, out_channels), nn.SiLU(), nn.Dropout(dropout),
                                        _conv3x3(out_channels, out_channels))
        self.skip_connection = (nn.Identity() if out_channels == channels
                                else nn.Conv2d(channels, out_channels, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        scale, shift = self.emb_layers(emb)[..., None, None].chunk(2, dim=1)
        norm, rest = self.out_layers[0], self.out_layers[1:]
        h = rest(norm(h) * (1 + scale) + shift)
        return self.skip_connection(x) + h


class Downsample(nn.Module):
    """Conv 3x3, stride 2, pad 1."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = _conv3x3(channels, channels, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest x2, then conv 3x3."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = _conv3x3(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class TimestepEmbedSequential(nn.Sequential):
    """Sequential that hands the timestep embedding to its ResBlocks."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


_SUPPORTED = {"cond_lq": True, "conv_resample": True, "dims": 2, "use_fp16": False,
              "use_scale_shift_norm": True, "resblock_updown": False}


class UNetModelSwin(nn.Module):
    """``forward(x, timesteps, lq)`` -> prediction with ``out_channels``; ``x`` and ``lq`` are concatenated.

    Takes the official constructor kwargs (see ``configs.py``). ``attention_resolutions`` are feature-map
    sizes (``image_size // ds``); every spatial level must be divisible by ``window_size``.
    """

    def __init__(
        self, *, image_size: int, in_channels: int, model_channels: int, out_channels: int,
        attention_resolutions: Sequence[int], dropout: float, channel_mult: Sequence[int],
        num_res_blocks: int | Sequence[int], num_head_channels: int, swin_depth: int, swin_embed_dim: int,
        window_size: int, mlp_ratio: float, cond_lq: bool = True, conv_resample: bool = True, dims: int = 2,
        use_fp16: bool = False, use_scale_shift_norm: bool = True, resblock_updown: bool = False,
    ) -> None:
        super().__init__()
        given = {"cond_lq": cond_lq, "conv_resample": conv_resample, "dims": dims, "use_fp16": use_fp16,
                 "use_scale_shift_norm": use_scale_shift_norm, "resblock_updown": resblock_updown}
        unsupported = {k: v for k, v in given.items() if v != _SUPPORTED[k]}
        if unsupported:
            raise ValueError(f"UNetModelSwin: unsupported options {unsupported} (supported: {_SUPPORTED})")
        blocks = [num_res_blocks] * len(channel_mult) if isinstance(num_res_blocks, int) else list(num_res_blocks)
        self.model_channels = model_channels
        emb_dim = 4 * model_channels
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        def swin(ch: int, ds: int) -> SwinLayer:
            return SwinLayer(ch, swin_embed_dim, swin_embed_dim // num_head_channels, window_size, swin_depth,
                             image_size // ds, mlp_ratio)

        ch, ds = model_channels, 1
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(_conv3x3(in_channels, ch))])
        skip_chans = [ch]
        for level, mult in enumerate(channel_mult):
            for i in range(blocks[level]):
                layers: list[nn.Module] = [ResBlock(ch, emb_dim, mult * model_channels, dropout)]
                ch = mult * model_channels
                if i == 0 and image_size // ds in attention_resolutions:
                    layers.append(swin(ch, ds))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_chans.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential(Downsample(ch)))
                skip_chans.append(ch)
                ds *= 2
        self.middle_block = TimestepEmbedSequential(
            ResBlock(ch, emb_dim, ch, dropout), swin(ch, ds), ResBlock(ch, emb_dim, ch, dropout))
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(blocks[level] + 1):
                layers = [ResBlock(ch + skip_chans.pop(), emb_dim, mult * model_channels, dropout)]
                ch = mult * model_channels
                if i == 0 and image_size // ds in attention_resolutions:
                    layers.append(swin(ch, ds))
                if level and i == blocks[level]:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(GroupNorm32(32, ch), nn.SiLU(), _conv3x3(model_channels, out_channels))

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
        """``timesteps``: (N,) or (1,) (broadcast over the batch); ``lq`` at the size of ``x``."""
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        h = torch.cat([x, lq], dim=1)
        skips = []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)
