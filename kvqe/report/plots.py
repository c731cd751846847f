"""Plots as inline SVG text (matplotlib, Agg-free SVG backend); callers embed the result as is."""
from __future__ import annotations

import io
from collections.abc import Sequence

from kvqe.errors import missing_extra


def _pyplot():  # type: ignore[no-untyped-def]
    try:
        import matplotlib
    except ImportError:
        raise missing_extra("matplotlib", "report") from None
    matplotlib.use("svg")
    import matplotlib.pyplot as plt
    return plt


def _svg(figure) -> str:  # type: ignore[no-untyped-def]
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    _pyplot().close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and doctype so it can sit inside HTML


def histogram_svg(scores: Sequence[float]) -> str:
    """The distribution of the batch's scores."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 2.8))
    axes.hist(list(scores), bins=min(20, max(5, len(scores))), color="#3b6ea8", edgecolor="white")
    axes.set_xlabel("score")
    axes.set_ylabel("videos")
    return _svg(figure)


def timeline_svg(times: Sequence[float], scores: Sequence[float]) -> str:
    """Per-frame score against time, the lowest frame marked."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 2.2))
    axes.plot(list(times), list(scores), marker="o", markersize=3, color="#3b6ea8")
    low = min(range(len(scores)), key=lambda i: scores[i])
    axes.plot([times[low]], [scores[low]], marker="o", color="#c0392b")
    axes.set_xlabel("time (s)")
    axes.set_ylabel("score")
    return _svg(figure)
