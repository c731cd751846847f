"""SinSR's VQ split by resolution into four exportable graphs: the exact tiling of :mod:`.tiled` at run time.

``encoder_high`` (y0 window -> bicubic x4 -> ``conv_in`` -> down levels) and ``decoder_high`` (up levels ->
``norm_out`` -> SiLU -> ``conv_out``) run on tiles; every GroupNorm in them normalises with statistics
*given as an input* instead of its own, and the graph also returns the partial sums of every norm's input
over the tile's kept region, so the runtime can gather statistics shared by all tiles
(:class:`kvqe.sdk.pipelines.sinsr.SinSRRunner`, one pass per norm: pass k runs the tiles with the exact statistics
of norms 0..k-1 and keeps the sums of norm k; the sums of later norms are discarded, their inputs depend
on placeholder statistics). ``encoder_mid`` (mid block with the global attention, ``norm_out``, SiLU,
``conv_out``, ``quant_conv``) and ``decoder_mid`` (quantize, ``post_quant_conv``, ``conv_in``, mid block)
are ordinary single-input graphs on the whole LR-sized latent.

Tile graph I/O (float32): ``x`` (N, C, h, w) on the LR grid (``decoder_high``: the latent features);
``stats`` (N, K, 32, 2): per norm (in forward order) and group, the mean and the (biased) variance;
``mask`` (1, 1, h, w): 1 on the kept region, 0 on the context. Outputs: ``y`` (``encoder_high``: (N, C', h, w),
``decoder_high``: (N, 3, 4h, 4w)) and ``sums`` (N, K, 32, 3): per norm and group, over the kept region at the
norm's resolution, the element count, the sum and the sum of squared deviations from the tile's own mean
(combined across tiles exactly by Chan's formula in float64, :func:`kvqe.sdk.pipelines.sinsr_exact.combine_sums`).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kvqe.models.sinsr.one_step import SinSR, bicubic_x4
from kvqe.models.sinsr.vq import ResnetBlock

GROUPS = 32


class _GivenStats:
    """GroupNorm with given statistics plus the kept-region partial sums of its input, during one forward."""

    def __init__(self, stats: torch.Tensor, mask: torch.Tensor) -> None:
        self.stats, self.mask = stats, mask
        self.sums: list[torch.Tensor] = []

    def __call__(self, norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
        index = len(self.sums)
        batch, channels, height, width = x.shape
        groups = x.reshape(batch, GROUPS, -1)
        keep = F.interpolate(self.mask, size=(height, width), mode="nearest").expand(batch, channels, height, width)
        keep = keep.reshape(batch, GROUPS, -1)
        count = keep.sum(-1)
        total = (groups * keep).sum(-1)
        local_mean = total / count.clamp_min(1.0)
        m2 = (((groups - local_mean[..., None]) ** 2) * keep).sum(-1)
        self.sums.append(torch.stack([count, total, m2], dim=-1))
        mean = self.stats[:, index, :, 0:1]
        var = self.stats[:, index, :, 1:2]
        normed = ((groups - mean) * torch.rsqrt(var + norm.eps)).reshape(batch, channels, height, width)
        return normed * norm.weight[:, None, None] + norm.bias[:, None, None]

    def result(self) -> torch.Tensor:
        return torch.stack(self.sums, dim=1)


def _resnet(block: ResnetBlock, x: torch.Tensor, norm: _GivenStats) -> torch.Tensor:
    h = block.conv1(F.silu(norm(block.norm1, x)))
    h = block.conv2(block.dropout(F.silu(norm(block.norm2, h))))
    return block.nin_shortcut(x) + h


def _count_norms(modules: list[nn.Module]) -> int:
    return sum(isinstance(m, nn.GroupNorm) for root in modules for m in root.modules())


class EncoderHigh(nn.Module):
    """``(y0 window, stats, mask) -> (features on the LR grid, sums)``: bicubic x4, ``conv_in``, down levels."""

    def __init__(self, sinsr: SinSR) -> None:
        super().__init__()
        self.encoder = sinsr.vq.encoder
        self.norms = _count_norms([self.encoder.down])

    def forward(self, x: torch.Tensor, stats: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        norm = _GivenStats(stats, mask)
        h = self.encoder.conv_in(bicubic_x4(x))
        level: Any
        for level in self.encoder.down:
            for block in level.block:
                h = _resnet(block, h, norm)
            if level.downsample is not None:
                h = level.downsample(h)
        return h, norm.result()


class DecoderHigh(nn.Module):
    """``(latent features window, stats, mask) -> (raw x4 decoder output, sums)``: up levels, ``norm_out``,
    SiLU, ``conv_out``."""

    def __init__(self, sinsr: SinSR) -> None:
        super().__init__()
        self.decoder = sinsr.vq.decoder
        self.norms = _count_norms([self.decoder.up, self.decoder.norm_out])

    def forward(self, x: torch.Tensor, stats: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        norm = _GivenStats(stats, mask)
        level: Any
        for level in reversed(self.decoder.up):
            for block in level.block:
                x = _resnet(block, x, norm)
            if level.upsample is not None:
                x = level.upsample(x)
        return self.decoder.conv_out(F.silu(norm(self.decoder.norm_out, x))), norm.result()


class EncoderMid(nn.Module):
    """Encoder features (N, C, h, w) -> ``z_y`` (N, 3, h, w): mid block, ``norm_out``, SiLU, ``conv_out``,
    ``quant_conv``, on the whole latent."""

    def __init__(self, sinsr: SinSR) -> None:
        super().__init__()
        self.vq = sinsr.vq

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        enc = self.vq.encoder
        return self.vq.quant_conv(enc.conv_out(F.silu(enc.norm_out(enc.mid(h)))))


class DecoderMid(nn.Module):
    """``x0`` (N, 3, h, w) -> decoder features (N, C, h, w): quantize, ``post_quant_conv``, ``conv_in``, mid."""

    def __init__(self, sinsr: SinSR) -> None:
        super().__init__()
        self.vq = sinsr.vq

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        dec = self.vq.decoder
        return dec.mid(dec.conv_in(self.vq.post_quant_conv(self.vq.quantize(x0))))


def encoder_features(sinsr: SinSR, y0: torch.Tensor) -> torch.Tensor:
    """What ``encoder_high`` computes for a whole ``y0`` with its own GroupNorm statistics (the input of
    ``encoder_mid``): bicubic x4, ``conv_in``, down levels."""
    enc = sinsr.vq.encoder
    with torch.no_grad():
        h = enc.conv_in(bicubic_x4(y0))
        for level in enc.down:
            h = level(h)
    return h


def split_stages(sinsr: SinSR) -> dict[str, nn.Module]:
    """The four graphs of the exact tiling, by stage name (they share ``sinsr``'s weights)."""
    return {"encoder_high": EncoderHigh(sinsr), "encoder_mid": EncoderMid(sinsr),
            "decoder_mid": DecoderMid(sinsr), "decoder_high": DecoderHigh(sinsr)}


def norm_count(sinsr: SinSR) -> dict[str, int]:
    """How many GroupNorms (statistics passes) each tile graph has."""
    return {"encoder_high": EncoderHigh(sinsr).norms, "decoder_high": DecoderHigh(sinsr).norms}


def export_tile_graph(module: nn.Module, example: tuple[torch.Tensor, torch.Tensor, torch.Tensor], path: str,
                      opset: int) -> None:
    """A tile graph to ONNX (dynamo exporter): dynamic batch, height and width; inputs ``x``, ``stats``,
    ``mask``, outputs ``y``, ``sums``."""
    batch, height, width = torch.export.Dim("batch"), torch.export.Dim("height"), torch.export.Dim("width")
    shapes = ({0: batch, 2: height, 3: width}, {0: batch}, {2: height, 3: width})
    with torch.no_grad():
        torch.onnx.export(module.eval(), example, path, dynamo=True, opset_version=opset,
                          input_names=["x", "stats", "mask"], output_names=["y", "sums"],
                          dynamic_shapes=shapes, external_data=False, optimize=True)


def whole_stats(module: nn.Module, x: torch.Tensor, norms: int) -> torch.Tensor:
    """The untiled GroupNorm statistics of a tile graph on ``x`` (one window, everything kept), gathered
    one norm at a time as the runtime does: (N, norms, 32, 2) float32."""
    batch = x.shape[0]
    stats = torch.zeros(batch, norms, GROUPS, 2)
    stats[..., 1] = 1.0
    mask = torch.ones(1, 1, *x.shape[2:])
    with torch.no_grad():
        for k in range(norms):
            sums = module(x, stats, mask)[1][:, k].double()
            mean = sums[..., 1] / sums[..., 0]
            stats[:, k, :, 0], stats[:, k, :, 1] = mean.float(), (sums[..., 2] / sums[..., 0]).float()
    return stats
