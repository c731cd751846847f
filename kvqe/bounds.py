"""The range of every number a user gives kvqe: thresholds, sampling, threads, tiles, timeouts, pixel caps.

One rule per quantity, applied alike to the command line (which names its ``--option``), the TOML gate
policy and the API (which name the keyword): finite, within its range, and bounded above where a loop or
a wait depends on it, so that no value runs for ever or silently passes or rejects everything.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from kvqe.errors import BadInputError


@dataclass(frozen=True)
class Bound:
    """The values a quantity may take: from ``low`` (excluded when ``low_open``) to ``high``, whole numbers
    only when ``integer``; ``zero``: 0 is also accepted (a switch-off, e.g. ``tile=0`` for no tiling)."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    integer: bool = False
    zero: bool = False

    def describe(self) -> str:
        """The rule in words, e.g. "an integer from 1 to 10,000"."""
        kind = "an integer" if self.integer else "a finite number"
        lower = "" if self.low == -math.inf else f" {'above' if self.low_open else 'from'} {_shown(self.low)}"
        if self.high == math.inf:
            upper = ""
        elif lower and not self.low_open:
            upper = f" to {_shown(self.high)}"
        else:
            upper = f"{' and' if lower else ''} at most {_shown(self.high)}"
        return f"{'0 or ' if self.zero else ''}{kind}{lower}{upper}"

    def holds(self, value: object) -> bool:
        """Whether ``value`` (a number, never a bool) is within the bound."""
        wanted = numbers.Integral if self.integer else numbers.Real
        if isinstance(value, bool) or not isinstance(value, wanted):
            return False
        number = float(value)
        if self.zero and number == 0:
            return True
        above = number > self.low if self.low_open else number >= self.low
        return math.isfinite(number) and above and number <= self.high


def _shown(number: float) -> str:
    return f"{number:,.0f}" if number == int(number) else f"{number:g}"


THRESHOLD = Bound()  # a minimum score; the gate also checks it against the scorer's score range
MAX_GAIN = Bound(0, low_open=True)
MAX_FRAMES = Bound(1, 10_000, integer=True)  # keyframes per video: the sampling plan loops over them
PER_SECOND = Bound(0, 1000, low_open=True)  # keyframes per second (the manifest schema's bound)
FPS = Bound(0, 10_000, low_open=True)  # frames per second a caller imposes on a source
SECONDS = Bound(0.001, 86_400)  # a window or segment of a stream: one window per frame at least every ms
TIMEOUT = Bound(0, 86_400, low_open=True)  # the wait for a source to open and for each frame
THREADS = Bound(0, 1024, integer=True)  # 0: the backend's default
TILE = Bound(16, 65_536, integer=True, zero=True)  # input pixels a side; 0: no tiling
MAX_PIXELS = Bound(1, 2**36, integer=True)  # the largest frame, width x height


def checked(value: object, name: str, bound: Bound) -> float:
    """``value`` as a float; BadInputError naming ``name`` and the value unless ``bound`` holds it."""
    if not bound.holds(value):
        raise BadInputError(f"{name} must be {bound.describe()}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def checked_int(value: object, name: str, bound: Bound) -> int:
    """``value`` as an int; BadInputError naming ``name`` and the value unless ``bound`` (integer) holds it."""
    checked(value, name, bound)
    return int(value)  # type: ignore[call-overload]


def optional(value: object, name: str, bound: Bound) -> float | None:
    """None for None, else :func:`checked`."""
    return None if value is None else checked(value, name, bound)
