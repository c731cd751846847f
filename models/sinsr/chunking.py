"""Row-chunked evaluation: bounded working memory in eager PyTorch and in the exported ONNX graph."""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch._higher_order_ops.scan import scan


def map_row_chunks(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, chunk: int) -> torch.Tensor:
    """``fn`` applied to slices of at most ``chunk`` rows of ``x`` (B, rows, C), joined along dim 1.

    ``fn`` must treat rows independently (output row i depends on input row i only), so the result is
    ``fn(x)`` up to float rounding. Eager: a Python loop. Under ``torch.export`` (the ONNX exporter) the
    row count is symbolic, so the rows are zero-padded to a multiple of ``chunk`` and walked by one
    ``scan`` (an ONNX Scan, run one slice at a time); the padded rows are dropped.
    """
    if not torch.compiler.is_exporting():
        return torch.cat([fn(part) for part in x.split(chunk, dim=1)], dim=1)
    rows = x.shape[1]
    padded = F.pad(x, (0, 0, 0, (chunk - rows % chunk) % chunk))
    slices = padded.unflatten(1, (-1, chunk)).transpose(0, 1)  # (n_chunks, B, chunk, C)

    def step(carry: torch.Tensor, part: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return carry + 0, fn(part)  # scan needs a carry; a fresh tensor (never an alias of the input)

    _, out = scan(step, torch.zeros(()), slices)
    return out.transpose(0, 1).flatten(1, 2)[:, :rows]
