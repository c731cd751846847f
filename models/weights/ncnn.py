"""Importer for ncnn models (``.param`` text graph + ``.bin`` weights) into matching PyTorch modules.

Covers the layer subset of the official Real-ESRGAN ncnn exports: Input, Split, Convolution (optionally with a
fused LeakyReLU), PReLU, Concat, Eltwise, BinaryOp, Interp and PixelShuffle. Convolution and PReLU layers carry
weights and appear in the same order as the module's ``Conv2d``/``PReLU`` submodules. In the ``.bin``, each
convolution weight is preceded by a 4-byte storage tag (fp16 or fp32); biases and PReLU slopes are raw fp32.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from kvqe.errors import BadInputError
from kvqe.models.weights.checkpoint import load_strict

MAGIC = "7767517"
TAG_FP16 = 0x01306B47
TAG_FP32 = 0
_ARRAY_KEY_BASE = -23300  # key -23300 - i holds parameter i as an array "count,v1,v2,..."

ParamValue = int | float | tuple[float, ...]
_INTERP_MODES: dict[ParamValue, str] = {1: "nearest", 2: "bilinear", 3: "bicubic"}
_ELTWISE_OPS: dict[ParamValue, str] = {0: "prod", 1: "sum", 2: "max"}


@runtime_checkable
class NcnnTopology(Protocol):
    """A module that states the layer signatures (with counts) its ncnn export must have."""

    def ncnn_topology(self) -> Mapping[str, int]: ...


@dataclass(frozen=True)
class NcnnLayer:
    type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: dict[int, ParamValue]


def _number(text: str) -> int | float:
    return float(text) if any(c in text for c in ".eE") else int(text)


def _parse_params(tokens: list[str]) -> dict[int, ParamValue]:
    params: dict[int, ParamValue] = {}
    for token in tokens:
        key_text, _, value = token.partition("=")
        key = int(key_text)
        if key <= _ARRAY_KEY_BASE:
            count, *items = value.split(",")
            if int(count) != len(items):
                raise ValueError(f"array {token!r} announces {count} values")
            params[_ARRAY_KEY_BASE - key] = tuple(float(v) for v in items)
        else:
            params[key] = _number(value)
    return params


def read_param(path: Path) -> list[NcnnLayer]:
    """Parse an ncnn ``.param`` file and check that its blob graph is consistent."""
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"cannot read ncnn param file {path}: {exc}") from exc
    lines = [line for line in lines if line.strip()]
    if not lines or lines[0].strip() != MAGIC:
        raise BadInputError(f"{path} is not an ncnn .param file (first line is not the magic {MAGIC})")
    layers: list[NcnnLayer] = []
    try:
        layer_count, blob_count = (int(v) for v in lines[1].split())
        for number, line in enumerate(lines[2:], start=3):
            kind, name, n_in, n_out, *rest = line.split()
            n_in_i, n_out_i = int(n_in), int(n_out)
            if len(rest) < n_in_i + n_out_i:
                raise ValueError(f"line {number} lists fewer blobs than it announces")
            inputs, outputs = rest[:n_in_i], rest[n_in_i:n_in_i + n_out_i]
            layers.append(NcnnLayer(kind, name, tuple(inputs), tuple(outputs),
                                    _parse_params(rest[n_in_i + n_out_i:])))
    except ValueError as exc:
        raise BadInputError(f"{path} is not a well-formed ncnn .param file: {exc}") from exc
    if len(layers) != layer_count:
        raise BadInputError(f"{path} announces {layer_count} layers but holds {len(layers)} (truncated?)")
    produced: set[str] = set()
    for layer in layers:
        missing = [b for b in layer.inputs if b not in produced]
        if missing or produced.intersection(layer.outputs):
            raise BadInputError(f"{path}: layer {layer.name} reads an unknown blob or rewrites one ({missing})")
        produced.update(layer.outputs)
    if len(produced) != blob_count:
        raise BadInputError(f"{path} announces {blob_count} blobs but defines {len(produced)}")
    return layers


def _fmt(values: tuple[float, ...]) -> str:
    return ",".join(f"{v:g}" for v in values)


def _drop(params: dict[int, ParamValue], *keys: int) -> None:
    for key in keys:
        params.pop(key, None)


def layer_signature(layer: NcnnLayer) -> str:
    """A readable summary of a layer's type and non-weight parameters, e.g. ``Interp nearest x2``.

    Parameters this importer does not model show up verbatim, so they never match an expected signature.
    """
    p = dict(layer.params)
    kind = layer.type
    if kind == "Convolution":
        _drop(p, 0, 1, 2, 3, 4, 5, 6, 11, 12, 13, 14, 15, 16)  # geometry: checked against the Conv2d
        if p.get(9) == 2 and isinstance(slope := p.get(10), tuple) and len(slope) == 1:
            kind = f"Convolution+LeakyReLU({slope[0]:g})"
            _drop(p, 9, 10)
        elif p.get(9) == 0:
            _drop(p, 9)
    elif kind == "PReLU":
        _drop(p, 0)  # num_slope: checked against the PReLU module
    elif kind == "Concat" and p.get(0, 0) == 0:
        _drop(p, 0)
    elif kind == "Eltwise" and (op := _ELTWISE_OPS.get(p.get(0, 0))) and isinstance(coeffs := p.get(1, ()), tuple):
        kind = f"Eltwise {op}({_fmt(coeffs)})"
        _drop(p, 0, 1)
    elif kind == "BinaryOp" and p.get(0, 0) == 0 and p.get(1, 0) == 0:
        kind = "BinaryOp add"
        _drop(p, 0, 1, 2)  # 2 is the scalar operand, unused without 1=with_scalar
    elif (kind == "Interp" and (mode := _INTERP_MODES.get(p.get(0, 0))) and isinstance(scale := p.get(1), (int, float))
          and p.get(2) == scale):
        kind = f"Interp {mode} x{scale:g}"
        _drop(p, 0, 1, 2)
    elif kind == "PixelShuffle" and isinstance(factor := p.get(0), int) and p.get(1, 0) == 0:
        kind = f"PixelShuffle x{factor}"
        _drop(p, 0, 1)
    extra = " ".join(f"{k}={_fmt(v) if isinstance(v, tuple) else v}" for k, v in sorted(p.items()))
    return f"{kind} [{extra}]" if extra else kind


def _check_topology(path: Path, layers: list[NcnnLayer], expected: Mapping[str, int], arch: str) -> None:
    inputs = [layer for layer in layers if layer.type == "Input"]
    if len(inputs) != 1:
        raise BadInputError(f"{path} has {len(inputs)} Input layers; {arch} takes one")
    found = Counter(layer_signature(layer) for layer in layers if layer.type not in ("Input", "Split"))
    if found != Counter(expected):
        diffs = [f"{sig!r}: expected {expected.get(sig, 0)}, found {found.get(sig, 0)}"
                 for sig in sorted(set(found) | set(expected)) if found.get(sig, 0) != expected.get(sig, 0)]
        raise BadInputError(f"{path} is not an ncnn export of this {arch}: " + "; ".join(diffs))


def _conv_mismatch(layer: NcnnLayer, conv: nn.Conv2d) -> str | None:
    p = layer.params
    kw, dw, sw, pw = p.get(1, 0), p.get(2, 1), p.get(3, 1), p.get(4, 0)
    ph = p.get(14, pw)
    found = (p.get(0), (p.get(11, kw), kw), (p.get(12, dw), dw), (p.get(13, sw), sw), (ph, pw),
             (p.get(16, ph), p.get(15, pw)), bool(p.get(5, 0)), p.get(6))
    want = (conv.out_channels, conv.kernel_size, conv.dilation, conv.stride, conv.padding, conv.padding,
            conv.bias is not None, conv.weight.numel())
    if conv.groups != 1 or found != want:
        return f"(out, kernel, dilation, stride, pad, pad_end, bias, weight size) {found} != {want}"
    return None


class _BinReader:
    """Sequential reader of an ncnn ``.bin`` that names the file in every error."""

    def __init__(self, path: Path) -> None:
        try:
            self.data = path.read_bytes()
        except OSError as exc:
            raise BadInputError(f"cannot read ncnn weight file {path}: {exc}") from exc
        self.path = path
        self.offset = 0

    def _take(self, size: int, what: str) -> bytes:
        if self.offset + size > len(self.data):
            raise BadInputError(
                f"{self.path} is truncated or does not belong to its .param: {what} needs bytes "
                f"{self.offset}..{self.offset + size}, the file has {len(self.data)}"
            )
        chunk = self.data[self.offset:self.offset + size]
        self.offset += size
        return chunk

    def raw_fp32(self, count: int, what: str) -> np.ndarray:
        return np.frombuffer(self._take(4 * count, what), dtype="<f4").astype(np.float32)

    def tagged(self, count: int, what: str) -> np.ndarray:
        tag = int.from_bytes(self._take(4, what), "little")
        if tag == TAG_FP16:
            data = self._take((2 * count + 3) // 4 * 4, what)  # fp16 data is padded to 4 bytes
            return np.frombuffer(data[:2 * count], dtype="<f2").astype(np.float32)
        if tag == TAG_FP32:
            return self.raw_fp32(count, what)
        raise BadInputError(f"{self.path}: {what} has storage tag {tag:#010x}; only fp32 and fp16 are supported")

    def finish(self) -> None:
        if self.offset != len(self.data):
            raise BadInputError(
                f"{self.path} has {len(self.data) - self.offset} bytes beyond the weights its .param describes"
            )


def load_ncnn_into(module: nn.Module, param_path: Path, bin_path: Path) -> None:
    """Fill ``module`` from an ncnn model after checking the file is an export of the same architecture.

    ``module`` must provide ``ncnn_topology()`` (see :class:`NcnnTopology`). Every mismatch (other layers,
    shapes, activation slopes, residual coefficients, or a ``.bin`` of the wrong size) is a BadInputError.
    """
    arch = type(module).__name__
    topology = module.ncnn_topology() if isinstance(module, NcnnTopology) else None
    if topology is None:
        raise TypeError(f"{arch} does not state its ncnn topology")
    layers = read_param(param_path)
    _check_topology(param_path, layers, topology, arch)
    targets = [(name, m) for name, m in module.named_modules() if isinstance(m, (nn.Conv2d, nn.PReLU))]
    weighted = [layer for layer in layers if layer.type in ("Convolution", "PReLU")]
    reader = _BinReader(bin_path)
    state: dict[str, torch.Tensor] = {}
    for layer, (name, target) in zip(weighted, targets, strict=True):
        where = f"{param_path}: layer {layer.name} ({layer.type}) vs {arch}.{name}"
        if isinstance(target, nn.Conv2d):
            problem = _conv_mismatch(layer, target) if layer.type == "Convolution" else "not a Convolution"
            if problem:
                raise BadInputError(f"{where}: {problem}")
            weight = reader.tagged(target.weight.numel(), f"{layer.name} weight")
            state[f"{name}.weight"] = torch.from_numpy(weight).reshape(target.weight.shape)
            if target.bias is not None:
                state[f"{name}.bias"] = torch.from_numpy(reader.raw_fp32(target.out_channels, f"{layer.name} bias"))
        else:
            if layer.type != "PReLU" or layer.params.get(0, 0) != target.num_parameters:
                raise BadInputError(f"{where}: expected PReLU with {target.num_parameters} slopes")
            state[f"{name}.weight"] = torch.from_numpy(reader.raw_fp32(target.num_parameters, f"{layer.name} slope"))
    reader.finish()
    load_strict(module, state, param_path)
