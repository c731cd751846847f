"""Video files and URLs as :class:`FrameSource`: decoded by OpenCV or, when OpenCV opens a stream but decodes
none of it (e.g. AV1 with the opencv-python 4.x wheels), by the ``ffmpeg`` command; a local file's or URL's
decode is checked against the length its container declares (a stall or an early close is an error, never a
shorter video).

Pictures may change size mid-stream (a new sequence header), which OpenCV's decode hides: it scales every
picture to the first one's size after its decoder allocated the larger ones, so ``max_pixels`` would hold for
the header only. Where the ``ffmpeg`` command is installed it decodes URLs and local files whose container has
no frame index (MPEG-TS, MPEG-PS, FLV, an elementary stream), with the pixel cap given to its decoder, which
refuses a larger picture before allocating it; pictures within the cap are delivered at the first size, as
both decoders do. Such a local file declares no length, only OpenCV's estimate, so it is read to its end as a
stream. OpenCV still opens every source first: it reads what the container declares (rate, length, codec)."""
from __future__ import annotations

import shlex
import time
from collections.abc import Iterator

import cv2
import numpy as np

from kvqe.errors import BadInputError
from kvqe.sdk.capture import ContainerInfo, capture_frames, open_capture, timestamp
from kvqe.sdk.demuxers import indexless_format
from kvqe.sdk.ffmpeg_decode import FfmpegDecode, FrameTooLargeError, find_ffmpeg
from kvqe.sdk.frame_source import FrameSource
from kvqe.sdk.frames import Frame, check_frame
from kvqe.sdk.limits import Limits
from kvqe.sdk.seeking import CaptureSeeker
from kvqe.sdk.targets import Target

VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".y4m", ".ts", ".flv"})


def capture_source(
    capture: cv2.VideoCapture, name: str, fps: float | None, queue_size: int, owned: bool, limits: Limits,
    target: Target | None = None, first: Frame | None = None, indexed: bool = True,
) -> FrameSource:
    """A FrameSource over ``capture`` (``first``: frame 0, already read from it); a local file's (``target``
    with a path) decode is checked against its declared length (streams and URLs may not know theirs; a
    caller's capture may not start at frame 0), and it may seek when its length and frame rate are known. A
    URL's decode is checked against the length it declares; one that declares none is read as a stream, and
    so is a local file whose container has no frame index (``indexed`` False: its count is an estimate)."""
    container = ContainerInfo.of(capture)
    limits.check(name, container.width, container.height)
    rate = fps or container.fps
    local_file = target is not None and target.path is not None
    network = target is not None and target.path is None
    frame_count = container.frame_count if indexed else None
    seeker = None  # OpenCV seeks by the container's rate: not when the caller overrides it
    if local_file and owned and first is not None and fps is None and container.fps and frame_count:
        assert target is not None
        seeker = CaptureSeeker(capture, target, limits, first, container.fps, frame_count)
    return FrameSource(
        name,
        capture_frames(capture, name, rate, first, timed=fps is None),
        fps=rate,
        frame_count=frame_count,
        queue_size=queue_size,
        release=(seeker.release if seeker else capture.release) if owned else None,
        empty_message="no decodable frames (the file may be truncated or corrupt); check it with ffprobe",
        check_length=local_file or network,
        live=network or not indexed,
        limits=limits,
        codec=container.codec_name,
        seeker=seeker,
    )


def open_video(target: Target, fps: float | None, queue_size: int, limits: Limits) -> FrameSource:
    """A video file or URL decoded by OpenCV or, for a URL, a local file without a frame index (see the module
    doc) or one OpenCV opens but decodes no frame of (e.g. AV1 with the opencv-python 4.x wheels), by the
    ``ffmpeg`` command if it is installed. Its size is checked against the cap from the container before the
    first frame is decoded."""
    name = target.name
    indexless = indexless_format(target.path) if target.path is not None else None
    capture = open_capture(target, limits)
    try:
        container = ContainerInfo.of(capture)
        limits.check(name, container.width, container.height)
        executable = find_ffmpeg() if indexless or target.path is None else None
        if executable is not None:
            capture.release()
            return _ffmpeg_source(executable, target, f"its {indexless or 'video'} stream", container, fps,
                                  queue_size, limits, indexed=indexless is None)
        started = time.monotonic()
        ok, image = capture.read()
        time_s = timestamp(capture, 0, container.fps) if fps is None else 0.0
        first = Frame(0, time_s, check_frame(image, f"{name}: frame 0")) if ok else None
    except cv2.error as exc:
        capture.release()
        raise BadInputError(f"{name}: OpenCV failed to decode frame 0: {exc.err or exc}") from exc
    except BaseException:
        capture.release()
        raise
    if first is not None:
        return capture_source(capture, name, fps, queue_size, owned=True, limits=limits, target=target,
                               first=first, indexed=indexless is None)
    capture.release()
    if limits.stalled(started):
        raise limits.stalled_error(name, "frame 0 did not arrive")
    stream = f"its {container.codec} stream" if container.codec else "its video stream"
    executable = find_ffmpeg()
    if executable is None:
        shown = str(target.path.absolute()) if target.path is not None else name
        raise BadInputError(
            f"{name}: no decodable frames: OpenCV {cv2.__version__} opened it but decoded none of {stream} "
            "(the file may be truncated or corrupt, or the codec unsupported: the opencv-python 4.x wheels "
            "decode no AV1); install ffmpeg and kvqe decodes such streams with it, or pipe them: "
            f"ffmpeg -i {shlex.quote(shown)} -f rawvideo -pix_fmt bgr24 - | "
            f"kvqe score - --raw {container.size or 'WxH'}" + (f" --fps {container.fps:g}" if container.fps else "")
        )
    return _ffmpeg_source(executable, target, stream, container, fps, queue_size, limits, indexed=indexless is None)


def _ffmpeg_source(executable: str, target: Target, stream: str, container: ContainerInfo, fps: float | None,
                   queue_size: int, limits: Limits, indexed: bool) -> FrameSource:
    """The ffmpeg command's decode of ``target``, its first frame read here (within the timeout) so that a
    stream neither decoder can read fails at once; read as a stream unless ``indexed``."""
    name = target.name
    decode = FfmpegDecode(executable, target.for_ffmpeg(limits), name, limits.max_pixels)
    if limits.timeout is not None and not decode.readable_within(limits.timeout):
        decode.close()
        raise limits.stalled_error(name, "ffmpeg decoded no frame")
    frames = decode.frames()
    try:
        first = next(frames)
    except FrameTooLargeError:
        decode.close()
        raise
    except BadInputError as exc:
        errors = decode.errors()
        decode.close()
        raise BadInputError(
            f"{name}: no decodable frames: OpenCV decoded none of {stream} and ffmpeg none either "
            f"({errors}); the file may be truncated or corrupt; check it with ffprobe"
        ) from exc
    return FrameSource(
        name,
        _chain_first(first, frames),
        fps=fps or container.fps,
        frame_count=container.frame_count if indexed else None,
        queue_size=queue_size,
        release=decode.close,
        interrupt=decode.interrupt,
        check_length=True,
        live=target.path is None or not indexed,
        limits=limits,
        codec=container.codec_name,
    )


def _chain_first(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """``first``, then the rest of the decode it was read from."""
    yield first
    yield from rest
