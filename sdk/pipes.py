"""Frames piped in: raw packed frames (``ffmpeg -f rawvideo -pix_fmt bgr24|rgb24 -``) and YUV4MPEG2 streams
(``ffmpeg -f yuv4mpegpipe -``), read from a binary stream the caller keeps."""
from __future__ import annotations

import select
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import cv2
import numpy as np

from kvqe.errors import BadInputError
from kvqe.sdk.frame_source import FrameSource
from kvqe.sdk.limits import DEFAULT_MAX_PIXELS, DEFAULT_TIMEOUT_S, Limits, imposed_fps

RAW_PIX_FMTS = {"bgr24": None, "rgb24": cv2.COLOR_RGB2BGR}


def _read_into(stream: BinaryIO, array: np.ndarray) -> int:
    """Fill ``array`` (C-contiguous) from ``stream``; the number of bytes read (fewer at its end)."""
    view, filled, size = array.reshape(-1).data, 0, array.nbytes
    while filled < size and (chunk := stream.read(size - filled)):
        view[filled:filled + len(chunk)] = chunk
        filled += len(chunk)
    return filled


def _raw_frames(stream: BinaryIO, name: str, width: int, height: int, pix_fmt: str) -> Iterator[np.ndarray]:
    """The frames of a raw stream as BGR; BadInputError for a trailing partial frame."""
    size = width * height * 3
    conversion = RAW_PIX_FMTS[pix_fmt]
    while True:
        image = np.empty((height, width, 3), np.uint8)
        filled = _read_into(stream, image)
        if not filled:
            return
        if filled < size:
            raise BadInputError(
                f"{name}: the raw stream ended in the middle of a frame: got {filled} of {size} bytes "
                f"of a {width}x{height} {pix_fmt} frame; check that --raw WxH and --pix-fmt match the stream"
            )
        yield image if conversion is None else cv2.cvtColor(image, conversion, dst=image)


