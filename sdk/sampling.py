"""Frame sampling for VQA: keyframes (the middle frame of each second) for a whole video, and per
window for streams. Both pass frames through, holding only the frames they keep, and those reduced at once
by ``reduce`` when given (e.g. to the model's input size), so full-size keyframes are never held."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from kvqe.sdk.sources import Frame

Reduce = Callable[[np.ndarray], np.ndarray]  # a chosen frame's image -> what is kept of it


def _kept(frame: Frame, reduce: Reduce | None) -> Frame:
    return frame if reduce is None else replace(frame, image=reduce(frame.image))


def keyframe_index(k: int, fps: float, per_second: float) -> int:
    """Decode index of keyframe ``k``: the middle frame of the ``k``-th sampling interval."""
    return math.floor((k + 0.5) * fps / per_second)


def select_keyframes(
    frames: Iterable[Frame], fps: float, spec: dict[str, Any], frame_count: int | None = None,
    reduce: Reduce | None = None,
) -> list[Frame]:
    """Keyframes of a video per the sampling spec, stopping the decode as soon as it has enough.

    Keyframe k is the frame at ``floor((k + 0.5) * fps / per_second)``; at most ``max_frames`` are taken.
    A video that ends before its first keyframe gives its middle frame when the container reports its
    length, else its last frame. Padding (``repeat_last``) is applied by :func:`pad_to_max`. Each chosen
    frame's image is replaced by ``reduce(image)`` as it is chosen.
    """
    per_second = float(spec.get("per_second", 1))
    max_frames = int(spec["max_frames"])
    first = keyframe_index(0, fps, per_second)
    if frame_count is not None and 0 < frame_count <= first:
        first = (frame_count - 1) // 2
    chosen: list[Frame] = []
    target = first
    last: Frame | None = None
    for frame in frames:
        last = frame
        if frame.index >= target:
            chosen.append(_kept(frame, reduce))
            if len(chosen) == max_frames:
                break
            target = keyframe_index(len(chosen), fps, per_second)
    if not chosen and last is not None:
        chosen.append(_kept(last, reduce))
    return chosen


def pad_to_max(items: list[Any], spec: dict[str, Any]) -> list[Any]:
    """Repeat the last item up to ``max_frames`` when the spec asks for ``repeat_last`` padding."""
    if spec.get("pad") == "repeat_last" and items:
        return items + [items[-1]] * (int(spec["max_frames"]) - len(items))
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
