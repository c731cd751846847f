"""Quality gating: score a source, enhance it when it falls short, keep the enhancement only when it helps.

A source ``pass``-es when its score reaches the threshold; one below the scorer's minimum input (frames too
small, a video too short: :class:`kvqe.errors.UnscorableError`) is rejected with reason ``unscorable`` and no
score. Below the threshold, with an enhancer, the source is
enhanced into a temporary file beside ``output`` and re-scored; the file becomes ``output`` only when the
re-score is higher than the original AND reaches the threshold (``enhanced``), otherwise no file is left
behind and the source is rejected (``reject``).

The max-gain check guards against a scorer rewarding the enhancer's own look (over-sharpened texture scores
high on a no-reference model): with ``max_gain``, an enhancement that raises the score by more than that is
not trusted, not kept, and the source is rejected.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2

from kvqe.bounds import MAX_GAIN, SECONDS, Bound, checked
from kvqe.errors import BadInputError, UnscorableError
from kvqe.files import atomic_output_file, check_output_path
from kvqe.gate_policy import Policy
from kvqe.sdk.images import IMAGE_SUFFIXES
from kvqe.sdk.loader import load
from kvqe.sdk.model import Model

DECISIONS = ("pass", "enhanced", "reject")


@dataclass
class SegmentDecision:
    """One ``stream()`` window of a source: its time span, score and whether it reaches the threshold.
    A plain record: safe to share between threads once made."""

    start_s: float
    end_s: float
    score: float
    decision: str


@dataclass
class GateResult:
    """Why a source passed, was enhanced or was rejected (``to_record`` gives the JSON line).
    A plain record: safe to share between threads once made."""

    source: str
    decision: str
    score: float | None  # None: unscorable
    threshold: float
    threshold_from: str
    enhanced_score: float | None = None
    max_gain: float | None = None
    reason: str = ""
    detail: str = ""  # for an unscorable source: why (the error's message)
    output: str | None = None
    width: int = 0
    height: int = 0
    bundles: dict[str, dict[str, str]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    segments: list[SegmentDecision] | None = None

    def to_record(self) -> dict[str, Any]:
        """The JSON line ``kvqe gate --json`` prints for this source."""
        return asdict(self)


class _NotKept(Exception):
    """Raised inside the atomic write to discard an enhancement that did not earn its place."""


def bundle_facts(model: Model) -> dict[str, str]:
    """The bundle a decision was made with: name, the sha256 of the artifact that ran, backend, precision."""
    return {"name": model.name, "sha256": model.artifact.sha256, "backend": model.backend,
            "precision": model.precision}


def _as_model(model: Model | str, task: str, **options: Any) -> Model:
    loaded = model if isinstance(model, Model) else load(model, **options)
    if loaded.task != task:
        raise BadInputError(f"gating needs a {task} bundle here, but {loaded.name!r} is a {loaded.task} bundle")
    return loaded


def _enhance_into(enhancer: Model, source: str, target: Path, limits: dict[str, Any]) -> None:
    """Write ``source`` enhanced to ``target`` (an image, or a video with its audio)."""
    if Path(source).suffix.lower() in IMAGE_SUFFIXES:
        image = enhancer.enhance(source, max_pixels=limits.get("max_pixels"))
        if not cv2.imwrite(str(target), image):
            raise BadInputError(f"{target}: OpenCV cannot write this image format")
    else:
        enhancer.enhance_video(source, target, chroma="420", **limits)


def _check_against(vqa: Model, min_score: float | None, policy: Policy | None, max_gain: float | None) -> None:
    """BadInputError unless every threshold lies in ``vqa``'s score range and ``max_gain`` within its width
    (a threshold outside would pass or reject every source)."""
    low, high = vqa.output_spec.score_range or (-math.inf, math.inf)
    given = {"min_score": min_score} if min_score is not None else {} if policy is None else {
        **{f"policy thresholds.{key!r}": value for key, value in policy.thresholds.items()},
        **({} if policy.default is None else {"policy default": policy.default})}
    for name, value in given.items():
        checked(value, f"{name}, within the scorer's score range,", Bound(low, high))
    if max_gain is not None:
        checked(max_gain, "max_gain, within the width of the scorer's score range,", Bound(0, high - low, True))


def _threshold(min_score: float | None, policy: Policy | None, width: int, height: int) -> tuple[float, str]:
    """The threshold for a ``width`` x ``height`` source and where it came from."""
    if min_score is not None:
        return float(min_score), "min_score"
    assert policy is not None
    threshold, origin = policy.threshold_for(width, height)
    return threshold, f"policy:{origin}"


def gate_segments(source: Any, threshold: float, *, scorer: Model | str = "vqa", window_s: float = 1.0,
                  **options: Any) -> Iterator[SegmentDecision]:
    """Decide each ``window_s`` window of ``source`` as soon as it is scored: a live stream (a URL, a pipe, an
    iterable of BGR frames; ``fps`` for one without a rate) is gated while it plays, with bounded memory.
    ``options``: ``fps``, ``timeout``, ``max_pixels``, ``protocols``, ``demuxers`` as for :meth:`Model.stream`.

    Thread safety: as :meth:`Model.stream`; one generator per thread."""
    vqa = _as_model(scorer, "vqa")
    for segment in vqa.stream(source, window_s=window_s, **options):
        yield SegmentDecision(segment.start_s, segment.end_s, segment.score,
                              "pass" if segment.score >= threshold else "reject")


def gate(source: str | os.PathLike[str], *, min_score: float | None = None, policy: Policy | None = None,
         scorer: Model | str = "vqa", enhancer: Model | str | None = None,
         output: str | os.PathLike[str] | None = None, segment_seconds: float | None = None,
         max_gain: float | None = None, **limits: Any) -> GateResult:
    """Gate one source (video file or image) against ``min_score``, or the ``policy`` threshold of its
    resolution class (``min_score`` wins when both are given).

    ``scorer``/``enhancer``: loaded models or bundle names/directories (the policy's ``enhance`` is used
    when ``enhancer`` is None); ``output``: where a kept enhancement goes (required with an enhancer);
    ``segment_seconds``: also decide each window of that length (``Model.stream``), as a live stream would
    be gated; ``max_gain``: the largest score gain an enhancement may show and still be kept (None: no
    ceiling). ``limits``: ``timeout``, ``max_pixels``, ``protocols``, ``demuxers`` as for
    :meth:`Model.score`.

    Thread safety: safe to call from several threads with shared models, given distinct outputs.
    """
    if min_score is None and policy is None:
        raise BadInputError("give a minimum score (min_score) or a policy")
    if segment_seconds is not None:
        checked(segment_seconds, "segment_seconds", SECONDS)
    if max_gain is not None:
        checked(max_gain, "max_gain", MAX_GAIN)
    name = os.fspath(source)
    enhancer = enhancer if enhancer is not None else (policy.enhance if policy else None)
    if enhancer is not None:
        if output is None:
            raise BadInputError("an enhancer needs an output path for the enhanced source")
        check_output_path(output, source=name)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    vqa = _as_model(scorer, "vqa")
    _check_against(vqa, min_score, policy, max_gain)
    try:
        first = vqa.score(name, **limits)
    except UnscorableError as exc:
        threshold, origin = _threshold(min_score, policy, exc.width, exc.height)
        return GateResult(name, "reject", None, threshold, origin, max_gain=max_gain, reason="unscorable",
                          detail=str(exc), width=exc.width, height=exc.height,
                          bundles={"scorer": bundle_facts(vqa)},
                          seconds={"score": round(time.perf_counter() - started, 3)})
    seconds["score"] = round(time.perf_counter() - started, 3)
    threshold, origin = _threshold(min_score, policy, first.width, first.height)
    result = GateResult(name, "pass", first.score, threshold, origin, max_gain=max_gain, width=first.width,
                        height=first.height, bundles={"scorer": bundle_facts(vqa)}, seconds=seconds)
    if segment_seconds is not None and first.duration_s is not None:
        started = time.perf_counter()
        result.segments = list(gate_segments(name, threshold, scorer=vqa, window_s=segment_seconds, **limits))
        seconds["segments"] = round(time.perf_counter() - started, 3)
    if first.score >= threshold:
        result.reason = "the score reaches the threshold"
        return result
    result.decision, result.reason = "reject", "below the threshold and no enhancer"
    if enhancer is None:
        return result
    assert output is not None
    started = time.perf_counter()
    sr = _as_model(enhancer, "sr")
    result.bundles["enhancer"] = bundle_facts(sr)
    with contextlib.suppress(_NotKept), atomic_output_file(output) as tmp:
        _enhance_into(sr, name, tmp, limits)
        seconds["enhance"] = round(time.perf_counter() - started, 3)
        started = time.perf_counter()
        result.enhanced_score = vqa.score(tmp, **limits).score
        seconds["rescore"] = round(time.perf_counter() - started, 3)
        gain = result.enhanced_score - first.score
        if gain <= 0 or result.enhanced_score < threshold:
            result.reason = ("the enhancement scores no higher" if gain <= 0
                             else "the enhancement stays below the threshold")
            raise _NotKept
        if max_gain is not None and gain > max_gain:
            result.reason = f"the enhancement gains {gain:.2f}, more than max_gain {max_gain:g}: not trusted"
            raise _NotKept
        result.decision, result.output = "enhanced", os.fspath(output)
        result.reason = "the enhancement scores higher and reaches the threshold"
    return result
