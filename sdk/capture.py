"""OpenCV's view of a video: its capture opened with kvqe's limits, what its container declares, and its
frames read with their timestamps."""
from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import cv2

from kvqe.errors import BadInputError
from kvqe.sdk.demuxers import opencv_options
from kvqe.sdk.frames import ASSUMED_FPS, Frame, check_frame
from kvqe.sdk.images import IMAGE_SUFFIXES
from kvqe.sdk.limits import Limits
from kvqe.sdk.targets import Target

# FOURCCs as containers store them -> the codec's usual name
_CODEC_NAMES = {"avc1": "h264", "avc3": "h264", "h264": "h264", "x264": "h264", "hvc1": "hevc", "hev1": "hevc",
                "hevc": "hevc", "h265": "hevc", "vp09": "vp9", "vp90": "vp9", "vp80": "vp8", "vp08": "vp8",
                "av01": "av1", "mp4v": "mpeg4", "fmp4": "mpeg4", "mjpg": "mjpeg"}
_DECODE_THREADS = 4  # OpenCV's decoder threads; each frame thread holds its own frames


@dataclass(frozen=True)
class ContainerInfo:
    """What a video's container declares, read by OpenCV before any frame is decoded."""

    fps: float | None
    frame_count: int | None
    codec: str  # the FOURCC, e.g. "h264" or "AV01"; "" when unknown
    width: int  # 0 when unknown
    height: int

    @property
    def size(self) -> str:
        """"WxH", "" when unknown."""
        return f"{self.width}x{self.height}" if self.width and self.height else ""

    @property
    def codec_name(self) -> str:
        """The codec's usual name ("h264", "hevc", "vp9", "av1", ...), else the FOURCC in lower case."""
        return _CODEC_NAMES.get(self.codec.lower(), self.codec.lower())

    @classmethod
    def of(cls, capture: cv2.VideoCapture) -> ContainerInfo:
        """What ``capture``'s container declares (unknowns as None, "" or 0)."""
        def prop(key: int) -> float | None:  # backends answer -1, 0 or NaN for what they do not know
            value = capture.get(key)
            return value if math.isfinite(value) and value > 0 else None

        fps, count, fourcc = prop(cv2.CAP_PROP_FPS), prop(cv2.CAP_PROP_FRAME_COUNT), prop(cv2.CAP_PROP_FOURCC)
        width, height = prop(cv2.CAP_PROP_FRAME_WIDTH), prop(cv2.CAP_PROP_FRAME_HEIGHT)
        codec = int(fourcc).to_bytes(4, "little").decode("ascii", "replace") if fourcc and fourcc < 2**32 else ""
        return cls(
            fps=fps,
            frame_count=int(count) if count else None,
            codec=codec.strip("\x00 "),
            width=int(width or 0),
            height=int(height or 0),
        )


def timestamp(capture: cv2.VideoCapture, index: int, fps: float | None) -> float:
    """Seconds of the frame ``capture`` read last (the container's timestamp), else ``index / fps``."""
    milliseconds = capture.get(cv2.CAP_PROP_POS_MSEC)
    if math.isfinite(milliseconds) and (milliseconds > 0 or (index == 0 and milliseconds == 0)):
        return milliseconds / 1000
    return index / (fps or ASSUMED_FPS)


def read_frame(capture: cv2.VideoCapture, name: str, index: int, fps: float | None, timed: bool = True) -> Frame | None:
    """The next frame of ``capture`` as frame ``index``, or None at its end; timed by the container when
    ``timed``, else by ``fps`` (a rate the caller imposes)."""
    ok, image = capture.read()
    if not ok:
        return None
    time_s = timestamp(capture, index, fps) if timed else index / (fps or ASSUMED_FPS)
    return Frame(index, time_s, check_frame(image, f"{name}: frame {index}"))


def capture_frames(
    capture: cv2.VideoCapture, name: str, fps: float | None, first: Frame | None = None, start: int = 0,
    timed: bool = True,
) -> Iterator[Frame]:
    """The frames of ``capture`` numbered from ``start``, after ``first`` (frame 0, already read) if given;
    ``timed`` as for :func:`read_frame`."""
    index = start
    if first is not None:
        yield first
        index = 1
    while (frame := read_frame(capture, name, index, fps, timed)) is not None:
        yield frame
        index += 1


def _opencv_params(limits: Limits) -> list[int]:
    """OpenCV's open parameters: decoder threads, and open and read timeouts from ``limits``."""
    params = [cv2.CAP_PROP_N_THREADS, min(_DECODE_THREADS, os.cpu_count() or 1)]
    if limits.timeout is not None:
        milliseconds = max(1, round(limits.timeout * 1000))
        params += [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, milliseconds, cv2.CAP_PROP_READ_TIMEOUT_MSEC, milliseconds]
    return params


def open_capture(target: Target, limits: Limits) -> cv2.VideoCapture:
    """OpenCV's capture of ``target``, open, by the demuxers ``limits`` allows; BadInputError if it cannot be
    opened in time."""
    started = time.monotonic()
    try:
        with opencv_options.set(limits.format_whitelist):
            capture = cv2.VideoCapture(target.for_opencv, cv2.CAP_FFMPEG, _opencv_params(limits))
    except cv2.error as exc:
        raise BadInputError(f"cannot open {target.name} as a video: OpenCV: {exc.err or exc}") from exc
    if capture.isOpened():
        return capture
    if target.path is None and limits.stalled(started):
        raise limits.stalled_error(target.name, "it did not open")
    raise BadInputError(
        f"cannot open {target.name} as a video (corrupt, unsupported or unreachable, or a playlist or manifest "
        "such as HLS or DASH, opened only when asked: demuxers=['hls']); check it with ffprobe; "
        f"images are recognised by their suffix: {', '.join(sorted(IMAGE_SUFFIXES))}"
    )
