"""FrameSource's decoder thread: bounded read-ahead, early exit, errors after good frames, timeouts."""
from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from source_helpers import wait_no_decoder
from support import BIKES

from kvqe.errors import BadInputError
from kvqe.sdk.sources import open_source


def test_decoder_runs_at_most_queue_size_ahead() -> None:
    pulled = 0
    frame = np.zeros((16, 16, 3), np.uint8)

    def endless() -> Iterator[np.ndarray]:
        nonlocal pulled
        while True:
            pulled += 1
            yield frame

    source = open_source(endless(), queue_size=3)
    frames = iter(source)
    next(frames)
    time.sleep(0.3)
    assert pulled <= 1 + 3 + 1  # one taken, three queued, one waiting to be put
    source.close()
    assert wait_no_decoder()


def test_early_exit_stops_the_thread() -> None:
    with open_source(BIKES, queue_size=2) as source:
        for frame in source:
            if frame.index == 5:
                break
    assert wait_no_decoder()
    frames = iter(open_source(itertools.repeat(np.zeros((4, 4, 3), np.uint8))))
    next(frames)
    del frames  # dropping the iterator closes the source
    assert wait_no_decoder()


def test_decoder_errors_reach_the_consumer_after_good_frames() -> None:
    good = np.zeros((4, 4, 3), np.uint8)

    def failing() -> Iterator[np.ndarray]:
        yield good
        yield good
        raise ValueError("camera unplugged")

    seen = []
    with pytest.raises(BadInputError, match="reading frame 2 failed: ValueError: camera unplugged") as info:
        seen.extend(open_source(failing()))
    assert len(seen) == 2 and isinstance(info.value.__cause__, ValueError)
    with pytest.raises(BadInputError, match="frame 1 is 5x4 but frame 0 was 4x4"):
        list(open_source([good, np.zeros((4, 5, 3), np.uint8)]))
    assert wait_no_decoder()


def test_source_iterates_once() -> None:
    source = open_source([np.zeros((4, 4, 3), np.uint8)])
    assert len(list(source)) == 1
    with pytest.raises(RuntimeError, match="already iterated"):
        iter(source)


# ---- timeouts -------------------------------------------------------------------------------------------


def test_a_source_that_stops_delivering_times_out_and_its_thread_ends() -> None:
    release = threading.Event()

    def stalls() -> Iterator[np.ndarray]:
        yield np.zeros((4, 4, 3), np.uint8)
        release.wait(30)  # a camera that stopped sending

    started = time.monotonic()
    seen = []
    with pytest.raises(BadInputError, match=r"<frames>: frame 1 did not arrive within the timeout of 0.5 s"):
        seen.extend(open_source(stalls(), timeout=0.5))
    assert len(seen) == 1 and 0.45 <= time.monotonic() - started < 2.0
    release.set()  # the producer is the caller's: it ends when it returns
    assert wait_no_decoder()


def test_a_slow_consumer_is_not_a_stall() -> None:
    frames = iter(open_source([np.zeros((4, 4, 3), np.uint8)] * 3, timeout=0.2, queue_size=1))
    for _ in range(3):
        next(frames)
        time.sleep(0.3)  # the consumer's own work: only waits for the source count
    assert next(frames, None) is None


@pytest.mark.parametrize(("options", "match"), [
    ({"timeout": 0}, "timeout must be a finite number above 0"),
    ({"timeout": float("nan")}, "timeout must be a finite number above 0"),
    ({"protocols": ["file", 3]}, "protocols must be URL scheme names"),
    ({"protocols": ["not a scheme"]}, "protocols must be URL scheme names"),
])
def test_bad_limits(options: dict[str, object], match: str) -> None:
    with pytest.raises(BadInputError, match=match):
        open_source([np.zeros((4, 4, 3), np.uint8)], **options)  # type: ignore[arg-type]
