"""Whole-video sampling on real media: keyframes spread over all of a video, read by seeking where that is
exact, at a cost that grows with the number of keyframes rather than the video's length."""
from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from support import BIKES, BUNNY, needs_ffmpeg

import kvqe
from kvqe.errors import BadInputError
from kvqe.sdk.frames import Frame
from kvqe.sdk.sampling import keyframe_plan
from kvqe.sdk.sources import open_source
from kvqe.specs import Sampling

_VIDEO_CAPTURE = cv2.VideoCapture
SPREAD = Sampling(per_second=1, max_frames=16)
# 20 s of bikes (its 10 s twice) at 192x80, 25 fps, in each format; key pictures 10 s apart where the
# encoder allows, B-frames where the codec has them
ENCODINGS = {
    "h264.mp4": ["-c:v", "libx264", "-g", "250", "-bf", "3", "-crf", "28", "-pix_fmt", "yuv420p"],
    "hevc.mp4": ["-c:v", "libx265", "-x265-params", "keyint=250:bframes=4:log-level=error", "-crf", "30",
                 "-pix_fmt", "yuv420p"],
    "vp9.webm": ["-c:v", "libvpx-vp9", "-g", "250", "-crf", "40", "-b:v", "0", "-deadline", "realtime",
                 "-cpu-used", "8"],
}


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def sequential(path: Path) -> tuple[list[np.ndarray], list[float]]:
    """Every frame of ``path`` decoded in order by OpenCV, with its timestamp in seconds."""
    capture = _VIDEO_CAPTURE(str(path), cv2.CAP_FFMPEG)
    images, times = [], []
    while (read := capture.read())[0]:
        images.append(read[1])
        times.append(capture.get(cv2.CAP_PROP_POS_MSEC) / 1000)
    capture.release()
    return images, times


def read_planned(path: Path, spec: Sampling) -> tuple[list[Frame], str]:
    """The frames of ``path``'s keyframe plan, read as ``score`` reads them, and how they were read."""
    with open_source(path) as source:
        assert source.seekable and source.frame_count is not None and source.fps is not None
        source.read_only(keyframe_plan(source.frame_count, source.fps, spec))
        return list(source), source.access


@needs_ffmpeg
@pytest.mark.parametrize("name", list(ENCODINGS))
def test_seeking_lands_on_the_frames_of_a_sequential_decode(name: str, tmp_path: Path) -> None:
    clip = tmp_path / name
    ffmpeg("-stream_loop", "1", "-i", str(BIKES), "-vf", "scale=192:80", *ENCODINGS[name], str(clip))
    images, times = sequential(clip)
    assert len(images) == 500
    frames, access = read_planned(clip, SPREAD)
    assert access == "seek"
    assert [f.index for f in frames] == keyframe_plan(500, 25.0, SPREAD)  # 15, 46, ... 484: mid-GOP, both GOPs
    for frame in frames:
        assert np.array_equal(frame.image, images[frame.index]), frame.index  # bit for bit
        assert frame.time_s == pytest.approx(times[frame.index]) == pytest.approx(frame.index / 25)


@needs_ffmpeg
def test_a_variable_frame_rate_video_is_decoded_in_order(tmp_path: Path) -> None:
    """OpenCV seeks by time as if the rate were constant, so on a VFR video it lands on other frames; the
    landing is checked by timestamp, and the rest of the video is then decoded in order."""
    clip = tmp_path / "vfr.mp4"  # 4 s at 25 fps, then 15 s at 10 fps
    ffmpeg("-i", str(BIKES), "-vf", "scale=192:80,setpts='if(lt(N,100),N/25,4+(N-100)/10)/TB'", "-fps_mode", "vfr",
           "-c:v", "libx264", "-g", "60", "-bf", "2", "-crf", "28", "-video_track_timescale", "1000", str(clip))
    images, times = sequential(clip)
    frames, access = read_planned(clip, Sampling(per_second=1, max_frames=8))
    assert access == "sequential"  # the first seek landed elsewhere: every frame after it is delivered
    assert frames[-1].index == len(images) - 1 == 249
    assert all(np.array_equal(f.image, images[f.index]) and f.time_s == pytest.approx(times[f.index])
               for f in frames)
    result = kvqe.load("vqa").score(clip)
    assert result.sampling is not None and result.sampling.how == "sequential" and result.frames == 8
    assert result.frame_times == pytest.approx([times[i] for i in result.frame_indices])
    assert result.duration_s == pytest.approx(18.84, abs=0.05)


