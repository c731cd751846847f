"""The Swin layers inside ResShift/SinSR's ``UNetModelSwin``, with the official code's quirks.

NCHW throughout: the norms are GroupNorm32 (not LayerNorm), the MLP is two 1x1 convs, patch (un)embedding
is a plain 1x1 conv (``patch_norm=False``) and a layer has no residual of its own. Shift and window size are
fixed at construction from ``input_resolution``; the shifted-window mask is recomputed from the runtime
size on every call (the ``attn_mask`` buffer is kept only so official checkpoints load) and it is *not* the
canonical Swin mask: see :func:`window_row_mask`.
"""
from __future__ import annotations

import torch
from torch import nn

from kvqe.models.sinsr.norm import GroupNorm32

_MASKED = -100.0


def relative_position_index(window: int) -> torch.Tensor:
    """Standard Swin (window², window²) index into the (2·window−1)² relative-position bias table."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def window_row_mask(n_rows: int, window: int, shift: int,
                    device: torch.device | None = None) -> torch.Tensor:
    """The official recomputed mask, (n_rows, 1, N, N) per window row (N = window²), 0 or −100.

    Only the last row of windows is masked, and there by *column*: token (h, w) of a window has label
    ``w < window − shift``; tokens with different labels do not attend to each other. Every other window
    row is unmasked. (Canonical Swin would mask the bottom row by row and the right column by column.)
    """
    left = torch.arange(window * window, device=device) % window < window - shift
    block = (left[:, None] != left[None, :]).float() * _MASKED
    last_row = torch.eq(torch.arange(n_rows, device=device), n_rows - 1).float()
    return last_row[:, None, None, None] * block


def shifted_window_mask(height: int, width: int, window: int, shift: int) -> torch.Tensor:
    """The full (nW, N, N) mask of :func:`window_row_mask` for an HxW map (the ``attn_mask`` buffer)."""
    rows, cols = height // window, width // window
    mask = window_row_mask(rows, window, shift)
    return mask.expand(rows, cols, -1, -1).reshape(rows * cols, window * window, window * window)


class WindowAttention(nn.Module):
    """Multi-head self-attention in a window with a learned relative-position bias; qkv has a bias."""

    relative_position_index: torch.Tensor

    def __init__(self, dim: int, window: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, windows: torch.Tensor, row_mask: torch.Tensor | None, n_rows: int, n_cols: int) -> torch.Tensor:
        """``windows``: (B·rows·cols, N, C) -> same; ``row_mask``: (rows, 1, N, N) or None."""
        count, tokens, dim = windows.shape
        qkv = self.qkv(windows).reshape(count, tokens, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(tokens, tokens, -1).permute(2, 0, 1).unsqueeze(0)
        if row_mask is not None:
            attn = attn.view(-1, n_rows, n_cols, self.num_heads, tokens, tokens) + row_mask[:, None]
            attn = attn.view(count, self.num_heads, tokens, tokens)
        out = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(count, tokens, dim)
        return self.proj(out)


class Mlp(nn.Module):
    """1x1 conv -> GELU (exact erf) -> 1x1 conv."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinTransformerBlock(nn.Module):
    """Pre-norm (shifted-)window attention and MLP, each with a residual, on NCHW maps."""

    def __init__(self, dim: int, input_resolution: tuple[int, int], num_heads: int, window: int, shift: int,
                 mlp_ratio: float) -> None:
        super().__init__()
        if min(input_resolution) <= window:  # fixed at construction, whatever the runtime size
            shift, window = 0, min(input_resolution)
        self.window, self.shift = window, shift
        mask = shifted_window_mask(*input_resolution, window, shift) if shift else None
        self.register_buffer("attn_mask", mask)  # never used (see module docstring); loaded for strictness
        self.norm1 = GroupNorm32(32, dim)
        self.attn = WindowAttention(dim, window, num_heads)
        self.norm2 = GroupNorm32(32, dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, dim, height, width = x.shape
        ws, rows, cols = self.window, height // self.window, width // self.window
        h = self.norm1(x)
        if self.shift:
            h = torch.roll(h, (-self.shift, -self.shift), (2, 3))
        windows = h.view(batch, dim, rows, ws, cols, ws).permute(0, 2, 4, 3, 5, 1).reshape(-1, ws * ws, dim)
        mask = window_row_mask(rows, ws, self.shift, x.device) if self.shift else None
        h = self.attn(windows, mask, rows, cols)
        h = h.view(batch, rows, cols, ws, ws, dim).permute(0, 5, 1, 3, 2, 4).reshape(batch, dim, height, width)
        if self.shift:
            h = torch.roll(h, (self.shift, self.shift), (2, 3))
        x = x + h
        return x + self.mlp(self.norm2(x))


class PatchConv(nn.Module):
    """Patch embedding or un-embedding with ``patch_size=1``, ``patch_norm=False``: one 1x1 conv."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class SwinLayer(nn.Module):
    """1x1 conv into ``embed_dim``, ``depth`` blocks (odd ones shifted by window/2), 1x1 conv back.

    No residual around the layer. Key layout: ``patch_embed``, ``patch_unembed``, ``blocks``.
    """

    def __init__(self, in_ch: int, embed_dim: int, num_heads: int, window: int, depth: int,
                 resolution: int, mlp_ratio: float) -> None:
        super().__init__()
        self.patch_embed = PatchConv(in_ch, embed_dim)
        self.patch_unembed = PatchConv(embed_dim, in_ch)
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(embed_dim, (resolution, resolution), num_heads, window,
                                 0 if i % 2 == 0 else window // 2, mlp_ratio)
            for i in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.patch_embed(x)
        for block in self.blocks:
            h = block(h)
        return self.patch_unembed(h)

