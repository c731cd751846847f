"""The project's FLOP and parameter counter.

Counts multiply-adds of convolutions, linear layers and matrix products (one multiply-add = one FLOP,
as the NTIRE KVQ challenge reports GFLOPs) by tracing one forward pass under torch's dispatcher-level
``FlopCounterMode`` (2 FLOPs per multiply-add; we halve it). The pass runs on a copy of the module on
the ``meta`` device, so counting a large model at a large size costs no compute.
"""
from __future__ import annotations

import copy

import torch
from torch.utils.flop_counter import FlopCounterMode


def count_params(module: torch.nn.Module) -> int:
    """Number of parameters (buffers excluded)."""
    return sum(p.numel() for p in module.parameters())


def count_macs(module: torch.nn.Module, *inputs: torch.Tensor) -> int:
    """Multiply-adds of one forward pass of ``module`` on inputs shaped like ``inputs``."""
    shadow = copy.deepcopy(module).to("meta").eval()
    meta_inputs = [torch.empty_like(x, device="meta") for x in inputs]
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        shadow(*meta_inputs)
    return int(counter.get_total_flops()) // 2