class _CountingCapture:
    """cv2.VideoCapture counting the frames it is asked to decode (read, grab) and the seeks."""

    decoded = 0
    seeks = 0

    def __init__(self, *args: object) -> None:
        self._capture = _VIDEO_CAPTURE(*args)

    def read(self) -> tuple[bool, np.ndarray]:
        _CountingCapture.decoded += 1
        return self._capture.read()

    def grab(self) -> bool:
        _CountingCapture.decoded += 1
        return self._capture.grab()

    def set(self, key: int, value: float) -> bool:
        _CountingCapture.seeks += key == cv2.CAP_PROP_POS_FRAMES
        return self._capture.set(key, value)

    def __getattr__(self, name: str) -> object:
        return getattr(self._capture, name)


@pytest.fixture(scope="module")
def six_and_sixty(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """6 s of bikes (2 s key-picture interval, B-frames), and the same 6 s ten times over (60 s)."""
    folder = tmp_path_factory.mktemp("lengths")
    six, sixty = folder / "six.mp4", folder / "sixty.mp4"
    ffmpeg("-i", str(BIKES), "-t", "6", "-vf", "scale=160:68", "-c:v", "libx264", "-g", "50", "-crf", "28",
           "-pix_fmt", "yuv420p", str(six))
    ffmpeg("-stream_loop", "9", "-i", str(six), "-c", "copy", "-movflags", "+faststart", str(sixty))
    return six, sixty


@needs_ffmpeg
def test_the_cost_grows_with_the_keyframes_not_the_length(six_and_sixty: tuple[Path, Path],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    six, sixty = six_and_sixty
    monkeypatch.setattr(cv2, "VideoCapture", _CountingCapture)
    vqa = kvqe.load("vqa")
    counts = {}
    for clip in (six, sixty):
        _CountingCapture.decoded = _CountingCapture.seeks = 0
        result = vqa.score(clip)
        counts[clip.name] = (_CountingCapture.decoded, _CountingCapture.seeks, result)
    (short_decoded, short_seeks, short), (long_decoded, long_seeks, long) = counts.values()
    assert (short.frames, short_seeks, short_decoded) == (6, 0, 151)  # in order to the end (and one past it)
    assert short.sampling is not None and short.sampling.how == "sequential"
    assert (long.frames, long_seeks) == (8, 8)
    assert long.sampling is not None and long.sampling.how == "seek"
    assert long_decoded <= 30  # frame 0, 8 keyframes, and decoding on to the last frame that must exist
    assert long.frame_times[0] < 4 and long.frame_times[-1] > 56  # all of it
    assert long.duration_s == pytest.approx(60.0) and (long.width, long.height, long.codec) == (160, 68, "h264")


@needs_ffmpeg
@pytest.mark.parametrize("kept", [0.5, 0.9])
def test_a_truncated_file_is_bad_input_when_seeking_too(six_and_sixty: tuple[Path, Path], kept: float,
                                                        tmp_path: Path) -> None:
    sixty = six_and_sixty[1]
    cut = tmp_path / "cut.mp4"  # an interrupted upload: the index (moov first) declares all 1500 frames
    cut.write_bytes(sixty.read_bytes()[: int(sixty.stat().st_size * kept)])
    with pytest.raises(BadInputError, match=r"cut.mp4: the decode stopped after \d+ of the 1500 frames.*truncated"):
        kvqe.load("vqa").score(cut)


@needs_ffmpeg
def test_both_orders_of_two_clips_score_alike(tmp_path: Path) -> None:
    """bikes (sharp) and bigbuckbunny (blurred and blocky), 10 s each, joined both ways: scored from their
    first 8 s, as before whole-video sampling, the orders differed by 38 points (80.0 and 42.4)."""
    sharp, soft = tmp_path / "sharp.mp4", tmp_path / "soft.mp4"
    ffmpeg("-i", str(BIKES), "-t", "10", "-vf", "scale=320:180,setsar=1,fps=25", "-c:v", "libx264", "-crf", "18",
           "-pix_fmt", "yuv420p", str(sharp))
    ffmpeg("-stream_loop", "1", "-i", str(BUNNY), "-t", "10", "-vf", "scale=80:45,scale=320:180,setsar=1,fps=25",
           "-c:v", "libx264", "-crf", "40", "-pix_fmt", "yuv420p", str(soft))
    vqa = kvqe.load("vqa")
    own = [vqa.score(clip).score for clip in (sharp, soft)]
    joined = []
    for first, second in ((sharp, soft), (soft, sharp)):
        out = tmp_path / f"{first.stem}_{second.stem}.mp4"
        ffmpeg("-i", str(first), "-i", str(second), "-filter_complex", "[0:v][1:v]concat=n=2:v=1[v]", "-map", "[v]",
               "-c:v", "libx264", "-crf", "10", "-pix_fmt", "yuv420p", str(out))
        joined.append(vqa.score(out).score)
    assert own[0] - own[1] > 30, own  # measured 86.8 and 46.3
    assert abs(joined[0] - joined[1]) < 5, joined  # measured 63.5 and 63.8
    assert all(abs(score - np.mean(own)) < 5 for score in joined), (joined, own)
