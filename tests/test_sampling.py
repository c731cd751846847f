"""Keyframe sampling (whole video) and windowed sampling (streams), on frame indices."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from kvqe.errors import BadInputError
from kvqe.sdk.frames import Frame
from kvqe.sdk.sampling import (
    keyframe_plan,
    pad_to_max,
    sampling_spec,
    select_keyframes,
    windowed_keyframes,
    worth_seeking,
)
from kvqe.specs import Sampling

SPEC = Sampling(kind="keyframes", per_second=1, position="middle", max_frames=8, pad="repeat_last")
PIXEL = np.zeros((2, 2, 3), np.uint8)


def frames(count: int, fps: float, pulled: list[int] | None = None):
    for index in range(count):
        if pulled is not None:
            pulled.append(index)
        yield Frame(index, index / fps, PIXEL)


def _middle_of_each_second(frame_count: int, fps: float, per_second: float = 1.0, max_frames: int = 8) -> list[int]:
    """The sampler before whole-video sampling: the first frame at or after each keyframe index, stopping at
    ``max_frames`` (the rule the student was trained with)."""
    first = math.floor(0.5 * fps / per_second)
    if frame_count <= first:
        return [(frame_count - 1) // 2]
    chosen: list[int] = []
    target = first
    for index in range(frame_count):
        if index >= target:
            chosen.append(index)
            if len(chosen) == max_frames:
                break
            target = math.floor((len(chosen) + 0.5) * fps / per_second)
    return chosen


@pytest.mark.parametrize(("fps", "per_second", "max_frames"), [(30.0, 1, 8), (30000 / 1001, 1, 8), (25.0, 1, 8),
                                                               (24.0, 2, 5), (59.94, 0.5, 3)])
def test_a_video_within_the_budget_keeps_the_middle_frame_of_each_interval(fps: float, per_second: float,
                                                                           max_frames: int) -> None:
    spec = replace(SPEC, per_second=per_second, max_frames=max_frames)
    longest = math.floor(max_frames * fps / per_second)
    for count in range(1, longest + 1):
        assert keyframe_plan(count, fps, spec) == _middle_of_each_second(count, fps, per_second, max_frames), count
        assert [f.index for f in select_keyframes(frames(count, fps), fps, spec, frame_count=count)] == \
            keyframe_plan(count, fps, spec)


def test_a_long_video_spreads_the_budget_over_all_of_it_and_is_read_to_its_end() -> None:
    pulled: list[int] = []
    chosen = select_keyframes(frames(1800, 30.0, pulled), 30.0, SPEC, frame_count=1800)  # 60 s
    assert [f.index for f in chosen] == [112, 337, 562, 787, 1012, 1237, 1462, 1687]  # middles of 7.5 s parts
    assert pulled[-1] == 1799  # read through, so that a file short of its declared length is caught
    assert keyframe_plan(241, 30.0, SPEC) == [15, 45, 75, 105, 135, 165, 195, 225]  # 8.03 s: 8 parts of 30.1
    assert keyframe_plan(300, 30.0, SPEC) == [18, 56, 93, 131, 168, 206, 243, 281]
    assert keyframe_plan(1800, 30.0, replace(SPEC, max_frames=2)) == [450, 1350]


def test_unknown_length_keeps_every_third_keyframe_when_the_budget_fills() -> None:
    """Without a frame count (pipes, iterators) the rate drops to a third whenever the budget would be
    exceeded: the kept frames are the middle frames of intervals three times as long, spread over the whole."""
    assert [f.index for f in select_keyframes(frames(240, 30.0), 30.0, SPEC)] == [15, 45, 75, 105, 135, 165, 195, 225]
    assert [f.index for f in select_keyframes(frames(300, 30.0), 30.0, SPEC)] == [45, 135, 225]  # 3 s intervals
    assert [f.index for f in select_keyframes(frames(1800, 30.0), 30.0, SPEC)] == [
        135, 405, 675, 945, 1215, 1485, 1755]  # 9 s intervals over 60 s
    assert [f.index for f in select_keyframes(frames(1800, 30.0), 30.0, replace(SPEC, max_frames=1))] == [1215]


def test_seeking_only_for_keyframes_far_apart() -> None:
    assert not worth_seeking(keyframe_plan(240, 30.0, SPEC), 30.0)  # one a second: decoded in order
    assert worth_seeking(keyframe_plan(1800, 30.0, SPEC), 30.0)
    assert not worth_seeking(keyframe_plan(480, 30.0, SPEC), 30.0)  # 16 s: 2 s apart


@pytest.mark.parametrize(("options", "match"), [({"per_second": 0}, "per_second"), ({"per_second": "1"}, "per_second"),
                                                ({"per_second": float("nan")}, "per_second"),
                                                ({"max_frames": 0}, "max_frames"), ({"max_frames": 2.5}, "max_frames"),
                                                ({"max_frames": True}, "max_frames")])
def test_bad_sampling_options(options: dict, match: str) -> None:
    with pytest.raises(BadInputError, match=match):
        sampling_spec(SPEC, **options)
    assert sampling_spec(SPEC, 2, 16) == replace(SPEC, per_second=2.0, max_frames=16)
    assert sampling_spec(SPEC) == replace(SPEC, per_second=1.0)


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

    chosen = select_keyframes(frames(80, 10.0), 10.0, SPEC, reduce=reduce)
    assert [f.index for f in chosen] == [5, 15, 25, 35, 45, 55, 65, 75] and len(reduced) == 8
    assert all(f.image.shape == (1, 1, 3) for f in chosen)
    assert [f.image.shape for f in select_keyframes(frames(3, 30.0), 30.0, SPEC, reduce=reduce)] == [(1, 1, 3)]
    windows = list(windowed_keyframes(frames(65, 10.0), 10.0, 2.0, reduce=reduce))
    assert all(f.image.shape == (1, 1, 3) for w in windows for f in w.frames)
