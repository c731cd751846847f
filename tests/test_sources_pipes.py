"""Raw frames piped in: from ffmpeg, truncated, malformed, stalled."""
from __future__ import annotations

import io
import os
import subprocess

import numpy as np
import pytest
from source_helpers import cv2_frames, wait_no_decoder
from support import CARPHONE, needs_ffmpeg

from kvqe.errors import BadInputError
from kvqe.sdk.pipes import open_raw_pipe


@needs_ffmpeg
@pytest.mark.parametrize("pix_fmt", ["bgr24", "rgb24"])
def test_raw_pipe_from_ffmpeg(pix_fmt: str) -> None:
    command = ["ffmpeg", "-v", "error", "-i", str(CARPHONE), "-f", "rawvideo", "-pix_fmt", pix_fmt, "-"]
    with subprocess.Popen(command, stdout=subprocess.PIPE) as ffmpeg:
        assert ffmpeg.stdout is not None
        with open_raw_pipe(ffmpeg.stdout, 176, 144, pix_fmt=pix_fmt, fps=30000 / 1001) as source:
            assert source.name == "-" and source.fps == pytest.approx(29.97, abs=1e-3)
            frames = list(source)
    assert ffmpeg.returncode == 0
    expected = list(cv2_frames(CARPHONE))
    assert len(frames) == len(expected) == 120
    for index in (0, 60, 119):
        diff = np.abs(frames[index].image.astype(np.int16) - expected[index]).mean()
        assert diff < 1.0
    assert frames[119].time_s == pytest.approx(119 * 1001 / 30000)


def test_raw_pipe_truncated_after_complete_frames() -> None:
    size = 6 * 4 * 3
    data = np.arange(2 * size + 10, dtype=np.uint8).tobytes()
    seen = []
    with pytest.raises(BadInputError, match=f"middle of a frame: got 10 of {size} bytes"):
        seen.extend(open_raw_pipe(io.BytesIO(data), 6, 4))
    assert len(seen) == 2
    assert np.array_equal(seen[1].image, np.frombuffer(data[size:2 * size], np.uint8).reshape(4, 6, 3))


def test_raw_pipe_errors() -> None:
    with pytest.raises(BadInputError, match="yielded no frames"):
        list(open_raw_pipe(io.BytesIO(b""), 6, 4))
    with pytest.raises(BadInputError, match="unsupported raw pix_fmt 'gray'; supported: bgr24, rgb24"):
        open_raw_pipe(io.BytesIO(b""), 6, 4, pix_fmt="gray")
    with pytest.raises(BadInputError, match="width must be a positive integer"):
        open_raw_pipe(io.BytesIO(b""), 0, 4)


def test_a_raw_pipe_that_stalls_times_out() -> None:
    read, write = os.pipe()
    with os.fdopen(read, "rb") as stream, os.fdopen(write, "wb") as writer:
        writer.write(bytes(6 * 4 * 3))
        writer.flush()
        frames = iter(open_raw_pipe(stream, 6, 4, timeout=0.5))
        assert next(frames).image.shape == (4, 6, 3)
        with pytest.raises(BadInputError, match="-: frame 1 did not arrive within the timeout of 0.5 s"):
            next(frames)
    assert wait_no_decoder()
