"""Streams OpenCV opens but cannot decode (AV1 uploads, ...): the ffmpeg fallback, rotation, other formats."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from source_helpers import cv2_frames, wait_no_decoder
from support import (
    BIKES,
    CARPHONE,
    NoDecodeCapture,
    child_processes,
    growing_ts,
    needs_ffmpeg,
    needs_ffprobe,
    psnr,
)

import kvqe
from kvqe.errors import BadInputError
from kvqe.samples import sample_video_path
from kvqe.sdk import video_files
from kvqe.sdk.sources import open_source


def _ffmpeg_bgr(path: Path) -> np.ndarray:
    """Every frame of ``path`` as ffmpeg itself decodes it (N x H x W x 3 BGR)."""
    width, height = (int(v) for v in subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height",
         "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True).stdout.split(","))
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "bgr24", "-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


@pytest.fixture
def opencv_cannot_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    """cv2.VideoCapture (everywhere: cv2 is one module) opens but decodes nothing while the test runs."""
    monkeypatch.setattr(cv2, "VideoCapture", NoDecodeCapture)


@needs_ffprobe
@needs_ffmpeg
def test_av1_upload_is_decoded(tmp_path: Path) -> None:
    av1 = tmp_path / "upload.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(CARPHONE), "-frames:v", "20", "-c:v", "libaom-av1",
                    "-cpu-used", "8", "-crf", "40", str(av1)], check=True)
    expected = _ffmpeg_bgr(av1)
    with open_source(av1) as source:
        assert source.fps == pytest.approx(30000 / 1001, rel=1e-3)
        frames = np.stack([frame.image for frame in source])
    assert frames.shape == expected.shape == (20, 144, 176, 3)
    assert np.array_equal(frames, expected)  # ffmpeg's own decode, frame for frame
    vqa = kvqe.load("vqa")  # and the upload is scored as those frames are
    assert vqa.score(av1).score == pytest.approx(vqa.score(iter(expected), fps=30000 / 1001).score, abs=1e-4)


@needs_ffmpeg
def test_the_ffmpeg_path_decodes_what_opencv_does(monkeypatch: pytest.MonkeyPatch) -> None:
    via_opencv = np.stack(list(cv2_frames(CARPHONE)))
    monkeypatch.setattr(cv2, "VideoCapture", NoDecodeCapture)
    with open_source(CARPHONE) as source:
        assert source.frame_count == 120 and source.fps == pytest.approx(30000 / 1001)
        via_ffmpeg = np.stack([frame.image for frame in source])
    assert via_ffmpeg.shape == via_opencv.shape == (120, 144, 176, 3)
    difference = np.abs(via_ffmpeg.astype(np.int16) - via_opencv)
    assert difference.mean() < 0.5 and psnr(via_ffmpeg, via_opencv) > 45  # the same decode up to colour rounding


@needs_ffmpeg
def test_leaving_early_stops_ffmpeg(opencv_cannot_decode: None) -> None:
    with open_source(BIKES, queue_size=1) as source:
        assert "ffmpeg" in child_processes()
        next(iter(source))
    assert wait_no_decoder()
    deadline = time.monotonic() + 2.0
    while "ffmpeg" in child_processes() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "ffmpeg" not in child_processes()


@needs_ffmpeg
def test_the_ffmpeg_path_checks_the_declared_length(tmp_path: Path, opencv_cannot_decode: None) -> None:
    remuxed = tmp_path / "faststart.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(CARPHONE), "-c", "copy", "-movflags", "+faststart",
                    str(remuxed)], check=True)
    half = tmp_path / "half.mp4"
    half.write_bytes(remuxed.read_bytes()[: remuxed.stat().st_size // 2])
    with pytest.raises(BadInputError, match=r"half.mp4: the decode stopped after \d+ of the 120 frames"):
        list(open_source(half))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(remuxed.read_bytes()[:6000])
    with pytest.raises(BadInputError, match="cut.mp4: no decodable frames: OpenCV decoded none of its (h264|avc1) "
                                            r"stream and ffmpeg none either \(.+\)"):
        open_source(cut)
    assert "ffmpeg" not in child_processes()


def _with_display_rotation(source: Path, out: Path) -> int:
    """Copy ``source``'s streams into ``out`` with a 90-degree display matrix, as phones write portrait video;
    returns the rotation ffprobe reports (skips when this ffmpeg can write neither form)."""
    for command in (["ffmpeg", "-v", "error", "-display_rotation", "90", "-i", str(source), "-c", "copy", str(out)],
                    ["ffmpeg", "-v", "error", "-i", str(source), "-c", "copy", "-metadata:s:v:0", "rotate=90",
                     str(out)]):
        if subprocess.run(command, capture_output=True, check=False).returncode == 0:
            probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                                    "stream_side_data=rotation", "-of", "csv=p=0", str(out)],
                                   capture_output=True, text=True, check=True).stdout.strip()
            if probe:
                return int(float(probe))
        out.unlink(missing_ok=True)
    pytest.skip("this ffmpeg writes no display rotation (neither -display_rotation nor rotate metadata)")


@needs_ffprobe
@needs_ffmpeg
def test_a_portrait_phone_video_is_read_upright_on_both_decode_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    landscape = sample_video_path()
    portrait = tmp_path / "phone.mp4"
    assert abs(_with_display_rotation(landscape, portrait)) == 90
    with open_source(landscape) as source:
        stored = np.stack([frame.image for frame in source])
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(portrait), "-f", "rawvideo", "-pix_fmt", "bgr24", "-"],
                         capture_output=True, check=True).stdout  # ffmpeg turns it upright by default
    upright = np.frombuffer(raw, np.uint8).reshape(stored.shape[0], stored.shape[2], stored.shape[1], 3)
    turns = [k for k in (1, 3) if np.abs(np.rot90(stored, k, axes=(1, 2)).astype(np.int16) - upright).mean() < 1]
    assert len(turns) == 1, "ffmpeg's upright frames are not a quarter turn of the stored ones"
    with open_source(portrait) as source:
        via_opencv = np.stack([frame.image for frame in source])
    assert via_opencv.shape == (50, 320, 180, 3)
    assert np.array_equal(via_opencv, np.rot90(stored, turns[0], axes=(1, 2)))  # the same pixels, turned
    monkeypatch.setattr(cv2, "VideoCapture", NoDecodeCapture)  # as for an AV1 upload
    with open_source(portrait) as source:
        via_ffmpeg = np.stack([frame.image for frame in source])
    assert via_ffmpeg.shape == via_opencv.shape and np.abs(via_ffmpeg.astype(np.int16) - via_opencv).mean() < 0.5
    monkeypatch.undo()
    vqa = kvqe.load("vqa")  # the model sees the video as the viewer does
    assert vqa.score(portrait).score == pytest.approx(vqa.score(iter(via_opencv), fps=25).score, abs=1e-4)


@needs_ffprobe
@needs_ffmpeg
@pytest.mark.parametrize(("name", "encoding", "size"), [
    ("hevc_10bit.mp4", ["-c:v", "libx265", "-pix_fmt", "yuv420p10le", "-x265-params", "log-level=error"], (180, 320)),
    ("h264_444_odd_size.mp4", ["-vf", "format=yuv444p,scale=321:181", "-c:v", "libx264", "-pix_fmt", "yuv444p"],
     (181, 321)),
    ("h264_gray.mp4", ["-c:v", "libx264", "-pix_fmt", "gray"], (180, 320)),
])
def test_uploads_in_other_formats_read_as_ffmpeg_shows_them_and_score_alike(
    name: str, encoding: list[str], size: tuple[int, int], tmp_path: Path
) -> None:
    """10-bit HEVC, 4:4:4 at an odd size and grayscale H.264, all near-transparent (CRF 20) encodes of the
    sample video: read as ffmpeg itself converts them to BGR, and scored as the same content in 8-bit 4:2:0."""
    upload, plain = tmp_path / name, tmp_path / "plain.mp4"
    for out, codec in ((upload, encoding), (plain, ["-c:v", "libx264", "-pix_fmt", "yuv420p"])):
        subprocess.run(["ffmpeg", "-v", "error", "-i", str(sample_video_path()), *codec, "-crf", "20", str(out)],
                       check=True)
    expected = _ffmpeg_bgr(upload)
    with open_source(upload) as source:
        frames = np.stack([frame.image for frame in source])
    assert frames.shape == (50, *size, 3)
    assert np.abs(frames.astype(np.int16) - expected).mean() < 1.0  # 10-bit: OpenCV rounds to 8 bits its own way
    vqa = kvqe.load("vqa")
    score = vqa.score(upload).score
    assert score == pytest.approx(vqa.score(iter(expected), fps=25).score, abs=0.25)
    assert score == pytest.approx(vqa.score(plain).score, abs=1.5)  # measured: 95.0, 95.0, 96.0 against 95.8


def test_without_ffmpeg_the_error_names_the_codec_and_the_pipe(
    monkeypatch: pytest.MonkeyPatch, opencv_cannot_decode: None
) -> None:
    monkeypatch.setattr(video_files, "find_ffmpeg", lambda: None)
    with pytest.raises(BadInputError, match=r"carphone_pristine.mp4: no decodable frames: OpenCV .* decoded none "
                                            r"of its (h264|avc1) stream .*install ffmpeg.* "
                                            r"\| kvqe score - --raw 176x144 --fps 29.97"):
        open_source(CARPHONE)


@pytest.fixture
def switching_ts(tmp_path: Path) -> Path:
    return growing_ts(tmp_path)


@needs_ffmpeg
@pytest.mark.parametrize("decoder", ["ffmpeg", "opencv"])
def test_a_file_without_a_frame_index_is_read_to_its_end(switching_ts: Path, decoder: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # issue #34: scored over its first second only, as if the upload were 1 s long
    if decoder == "opencv":
        monkeypatch.setattr(video_files, "find_ffmpeg", lambda: None)
    result = kvqe.load("vqa").score(switching_ts)
    assert result.sampling is not None and result.sampling.how == "stream"
    assert result.duration_s == pytest.approx(2.0, abs=0.05) and result.frames == 2
    assert result.frame_indices[-1] >= 25 and (result.width, result.height) == (160, 120)  # past the first second


@needs_ffmpeg
@pytest.mark.parametrize("forced", [False, True])
def test_a_stream_that_grows_past_the_cap_is_refused_by_the_decoder(switching_ts: Path, forced: bool,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # issue #34: OpenCV decoded the 640x480 pictures past the cap, read from the 160x120 header; the ffmpeg
    # command decodes a file without a frame index (forced: also one OpenCV cannot decode)
    if forced:
        monkeypatch.setattr(cv2, "VideoCapture", NoDecodeCapture)
    with pytest.raises(BadInputError, match=r"after \d+ frames the stream changes to 640x480.*over the cap of 100,000"):
        kvqe.load("vqa").score(switching_ts, max_pixels=100_000)
    assert wait_no_decoder()
