"""Typed input and output specs: how a model is fed and what it returns, as the model card declares them
and the manifest stores them (``input`` / ``output``).

Each spec reads from and writes to the manifest's JSON form (:meth:`from_json` / :meth:`to_json`); an
optional field the manifest leaves out is None and stays out when written again, so a manifest read and
written back is byte-identical. The manifest's JSON Schema has already checked the form by the time a
spec is read. Specs are frozen: safe to share between threads.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

Range = tuple[float, float]


class _Json:
    """JSON round trip for a frozen dataclass of scalars, tuples and nested specs."""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for spec_field in dataclasses.fields(cls):  # type: ignore[arg-type]
            if spec_field.name in data:
                values[spec_field.name] = _read(hints[spec_field.name], data[spec_field.name])
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for spec_field in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, spec_field.name)
            if value is not None:
                out[spec_field.name] = _write(value)
        return out


def _read(hint: Any, value: Any) -> Any:
    """``value`` from JSON as the field's type: nested specs built, lists made tuples."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for option in options:
        if isinstance(option, type) and typing.get_origin(option) is None and issubclass(option, _Json):
            return option.from_json(value) if isinstance(value, Mapping) else value
    return tuple(value) if isinstance(value, list) else value


def _write(value: Any) -> Any:
    if isinstance(value, _Json):
        return value.to_json()
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True)
class Sampling(_Json):
    """Which frames of a video a VQA model scores: keyframes at ``per_second``, at most ``max_frames``
    (see :mod:`kvqe.sdk.sampling`); ``pad`` ``repeat_last`` repeats the last score up to ``max_frames``."""

    per_second: float
    max_frames: int
    kind: str | None = None
    position: str | None = None
    pad: str | None = None

    @property
    def repeats_last(self) -> bool:
        return self.pad == "repeat_last"


@dataclass(frozen=True)
class Fragments(_Json):
    """A ``grid`` x ``grid`` mosaic of native-resolution ``patch`` x ``patch`` crops plus global context."""

    grid: int
    patch: int

    @property
    def size(self) -> int:
        return self.grid * self.patch


@dataclass(frozen=True)
class Resize(_Json):
    short_side: int
    interpolation: str | None = None  # area when absent


@dataclass(frozen=True)
class Crop(_Json):
    height: int
    width: int


@dataclass(frozen=True)
class Tile(_Json):
    """SR tiling: ``size`` pixels a side (0: the whole image), ``pad`` pixels of context on every side,
    ``pre_pad`` pixels of reflection added around the image first."""

    size: int
    pad: int
    pre_pad: int | None = None
    blend: bool | None = None


@dataclass(frozen=True)
class InputSpec(_Json):
    """How an image becomes the model's input tensor: colour order, ``value_range`` scaling, then
    ``(x - mean) / std`` per channel; VQA models add frame ``sampling`` and either ``fragments`` or
    ``resize`` + ``crop``; SR models add ``tile`` and ``multiple_of`` (input sides the graph needs)."""

    colour_order: str
    value_range: Range
    mean: tuple[float, ...]
    std: tuple[float, ...]
    layout: str | None = None
    dtype: str | None = None
    sampling: Sampling | None = None
    fragments: Fragments | None = None
    resize: Resize | None = None
    crop: Crop | None = None
    tile: Tile | None = None
    multiple_of: int | None = None

    @property
    def multiple(self) -> int:
        return self.multiple_of or 1


@dataclass(frozen=True)
class OutputSpec(_Json):
    """What the model returns: a score in ``score_range`` pooled over frames (VQA), or an image ``scale``
    times larger in ``value_range``, clamped unless ``clamp`` is false (SR)."""

    score_range: Range | None = None
    pooling: str | None = None
    units: str | None = None
    scale: int | None = None
    value_range: Range | None = None
    clamp: bool | None = None

    @property
    def clamps(self) -> bool:
        return self.clamp is not False
