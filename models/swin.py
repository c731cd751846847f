"""Swin-T (Liu et al., 2021) in torchvision's ``swin_t`` layout, written from an architectural description.

``SwinT().state_dict()`` has exactly torchvision's keys, order and shapes (173 parameters plus the 12
``relative_position_index`` buffers), so torchvision checkpoints load with ``strict=True``. Behaviour
follows torchvision, including its quirks: inside each attention call the map is zero-padded at the
bottom/right to multiples of the window and the padded tokens take part in attention unmasked; a
dimension's shift is dropped when the window covers the whole padded dimension; PatchMerging pads odd
maps at the bottom/right.

Everything between the stem and the head is NHWC. Spatial sizes are read from the input shape as Python
ints, so an exported graph has a static H/W (the batch axis may stay dynamic). Stochastic depth and
dropout are identities at inference and are left out.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PATCH = 4
EMBED_DIM = 96
DEPTHS = (2, 2, 6, 2)
HEADS = (3, 6, 12, 24)
WINDOW = 7
TOKENS = WINDOW * WINDOW
MLP_RATIO = 4
LN_EPS = 1e-5
MASK_VALUE = -100.0
STAGE_DIMS = tuple(EMBED_DIM * 2**i for i in range(len(DEPTHS)))


def _spatial_size(x: Tensor) -> tuple[int, int]:
    """(H, W) of an NHWC map as Python ints (constants in a traced graph)."""
    return int(x.shape[1]), int(x.shape[2])


def _relative_position_index() -> Tensor:
    """Flattened [49*49] index into the 13x13 bias table: ``(yi-yj+6)*13 + (xi-xj+6)``."""
    ys, xs = torch.meshgrid(torch.arange(WINDOW), torch.arange(WINDOW), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[:, None] - ys[None, :] + WINDOW - 1
    dx = xs[:, None] - xs[None, :] + WINDOW - 1
    return (dy * (2 * WINDOW - 1) + dx).flatten()


def _bands(size: int, shift: int) -> Tensor:
    """Band label of each position along one padded dimension: [0, size-7), [size-7, size-shift), rest."""
    pos = torch.arange(size)
    if shift == 0:
        return torch.zeros_like(pos)
    return (pos >= size - WINDOW).long() + (pos >= size - shift).long()


def _windows(x: Tensor, ph: int, pw: int, c: int) -> Tensor:
    """[B, pH, pW, C] -> [B*nW, 49, C], windows in row-major order, tokens row-major inside each."""
    x = x.reshape(-1, ph // WINDOW, WINDOW, pw // WINDOW, WINDOW, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, TOKENS, c)


def _unwindows(x: Tensor, ph: int, pw: int, c: int) -> Tensor:
    """Inverse of :func:`_windows`: [B*nW, 49, C] -> [B, pH, pW, C]."""
    x = x.reshape(-1, ph // WINDOW, pw // WINDOW, WINDOW, WINDOW, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, ph, pw, c)


def _shift_mask(ph: int, pw: int, shift: tuple[int, int]) -> Tensor:
    """[nW, 49, 49] additive mask: -100 between tokens whose shifted-band labels differ, else 0."""
    labels = _bands(ph, shift[0])[:, None] * 3 + _bands(pw, shift[1])[None, :]
    labels = _windows(labels[None, :, :, None], ph, pw, 1).squeeze(-1)
    differ = labels[:, :, None] != labels[:, None, :]
    return differ.float() * MASK_VALUE


class ShiftedWindowAttention(nn.Module):
    """Window multi-head self-attention with relative position bias, on a normalised NHWC map."""

    relative_position_index: Tensor

    def __init__(self, dim: int, heads: int, shift: int) -> None:
        super().__init__()
        self.dim = dim
        self.heads = heads
        self.shift = shift
        self.scale = (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * WINDOW - 1) ** 2, heads))
        self.register_buffer("relative_position_index", _relative_position_index())
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        h, w = _spatial_size(x)
        c, heads = self.dim, self.heads
        ph, pw = h + (-h) % WINDOW, w + (-w) % WINDOW
        x = F.pad(x, (0, 0, 0, pw - w, 0, ph - h))
        shift = (0 if WINDOW >= ph else self.shift, 0 if WINDOW >= pw else self.shift)
        if any(shift):
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))

        qkv = self.qkv(_windows(x, ph, pw, c)).reshape(-1, TOKENS, 3, heads, c // heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        q = q * self.scale
        bias = self.relative_position_bias_table[self.relative_position_index]
        attn = q @ k.transpose(-2, -1) + bias.reshape(TOKENS, TOKENS, heads).permute(2, 0, 1)
        if any(shift):
            mask = _shift_mask(ph, pw, shift).to(attn)
            n_windows = (ph // WINDOW) * (pw // WINDOW)
            attn = attn.reshape(-1, n_windows, heads, TOKENS, TOKENS) + mask[None, :, None]
            attn = attn.reshape(-1, heads, TOKENS, TOKENS)
        out = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(-1, TOKENS, c)

        x = _unwindows(self.proj(out), ph, pw, c)
        if any(shift):
            x = torch.roll(x, shifts=shift, dims=(1, 2))
        return x[:, :h, :w]


class SwinBlock(nn.Module):
    """Pre-norm Swin block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, heads: int, shift: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = ShiftedWindowAttention(dim, heads, shift)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        # Keys "0" and "3" match torchvision, whose dropouts sit at indices 2 and 4.
        self.mlp = nn.Sequential(
            OrderedDict(
                [
                    ("0", nn.Linear(dim, MLP_RATIO * dim)),
                    ("1", nn.GELU()),
                    ("3", nn.Linear(MLP_RATIO * dim, dim)),
                ]
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """2x2 downsampling on NHWC: zero-pad odd H/W at the bottom/right, concat 4 phases, LN, Linear 4C->2C."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim, eps=LN_EPS)

    def forward(self, x: Tensor) -> Tensor:
        h, w = _spatial_size(x)
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class ToNHWC(nn.Module):
    """NCHW -> NHWC."""

    def forward(self, x: Tensor) -> Tensor:
        return x.permute(0, 2, 3, 1)


class _SwinTFeatures(nn.Module):
    """torchvision's ``swin_t().features``: stem (0), stages (1, 3, 5, 7) and merges (2, 4, 6)."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Sequential(
                nn.Conv2d(3, EMBED_DIM, kernel_size=PATCH, stride=PATCH),
                ToNHWC(),
                nn.LayerNorm(EMBED_DIM, eps=LN_EPS),
            )
        ]
        for i, (dim, depth, heads) in enumerate(zip(STAGE_DIMS, DEPTHS, HEADS)):
            layers.append(
                nn.Sequential(*(SwinBlock(dim, heads, 0 if j % 2 == 0 else WINDOW // 2) for j in range(depth)))
            )
            if i < len(DEPTHS) - 1:
                layers.append(PatchMerging(dim))
        self.features = nn.Sequential(*layers)
        self.apply(_init_weights)

    def stages(self, x: Tensor) -> list[Tensor]:
        """Outputs of the 4 stages (``features[1]``, ``[3]``, ``[5]``, ``[7]``), NHWC, for NCHW input ``x``."""
        outputs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i % 2 == 1:
                outputs.append(x)
        return outputs


class SwinTBackbone(_SwinTFeatures):
    """Swin-T without the classifier (no final ``norm``/``head``); ``forward`` returns the 4 stage outputs."""

    def forward(self, x: Tensor) -> list[Tensor]:
        return self.stages(x)


class SwinT(_SwinTFeatures):
    """Swin-T classifier (torchvision ``swin_t``): features, final LayerNorm, mean over H and W, Linear head."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(STAGE_DIMS[-1], eps=LN_EPS)
        self.head = nn.Linear(STAGE_DIMS[-1], num_classes)
        _init_weights(self.head)

    def pooled(self, x: Tensor) -> Tensor:
        """[N, 768] vector before the head: final LayerNorm of stage 4, averaged over H and W."""
        return self.norm(self.stages(x)[-1]).mean(dim=(1, 2))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pooled(x))


def _init_weights(module: nn.Module) -> None:
    """torchvision-style random init: truncated normal (std 0.02) Linear weights and bias tables."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, ShiftedWindowAttention):
        nn.init.trunc_normal_(module.relative_position_bias_table, std=0.02)
