"""SinSR's one step over tiles that reproduces the untiled result (torch; the design a runtime must follow).

Tiles of the whole pipeline never match the untiled result: every stage has GroupNorm, whose statistics
are per tile, the VQ mid blocks attend globally over the latent, and the UNet's receptive field is wider
than any affordable overlap (measurements: ``docs/decisions/0001-sinsr-exact-tiling.md``).

So :class:`TiledSinSR` splits the work by resolution:

* the **high-resolution parts** of the VQ (encoder: bicubic x4, ``conv_in`` and the down levels; decoder:
  the up levels, ``norm_out`` and ``conv_out``) run in kept-centre tiles of ``tile`` LR pixels with
  ``context`` pixels on every side (clipped at the image). Their GroupNorms use statistics **shared by all
  tiles**, gathered one norm at a time (:class:`SharedNorms`, :func:`run_tiled`): pass k runs every tile up
  to norm k, with the exact statistics of norms 0..k-1, adds float64 partial sums (count, sum, sum of
  squares) over the tile's *kept* region only, and stops there; the final pass then runs the tiles whole.
  The statistics are exact (up to float rounding), so with context covering the receptive field of these
  parts (16 LR pixels) the tiles are exact. Cost: one partial pass per norm (12 in the encoder, 19 in the
  decoder); working memory of these parts: one window of ``(tile + 2 context) · 4`` output pixels at their
  channel counts.
* the **latent-resolution parts** (the encoder's mid block, ``norm_out``, ``conv_out`` and ``quant_conv``;
  the quantizer, ``post_quant_conv``, ``conv_in`` and mid block of the decoder; the UNet) run on the whole
  latent (= the padded LR size): exact global attention, chunked over queries, and exact statistics. Their
  memory grows with the LR size (1/16 of the output's pixels; the attention chunk is 1024 queries x all keys).
  The UNet is tiled only when the padded LR has more than ``unet_limit`` pixels, then approximately (its own
  statistics per tile, kept centres with :data:`UNET_CONTEXT` pixels, windows on the 64-pixel Swin grid).

This module is the torch reference. The runtime follows the same design with exported graphs:
:mod:`kvqe.models.sinsr.split` (tile graphs that take the statistics in and give kept-region sums
out, and the LR-sized mid graphs) run by :meth:`kvqe.sdk.pipelines.sinsr.SinSRRunner.run_exact`.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from kvqe.models.sinsr.one_step import SinSR, bicubic_x4, pad_to_multiple
from kvqe.sdk.pipelines import sinsr_glue as glue
from kvqe.sdk.tiling import Box, tile_boxes

UNET_CONTEXT = 128  # LR pixels of context per side when the UNet itself must be tiled (a multiple of 64)


class _Gathered(Exception):
    """Raised by the GroupNorm whose statistics a pass is gathering: the rest of the tile is not needed."""


class SharedNorms:
    """Every ``nn.GroupNorm`` of some modules, normalising with given statistics and adding up partial sums.

    Norms are numbered in the order a forward call reaches them (:meth:`tile` starts the count).
    ``stats``: (mean, var) per norm already known, each (N, groups) float64. Norm ``len(stats)`` is the one
    being gathered: it adds float64 partial sums (count, sum, sum of squares) over the tile's *kept* region
    (at its resolution, a whole multiple of the LR grid) and stops the forward call.
    """

    def __init__(self, modules: list[nn.Module]) -> None:
        self.norms = [m for root in modules for m in root.modules() if isinstance(m, nn.GroupNorm)]
        self.stats: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.sums: torch.Tensor | None = None
        self.kept: tuple[Box, int] | None = None
        self.calls = 0

    @contextmanager
    def installed(self) -> Iterator[SharedNorms]:
        for norm in self.norms:
            norm.forward = (lambda x, n=norm: self._forward(n, x))  # type: ignore[method-assign,misc]
        try:
            yield self
        finally:
            for norm in self.norms:
                del norm.forward

    def tile(self, kept: Box, lr_width: int) -> None:
        """A new tile (forward call) with this kept region, relative to the tile, in LR pixels."""
        self.kept, self.calls = (kept, lr_width), 0

    def gather(self) -> None:
        """Turn the sums of the finished pass into the next norm's (mean, var)."""
        if self.sums is None:
            raise RuntimeError("no tile reached the GroupNorm being gathered")
        count, total, squares = self.sums.unbind(-1)
        mean = total / count
        self.stats.append((mean, (squares / count - mean**2).clamp_min(0.0)))
        self.sums = None

    def _forward(self, norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
        index, self.calls = self.calls, self.calls + 1
        batch, channels, height, width = x.shape
        if index == len(self.stats):
            if self.kept is None:
                raise RuntimeError("SharedNorms: statistics requested outside a tile")
            (top, left, bottom, right), lr_width = self.kept
            f = width // lr_width
            region = x[:, :, top * f:bottom * f, left * f:right * f].reshape(batch, norm.num_groups, -1)
            sums = torch.stack([torch.full(region.shape[:2], float(region.shape[-1]), dtype=torch.float64),
                                region.sum(-1, dtype=torch.float64),
                                (region * region).sum(-1, dtype=torch.float64)], dim=-1)
            self.sums = sums if self.sums is None else self.sums + sums
            raise _Gathered
        mean, var = self.stats[index]
        groups = x.reshape(batch, norm.num_groups, -1)
        inv_std = torch.rsqrt(var + norm.eps).float()[..., None]
        normed = ((groups - mean.float()[..., None]) * inv_std).reshape(batch, channels, height, width)
        return normed * norm.weight[:, None, None] + norm.bias[:, None, None] if norm.affine else normed


def run_tiled(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, factor: int, tile: int, context: int,
              norms: SharedNorms | None = None) -> torch.Tensor:
    """``fn`` (a map from an LR-grid input to ``factor`` times its size) over kept-centre tiles.

    With ``norms``: first one statistics pass per GroupNorm, in order (each runs every tile up to that norm,
    with the exact statistics of the norms before it, and sums over the kept regions), then the final pass."""
    _, _, height, width = x.shape
    boxes = tile_boxes(height, width, tile, context)

    def window(box: Box, kept: Box) -> torch.Tensor:
        t0, l0, t1, l1 = box
        if norms is not None:
            norms.tile((kept[0] - t0, kept[1] - l0, kept[2] - t0, kept[3] - l0), l1 - l0)
        return fn(x[:, :, t0:t1, l0:l1])

    if norms is not None:
        norms.stats = []
        while len(norms.stats) < len(norms.norms):
            for box, kept in boxes:
                try:
                    window(box, kept)
                except _Gathered:
                    continue
                raise RuntimeError("a forward call did not reach every GroupNorm it was given")
            norms.gather()
    out: torch.Tensor | None = None
    for box, (top, left, bottom, right) in boxes:
        y = window(box, (top, left, bottom, right))
        if out is None:
            out = y.new_empty((y.shape[0], y.shape[1], height * factor, width * factor))
        t0, l0 = box[:2]
        out[:, :, top * factor:bottom * factor, left * factor:right * factor] = \
            y[:, :, (top - t0) * factor:(bottom - t0) * factor, (left - l0) * factor:(right - l0) * factor]
    assert out is not None
    return out


class TiledSinSR(nn.Module):
    """``SinSR.forward`` over tiles (see the module docstring); shares ``sinsr``'s weights.

    ``tile``/``context``: kept size and context per side of the VQ tiles, LR pixels (decoder exact with 32);
    ``unet_limit``: the largest LR (pixels, padded) the UNet runs on whole.
    """

    def __init__(self, sinsr: SinSR, tile: int = 64, context: int = 32, unet_limit: int = 512 * 512) -> None:
        super().__init__()
        self.sinsr, self.tile, self.context, self.unet_limit = sinsr, tile, context, unet_limit

    def encode(self, y0: torch.Tensor) -> torch.Tensor:
        vq = self.sinsr.vq
        enc = vq.encoder

        def high(x: torch.Tensor) -> torch.Tensor:
            h = enc.conv_in(bicubic_x4(x))
            for level in enc.down:
                h = level(h)
            return h

        norms = SharedNorms([enc.down])
        with norms.installed():
            h = run_tiled(high, y0, 1, self.tile, self.context, norms)
        return vq.quant_conv(enc.conv_out(F.silu(enc.norm_out(enc.mid(h)))))

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        vq = self.sinsr.vq
        dec = vq.decoder
        h = dec.mid(dec.conv_in(vq.post_quant_conv(vq.quantize(x0))))

        def high(x: torch.Tensor) -> torch.Tensor:
            for level in reversed(dec.up):
                x = level(x)
            return dec.conv_out(F.silu(dec.norm_out(x)))

        norms = SharedNorms([dec.up, dec.norm_out])
        with norms.installed():
            return run_tiled(high, h, glue.SCALE, self.tile, self.context, norms)

    def denoise(self, x: torch.Tensor) -> torch.Tensor:
        denoiser = self.sinsr.stages()["denoiser"]
        height, width = x.shape[2:]
        if height * width <= self.unet_limit:
            return denoiser(x)
        return run_tiled(denoiser, x, 1, 4 * glue.MULTIPLE, UNET_CONTEXT)

    def forward(self, lr: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
        height, width = lr.shape[-2:]
        y0 = pad_to_multiple((lr - 0.5) / 0.5)
        z_y = self.encode(y0)
        if eps is None:
            eps = torch.from_numpy(glue.noise(tuple(z_y.shape))).to(z_y.device)
        x_t = z_y + float(glue.NOISE_SCALE) * eps
        x0 = self.denoise(torch.cat([x_t / float(glue.INPUT_SCALE), y0], dim=1))
        dec = self.decode(x0)[..., : height * glue.SCALE, : width * glue.SCALE]
        return dec.clamp(-1.0, 1.0) * 0.5 + 0.5
