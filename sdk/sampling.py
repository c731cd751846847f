"""Frame sampling for VQA: keyframes spread over a whole video, and per window for streams.

A whole video is cut into equal intervals and the middle frame of each is a keyframe: intervals of
``1 / per_second`` seconds (the model's own rate), lengthened to ``length / max_frames`` when the video
is too long for the budget, so the keyframes always cover all of it. For a video no longer than
``max_frames / per_second`` seconds these are the middle frames of each sampling interval from the start.
Samplers pass frames through, holding only the frames they keep, reduced at once by ``reduce`` when given
(e.g. to the model's input size), so full-size keyframes are never held."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from kvqe.bounds import MAX_FRAMES, PER_SECOND, checked_int, optional
from kvqe.errors import BadInputError
from kvqe.sdk.frames import Frame
from kvqe.sdk.seeking import SEEK_GAP_S
from kvqe.specs import Sampling

Reduce = Callable[[np.ndarray], np.ndarray]  # a chosen frame's image -> what is kept of it


def _kept(frame: Frame, reduce: Reduce | None) -> Frame:
    return frame if reduce is None else replace(frame, image=reduce(frame.image))


def sampling_spec(spec: Sampling | None, per_second: float | None = None,
                  max_frames: int | None = None) -> Sampling:
    """The bundle's sampling ``spec`` with the caller's ``per_second`` / ``max_frames`` (None: the
    bundle's), checked (BadInputError naming the bad one)."""
    per_second = optional(per_second, "per_second", PER_SECOND)
    max_frames = None if max_frames is None else checked_int(max_frames, "max_frames", MAX_FRAMES)
    if spec is None:
        raise BadInputError("the bundle's input spec has no frame sampling (is it a VQA bundle?)")
    return replace(spec, per_second=float(spec.per_second if per_second is None else per_second),
                   max_frames=int(spec.max_frames if max_frames is None else max_frames))


def keyframe_index(k: int, fps: float, per_second: float) -> int:
    """Decode index of keyframe ``k`` at the model's rate: the middle frame of the ``k``-th interval."""
    return math.floor((k + 0.5) * fps / per_second)


def keyframe_plan(frame_count: int, fps: float, spec: Sampling) -> list[int]:
    """Decode indices of the keyframes of a video of ``frame_count`` frames (see the module's docstring).

    A video that ends before its first keyframe gives its middle frame.
    """
    per_second, max_frames = float(spec.per_second), spec.max_frames
    if frame_count <= keyframe_index(0, fps, per_second):
        return [(frame_count - 1) // 2]
    if frame_count * per_second <= max_frames * fps:  # the model's rate fits the budget
        indices = (keyframe_index(k, fps, per_second) for k in range(max_frames))
        return [i for i in indices if i < frame_count]
    return [math.floor((k + 0.5) * frame_count / max_frames) for k in range(max_frames)]


def worth_seeking(plan: list[int], fps: float) -> bool:
    """Whether some keyframe of ``plan`` lies more than ``SEEK_GAP_S`` seconds ahead of the one before it
    (or of the first frame): a clip sampled at a rate of one keyframe a second or more is decoded in order."""
    return any(b - a > SEEK_GAP_S * fps for a, b in zip([0, *plan], plan))


def select_keyframes(
    frames: Iterable[Frame], fps: float, spec: Sampling, frame_count: int | None = None,
    reduce: Reduce | None = None,
) -> list[Frame]:
    """Keyframes of a whole video per the sampling spec (``per_second``, ``max_frames``).

    With ``frame_count`` known, the frames of :func:`keyframe_plan` (the source may yield only those, having
    sought them); the rest of the source is read through so that its length is checked. Without it (pipes,
    iterables, live URLs), keyframes are taken at the model's rate and, whenever ``max_frames`` would be
    exceeded, every third is kept (the 2nd, 5th, ...: the middle frames of intervals three times as long)
    and the rate drops to a third, so they stay spread over the whole video: between
    ``(max_frames + 2) // 3`` and ``max_frames`` of them. A video that ends before its first keyframe gives
    its last frame. Padding (``repeat_last``) is applied by :func:`pad_to_max`. Each chosen frame's image is
    replaced by ``reduce(image)`` as it is chosen.
    """
    if frame_count is not None and frame_count > 0:
        return _planned(frames, keyframe_plan(frame_count, fps, spec), reduce)
    per_second, max_frames = float(spec.per_second), spec.max_frames
    chosen: list[Frame] = []
    stride = 1  # intervals per keyframe interval, a power of 3
    target = keyframe_index(0, fps, per_second)
    last: Frame | None = None
    for frame in frames:
        last = frame
        if frame.index >= target:
            chosen.append(_kept(frame, reduce))
            if len(chosen) > max_frames:
                chosen, stride = chosen[1::3], stride * 3
            target = keyframe_index(len(chosen) * stride + (stride - 1) // 2, fps, per_second)
    if not chosen and last is not None:
        chosen.append(_kept(last, reduce))
    return chosen


def _planned(frames: Iterable[Frame], plan: list[int], reduce: Reduce | None) -> list[Frame]:
    """The frames of ``plan`` (the first frame at or after each index), reading ``frames`` to its end."""
    chosen: list[Frame] = []
    last: Frame | None = None
    for frame in frames:
        last = frame
        if len(chosen) < len(plan) and frame.index >= plan[len(chosen)]:
            chosen.append(_kept(frame, reduce))
    if not chosen and last is not None:
        chosen.append(_kept(last, reduce))
    return chosen


def pad_to_max(items: list[Any], spec: Sampling) -> list[Any]:
    """Repeat the last item up to ``max_frames`` when the spec asks for ``repeat_last`` padding."""
    if spec.repeats_last and items:
        return items + [items[-1]] * (spec.max_frames - len(items))
    return items


@dataclass(frozen=True)
class Window:
    """The keyframes of one stream window ``[start_s, end_s)``."""

    start_s: float
    end_s: float
    frames: list[Frame]


def windowed_keyframes(
    frames: Iterable[Frame], fps: float, window_s: float, per_second: float = 1.0, reduce: Reduce | None = None
) -> Iterator[Window]:
    """Split a stream into windows of ``window_s`` seconds and yield each window's keyframes.

    A window's keyframes are the global keyframes that fall in it; a window too short to hold one takes
    its middle frame. A final partial window without a keyframe takes its last frame. Each chosen frame's
    image is replaced by ``reduce(image)`` as it is chosen.
    """
    if window_s <= 0:
        raise ValueError("window_s must be positive")
    window = 0
    chosen: list[Frame] = []
    last: Frame | None = None

    def bounds(w: int) -> tuple[int, int, list[int]]:
        start = math.ceil(w * window_s * fps - 1e-9)
        end = math.ceil((w + 1) * window_s * fps - 1e-9)
        k0 = max(0, math.ceil(start * per_second / fps - 0.5 - 1e-9))
        targets = []
        k = k0
        while (index := keyframe_index(k, fps, per_second)) < end:
            if index >= start:
                targets.append(index)
            k += 1
        return start, end, targets or [(start + end - 1) // 2]

    start, end, targets = bounds(window)
    for frame in frames:
        while frame.index >= end:
            if chosen:
                yield Window(start / fps, end / fps, chosen)
            window += 1
            chosen, last = [], None
            start, end, targets = bounds(window)
        last = frame
        if frame.index in targets:
            chosen.append(_kept(frame, reduce))
    if not chosen and last is not None:
        chosen.append(_kept(last, reduce))
    if chosen and last is not None:
        yield Window(start / fps, (last.index + 1) / fps, chosen)
