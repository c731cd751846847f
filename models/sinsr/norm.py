"""GroupNorm as ResShift's UNet uses it."""
from __future__ import annotations

import torch
from torch import nn


class GroupNorm32(nn.GroupNorm):
    """``GroupNorm(32, C, eps=1e-5)`` computed in float32 and cast back to the input dtype."""

    def __init__(self, num_groups: int, num_channels: int) -> None:
        super().__init__(num_groups, num_channels, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)
