"""ResShift's VQ-f4 autoencoder (``VQModelTorch``, the LDM encoder/decoder with a vector quantizer).

``state_dict`` keys, order and shapes follow the official module, so ``autoencoder_vq_f4.pth`` loads
strictly. Only the options VQ-f4 uses are implemented (no attention outside the mid block, single z,
zero padding); others raise ``ValueError``.

Memory: the mid-block attention is global over the latent and the quantizer compares every latent pixel
with all codebook rows, so both run in chunks of :data:`ATTENTION_QUERY_CHUNK` queries /
:data:`QUANTIZER_PIXEL_CHUNK` pixels (:func:`~kvqe.models.sinsr.chunking.map_row_chunks`, also in
the exported ONNX graph, as an ONNX Scan). Per image, one chunk's attention scores take ``1024 · h · w · 4``
bytes for an h x w latent (= the padded LR size), and their softmax as much again: 16 MB at 64x64, 64 MB at
128x128, 1 GB at 512x512 (the unchunked matrix would be 64 MB, 1 GB and 275 GB). The quantizer's distances
take ``1024 · n_embed · 4`` = 32 MB per chunk. Latent sizes are multiples of 64x64, so chunks are always full.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from kvqe.models.sinsr.chunking import map_row_chunks
from kvqe.models.sinsr.unet import Upsample  # the same nearest-x2 + conv block

ATTENTION_QUERY_CHUNK = 1024
QUANTIZER_PIXEL_CHUNK = 1024


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6)


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1, padding: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=padding)


class ResnetBlock(nn.Module):
    """GN -> SiLU -> conv -> GN -> SiLU -> dropout -> conv, plus the input (1x1 conv if channels change)."""

    def __init__(self, in_ch: int, out_ch: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = _norm(in_ch)
        self.conv1 = _conv3x3(in_ch, out_ch)
        self.norm2 = _norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _conv3x3(out_ch, out_ch)
        self.nin_shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head global self-attention over the map (scale c^−0.5), residual; chunked over queries."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        batch, channels, height, width = x.shape
        q = self.q(h).flatten(2).transpose(1, 2)  # (B, n, C)
        k = self.k(h).flatten(2)  # (B, C, n)
        v = self.v(h).flatten(2).transpose(1, 2)  # (B, n, C)
        scale = channels ** -0.5

        def attend(queries: torch.Tensor) -> torch.Tensor:
            return torch.bmm(torch.softmax(torch.bmm(queries, k) * scale, dim=-1), v)

        out = map_row_chunks(attend, q, ATTENTION_QUERY_CHUNK)
        return x + self.proj_out(out.transpose(1, 2).reshape(batch, channels, height, width))


class Downsample(nn.Module):
    """Asymmetric zero pad (0, 1, 0, 1), then conv 3x3 with stride 2 and no padding."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = _conv3x3(channels, channels, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class _DownLevel(nn.Module):
    """One encoder resolution: ResnetBlocks, then an optional Downsample."""

    def __init__(self, blocks: list[ResnetBlock], downsample: Downsample | None) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.block:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class _UpLevel(nn.Module):
    """One decoder resolution: ResnetBlocks, then an optional Upsample."""

    def __init__(self, blocks: list[ResnetBlock], upsample: Upsample | None) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.upsample = upsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.block:
            x = block(x)
        return x if self.upsample is None else self.upsample(x)


class _Mid(nn.Module):
    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    """conv_in, ``len(ch_mult)`` levels (downsampling after all but the last), mid, GN-SiLU-conv_out."""

    def __init__(self, ch: int, ch_mult: Sequence[int], num_res_blocks: int, in_channels: int,
                 z_channels: int, dropout: float) -> None:
        super().__init__()
        self.conv_in = _conv3x3(in_channels, ch)
        self.down = nn.ModuleList()
        block_in = ch
        for level, mult in enumerate(ch_mult):
            blocks = []
            for _ in range(num_res_blocks):
                blocks.append(ResnetBlock(block_in, ch * mult, dropout))
                block_in = ch * mult
            last = level == len(ch_mult) - 1
            self.down.append(_DownLevel(blocks, None if last else Downsample(block_in)))
        self.mid = _Mid(block_in, dropout)
        self.norm_out = _norm(block_in)
        self.conv_out = _conv3x3(block_in, z_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    """conv_in, mid, levels from the deepest up (``num_res_blocks + 1`` blocks, upsampling after all but
    level 0), GN-SiLU-conv_out. No tanh."""

    def __init__(self, ch: int, ch_mult: Sequence[int], num_res_blocks: int, out_ch: int, z_channels: int,
                 dropout: float) -> None:
        super().__init__()
        block_in = ch * ch_mult[-1]
        self.conv_in = _conv3x3(z_channels, block_in)
        self.mid = _Mid(block_in, dropout)
        levels: list[_UpLevel] = []
        for level in reversed(range(len(ch_mult))):
            blocks = []
            for _ in range(num_res_blocks + 1):
                blocks.append(ResnetBlock(block_in, ch * ch_mult[level], dropout))
                block_in = ch * ch_mult[level]
            levels.insert(0, _UpLevel(blocks, Upsample(block_in) if level else None))
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(block_in)
        self.conv_out = _conv3x3(block_in, out_ch)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    """Nearest codebook row per pixel: ``d = Σz² + Σe² − 2·z·eᵀ`` (float32), argmin (first index wins)."""

    def __init__(self, n_embed: int, embed_dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n_embed, embed_dim)

    def codes(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, H, W) int64 codebook indices."""
        batch, channels, height, width = z.shape
        weight = self.embedding.weight
        weight_sq = torch.sum(weight**2, dim=1)

        def nearest(rows: torch.Tensor) -> torch.Tensor:
            dist = torch.sum(rows**2, dim=-1, keepdim=True) + weight_sq - 2 * torch.einsum("bmc,nc->bmn", rows, weight)
            return torch.argmin(dist, dim=-1)

        flat = z.permute(0, 2, 3, 1).reshape(batch, height * width, channels)
        return map_row_chunks(nearest, flat, QUANTIZER_PIXEL_CHUNK).reshape(batch, height, width)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``z + (z_q − z)``, as the official straight-through form (can differ from z_q by ~1 ulp)."""
        z_q = self.embedding(self.codes(z)).permute(0, 3, 1, 2)
        return z + (z_q - z)


class VQModelTorch(nn.Module):
    """``encode`` (no quantization) and ``decode`` (quantize, post_quant_conv, decoder); official kwargs."""

    def __init__(self, *, ddconfig: dict, n_embed: int, embed_dim: int) -> None:
        super().__init__()
        if ddconfig.get("double_z") or ddconfig.get("attn_resolutions") or ddconfig.get("padding_mode", "zeros") != "zeros":
            raise ValueError("VQModelTorch: only double_z=False, attn_resolutions=[] and padding_mode='zeros' "
                             f"are supported, got {ddconfig}")
        common = {"ch": ddconfig["ch"], "ch_mult": ddconfig["ch_mult"], "num_res_blocks": ddconfig["num_res_blocks"],
                  "z_channels": ddconfig["z_channels"], "dropout": ddconfig.get("dropout", 0.0)}
        self.encoder = Encoder(in_channels=ddconfig["in_channels"], **common)
        self.decoder = Decoder(out_ch=ddconfig["out_ch"], **common)
        self.quantize = VectorQuantizer(n_embed, embed_dim)
        self.quant_conv = nn.Conv2d(ddconfig["z_channels"], embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, ddconfig["z_channels"], 1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant_conv(self.encoder(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(self.quantize(z)))
