"""The project's FLOP and parameter counter.

Counts multiply-adds of convolutions, linear layers and matrix products (one multiply-add = one FLOP,
as the NTIRE KVQ challenge reports GFLOPs) by running the module once under torch's dispatcher-level
``FlopCounterMode``, which reports 2 FLOPs per multiply-add; we halve it.
"""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode


def count_params(module: torch.nn.Module) -> int:
    """Number of parameters (buffers excluded)."""
    return sum(p.numel() for p in module.parameters())


def count_macs(module: torch.nn.Module, *inputs: torch.Tensor) -> int:
    """Multiply-adds of one forward pass of ``module`` on ``inputs``."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(*inputs)
    return counter.get_total_flops() // 2
