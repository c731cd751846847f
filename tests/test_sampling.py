"""Keyframe sampling (whole video) and windowed sampling (streams), on frame indices."""
from __future__ import annotations

import numpy as np
import pytest

from kvqe.sdk.sampling import pad_to_max, select_keyframes, windowed_keyframes
from kvqe.sdk.sources import Frame

SPEC = {"kind": "keyframes", "per_second": 1, "position": "middle", "max_frames": 8, "pad": "repeat_last"}
PIXEL = np.zeros((2, 2, 3), np.uint8)


def frames(count: int, fps: float, pulled: list[int] | None = None):
    for index in range(count):
        if pulled is not None:
            pulled.append(index)
        yield Frame(index, index / fps, PIXEL)


def test_middle_frame_of_each_second_up_to_eight_and_stops_decoding() -> None:
    pulled: list[int] = []
    chosen = select_keyframes(frames(300, 30.0, pulled), 30.0, SPEC)
    assert [f.index for f in chosen] == [15, 45, 75, 105, 135, 165, 195, 225]
    assert pulled[-1] == 225  # nothing decoded past the 8th keyframe


def test_fractional_fps_and_partial_last_second() -> None:
    fps = 30000 / 1001
    chosen = select_keyframes(frames(100, fps), fps, SPEC)  # 3.34 s
    assert [f.index for f in chosen] == [14, 44, 74]
    assert [f.index for f in pad_to_max(chosen, SPEC)] == [14, 44, 74, 74, 74, 74, 74, 74]


def test_short_video_takes_middle_frame_when_length_known_else_last() -> None:
    assert [f.index for f in select_keyframes(frames(10, 30.0), 30.0, SPEC, frame_count=10)] == [4]
    assert [f.index for f in select_keyframes(frames(10, 30.0), 30.0, SPEC)] == [9]
    assert [f.index for f in select_keyframes(frames(1, 30.0), 30.0, SPEC)] == [0]


def test_empty_input_selects_nothing() -> None:
    assert select_keyframes(iter(()), 30.0, SPEC) == []


def test_windows_of_one_second_take_the_keyframe() -> None:
    windows = list(windowed_keyframes(frames(90, 30.0), 30.0, 1.0))
    assert [(w.start_s, w.end_s, [f.index for f in w.frames]) for w in windows] == [
        (0.0, 1.0, [15]), (1.0, 2.0, [45]), (2.0, 3.0, [75])]


def test_half_second_windows_take_their_middle_frame_and_partial_last_window() -> None:
    windows = list(windowed_keyframes(frames(50, 20.0), 20.0, 0.5))  # 2.5 s at 20 fps
    assert [[f.index for f in w.frames] for w in windows] == [[4], [10], [24], [30], [44]]
    assert windows[-1].start_s == pytest.approx(2.0) and windows[-1].end_s == pytest.approx(2.5)


def test_two_second_windows_hold_two_keyframes_and_a_short_tail_takes_its_last_frame() -> None:
    windows = list(windowed_keyframes(frames(65, 10.0), 10.0, 2.0))  # 6.5 s at 10 fps
    assert [[f.index for f in w.frames] for w in windows] == [[5, 15], [25, 35], [45, 55], [64]]
    assert windows[-1].end_s == pytest.approx(6.5)


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError):
        list(windowed_keyframes(frames(3, 10.0), 10.0, 0))


def test_chosen_frames_are_reduced_as_they_are_chosen() -> None:
    reduced: list[int] = []

    def reduce(image: np.ndarray) -> np.ndarray:
        reduced.append(image.shape[0])
        return image[:1, :1]

    chosen = select_keyframes(frames(100, 10.0), 10.0, SPEC, reduce=reduce)
    assert [f.index for f in chosen] == [5, 15, 25, 35, 45, 55, 65, 75] and len(reduced) == 8
    assert all(f.image.shape == (1, 1, 3) for f in chosen)
    assert [f.image.shape for f in select_keyframes(frames(3, 30.0), 30.0, SPEC, reduce=reduce)] == [(1, 1, 3)]
    windows = list(windowed_keyframes(frames(65, 10.0), 10.0, 2.0, reduce=reduce))
    assert all(f.image.shape == (1, 1, 3) for w in windows for f in w.frames)
