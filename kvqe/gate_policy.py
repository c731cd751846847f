"""Gating policy files: a minimum score per resolution class, read from TOML.

Format (``policy.toml``)::

    default = 60.0              # optional: for a class not listed
    enhance = "sr"              # optional: the enhancer bundle (name or directory)
    max_gain = 20.0             # optional: the ceiling of kvqe gate --max-gain-check
    [thresholds]
    "<=540p" = 50.0             # short side <= 540
    "720p" = 60.0               # 540 < short side < 1080
    ">=1080p" = 70.0            # short side >= 1080

YAML is not read: no YAML parser is installed with kvqe, and TOML's reader is in the standard library.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field

from kvqe.bounds import MAX_GAIN, THRESHOLD, checked
from kvqe.errors import BadInputError

RESOLUTION_CLASSES = ("<=540p", "720p", ">=1080p")
_KEYS = {"default", "enhance", "max_gain", "thresholds"}


def resolution_class(width: int, height: int) -> str:
    """The class of a ``width`` x ``height`` picture by its short side: <=540p, 720p (541-1079) or >=1080p."""
    short = min(width, height)
    return "<=540p" if short <= 540 else "720p" if short < 1080 else ">=1080p"


@dataclass(frozen=True)
class Policy:
    """Minimum scores per resolution class, a fallback ``default``, an optional ``enhance`` bundle and the
    ``max_gain`` ceiling of the max-gain check, each checked (:mod:`kvqe.bounds`). Immutable: may be shared
    by threads."""

    thresholds: dict[str, float] = field(default_factory=dict)
    default: float | None = None
    enhance: str | None = None
    max_gain: float | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.thresholds) - set(RESOLUTION_CLASSES))
        if unknown:
            raise BadInputError(f"unknown resolution class thresholds.{unknown[0]!r} "
                                f"(known: {', '.join(RESOLUTION_CLASSES)})")
        thresholds = {key: checked(value, f"thresholds.{key!r}", THRESHOLD) for key, value in self.thresholds.items()}
        object.__setattr__(self, "thresholds", thresholds)
        if self.default is not None:
            object.__setattr__(self, "default", checked(self.default, "default", THRESHOLD))
        if self.max_gain is not None:
            object.__setattr__(self, "max_gain", checked(self.max_gain, "max_gain", MAX_GAIN))

    def threshold_for(self, width: int, height: int) -> tuple[float, str]:
        """(minimum score, where it came from: the class name or "default"); BadInputError when the
        policy has neither the class nor a default."""
        name = resolution_class(width, height)
        if name in self.thresholds:
            return self.thresholds[name], name
        if self.default is None:
            raise BadInputError(f"the policy has no threshold for {name} ({width}x{height}) and no default")
        return self.default, "default"


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Read and check a TOML policy file; BadInputError naming the bad key or the syntax error."""
    name = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise BadInputError(f"{name}: cannot read the policy file: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise BadInputError(f"{name}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise BadInputError(f"{name}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_KEYS))})")
    table = data.get("thresholds", {})
    if not isinstance(table, dict):
        raise BadInputError(f"{name}: thresholds must be a table of resolution class = score")
    enhance = data.get("enhance")
    if enhance is not None and not (isinstance(enhance, str) and enhance):
        raise BadInputError(f"{name}: enhance must be a bundle name or directory, got {enhance!r}")
    if not table and "default" not in data:
        raise BadInputError(f"{name}: the policy sets no threshold (give [thresholds] or default)")
    try:
        return Policy(table, data.get("default"), enhance, data.get("max_gain"))
    except BadInputError as exc:
        raise BadInputError(f"{name}: {exc}") from None
