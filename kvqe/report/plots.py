"""Plots as inline SVG text drawn with matplotlib's object API (no pyplot: no global backend or figure state, so
the functions may run on several threads at once); callers embed the result as is."""
from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from kvqe.errors import missing_extra


def _figure(width: float, height: float) -> Any:
    """A new matplotlib Figure; BackendUnavailable (exit 4) without the report extra."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise missing_extra("matplotlib", "report") from None
    return Figure(figsize=(width, height))


def _svg(figure: Any) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and doctype so it can sit inside HTML


def histogram_svg(scores: Sequence[float]) -> str:
    """The distribution of the batch's scores."""
    figure = _figure(7, 2.8)
    axes = figure.subplots()
    axes.hist(list(scores), bins=min(20, max(5, len(scores))), color="#3b6ea8", edgecolor="white")
    axes.set_xlabel("score")
    axes.set_ylabel("videos")
    return _svg(figure)


def timeline_svg(times: Sequence[float], scores: Sequence[float]) -> str:
    """Per-frame score against time, the lowest frame marked in red."""
    figure = _figure(7, 2.2)
    axes = figure.subplots()
    axes.plot(list(times), list(scores), marker="o", markersize=3, color="#3b6ea8")
    low = min(range(len(scores)), key=lambda i: scores[i])
    axes.plot([times[low]], [scores[low]], marker="o", color="#c0392b")
    axes.set_xlabel("time (s)")
    axes.set_ylabel("score")
    return _svg(figure)