def open_raw_pipe(
    stream: BinaryIO,
    width: int,
    height: int,
    *,
    pix_fmt: str = "bgr24",
    fps: float | None = None,
    queue_size: int = 8,
    timeout: float | None = DEFAULT_TIMEOUT_S,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> FrameSource:
    """Read raw packed frames (``ffmpeg -f rawvideo -pix_fmt bgr24|rgb24 -``) from a binary stream.

    The stream is not closed here. A trailing partial frame is an error raised after the complete frames.
    ``width`` x ``height`` is checked against ``max_pixels`` before anything is read; ``timeout`` bounds the
    wait for each frame.
    """
    if not isinstance(pix_fmt, str) or pix_fmt not in RAW_PIX_FMTS:
        raise BadInputError(f"unsupported raw pix_fmt {pix_fmt!r}; supported: {', '.join(RAW_PIX_FMTS)}")
    for value, what in ((width, "width"), (height, "height")):
        if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            raise BadInputError(f"raw frame {what} must be a positive integer, got {value!r}")
    limits = Limits.of(timeout, max_pixels)
    limits.check("-", width, height)
    return FrameSource(
        "-",
        _raw_frames(stream, "-", width, height, pix_fmt),
        fps=imposed_fps(fps),
        queue_size=queue_size,
        empty_message=f"yielded no frames (expected raw {width}x{height} {pix_fmt} frames)",
        limits=limits,
        codec="rawvideo",
    )


# YUV4MPEG2 colourspaces read (8 bits per sample): chroma subsampling (x, y) of each; 420jpeg, 420mpeg2 and
# 420paldv differ only in where chroma is sited, which a quality model does not see
Y4M_COLOURSPACES = {"420jpeg": (2, 2), "420mpeg2": (2, 2), "420paldv": (2, 2), "420": (2, 2), "422": (2, 1),
                    "444": (1, 1), "mono": (0, 0)}
_Y4M_LINE_BYTES = 4096  # a stream or frame header longer than this is not YUV4MPEG2


def _bt601(full_range: bool) -> np.ndarray:
    """The 3x4 matrix taking (Y, Cb, Cr, 1) to (B, G, R): BT.601, as FFmpeg and OpenCV convert SD video."""
    luma, chroma, offset = (1.0, 1.0, 0.0) if full_range else (255 / 219, 255 / 224, 16.0)
    weights = np.array([[luma, 1.772 * chroma, 0.0],
                        [luma, -0.344136 * chroma, -0.714136 * chroma],
                        [luma, 0.0, 1.402 * chroma]])
    return np.hstack([weights, -(weights @ np.array([offset, 128.0, 128.0]))[:, None]])


@dataclass(frozen=True)
class Y4mHeader:
    """What a YUV4MPEG2 stream header declares."""

    width: int
    height: int
    fps: float
    colourspace: str
    full_range: bool

    @classmethod
    def parse(cls, line: bytes, name: str) -> Y4mHeader:
        """The header from its line; BadInputError naming what is missing or unsupported."""
        fields = line.split()
        if not fields or fields[0] != b"YUV4MPEG2":
            raise BadInputError(f"{name}: not a YUV4MPEG2 stream (it does not start with 'YUV4MPEG2 '); pipe y4m "
                                "(ffmpeg -i IN -f yuv4mpegpipe -) or give raw frames with --raw WxH --fps F")
        tags = {field[:1].decode("ascii", "replace"): field[1:].decode("ascii", "replace") for field in fields[1:]}
        try:
            width, height = int(tags["W"]), int(tags["H"])
            numerator, denominator = (int(v) for v in tags["F"].split(":"))
        except (KeyError, ValueError):
            raise BadInputError(f"{name}: the YUV4MPEG2 header lacks a valid size (W, H) or frame rate (F): "
                                f"{line[:200]!r}") from None
        if width <= 0 or height <= 0 or numerator <= 0 or denominator <= 0:
            raise BadInputError(f"{name}: the YUV4MPEG2 header declares {width}x{height} at {numerator}:"
                                f"{denominator} fps; size and frame rate must be positive")
        colourspace = tags.get("C", "420jpeg")
        if colourspace not in Y4M_COLOURSPACES:
            raise BadInputError(f"{name}: YUV4MPEG2 colourspace C{colourspace} is not supported; supported (8 bits): "
                                f"{', '.join(Y4M_COLOURSPACES)}; convert first, e.g. ffmpeg -i IN -pix_fmt yuv420p "
                                "-f yuv4mpegpipe -")
        full_range = any(field == b"XCOLORRANGE=FULL" for field in fields)
        return cls(width, height, numerator / denominator, colourspace, full_range)


def _full_size_chroma(planes: list[np.ndarray], width: int, height: int) -> list[np.ndarray]:
    """The two chroma planes at the luma's size: upsampled, or mid-grey for a mono stream (empty planes)."""
    if not planes[0].size:
        return [np.full((height, width), 128, np.uint8)] * 2
    if planes[0].shape == (height, width):
        return planes
    return [cv2.resize(plane, (width, height), interpolation=cv2.INTER_LINEAR) for plane in planes]


def _y4m_frames(stream: BinaryIO, name: str, header: Y4mHeader) -> Iterator[np.ndarray]:
    """The frames of a YUV4MPEG2 stream after its header, converted to BGR."""
    width, height = header.width, header.height
    sub_x, sub_y = Y4M_COLOURSPACES[header.colourspace]
    chroma = (-(-height // sub_y), -(-width // sub_x)) if sub_x else (0, 0)
    matrix = _bt601(header.full_range)
    index = 0
    while line := stream.readline(_Y4M_LINE_BYTES):
        if not line.startswith(b"FRAME") or not line.endswith(b"\n"):
            raise BadInputError(f"{name}: YUV4MPEG2 frame {index} does not start with a FRAME header")
        planes = [np.empty((height, width), np.uint8), np.empty(chroma, np.uint8), np.empty(chroma, np.uint8)]
        expected = sum(plane.nbytes for plane in planes)
        filled = sum(_read_into(stream, plane) for plane in planes)
        if filled < expected:
            raise BadInputError(f"{name}: the YUV4MPEG2 stream ended in the middle of frame {index}: got {filled} of "
                                f"{expected} bytes of a {width}x{height} C{header.colourspace} frame")
        yield cv2.transform(cv2.merge([planes[0], *_full_size_chroma(planes[1:], width, height)]), matrix)
        index += 1


def _wait_readable(stream: BinaryIO, limits: Limits, name: str) -> None:
    """Wait up to the timeout for ``stream`` to have data (streams without a descriptor are not waited for)."""
    try:
        descriptor = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return
    if limits.timeout is not None and not select.select([descriptor], [], [], limits.timeout)[0]:
        raise limits.stalled_error(name, "no YUV4MPEG2 header arrived")


def open_y4m_pipe(
    stream: BinaryIO,
    *,
    fps: float | None = None,
    queue_size: int = 8,
    timeout: float | None = DEFAULT_TIMEOUT_S,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    name: str = "-",
) -> FrameSource:
    """Read a YUV4MPEG2 stream (``ffmpeg -i IN -f yuv4mpegpipe -``): size, frame rate and colourspace from
    its header (``fps`` overrides the rate), 8-bit 4:2:0, 4:2:2, 4:4:4 or mono, converted to BGR (BT.601,
    limited range unless the header says ``XCOLORRANGE=FULL``).

    The header is read here, within ``timeout``, and its size checked against ``max_pixels`` before any
    frame is read. The stream is not closed here.
    """
    limits = Limits.of(timeout, max_pixels)
    rate = imposed_fps(fps)
    _wait_readable(stream, limits, name)
    header = Y4mHeader.parse(stream.readline(_Y4M_LINE_BYTES), name)
    limits.check(name, header.width, header.height)
    return FrameSource(
        name,
        _y4m_frames(stream, name, header),
        fps=rate or header.fps,
        queue_size=queue_size,
        empty_message=f"yielded no frames (a YUV4MPEG2 header for {header.width}x{header.height}, then nothing)",
        limits=limits,
        codec="rawvideo",
    )
