"""Frame sources: video files, URLs, ``cv2.VideoCapture``, images, iterables of frames and raw pipes.

Every source decodes on a background daemon thread into a bounded queue, so memory stays bounded by
``queue_size`` frames whatever the length of the video. A :class:`FrameSource` is iterated once; leaving
the loop early, ``close()`` or dropping the iterator stops the thread and releases what the source opened.
Objects the caller passes in (a ``cv2.VideoCapture``, an iterator, a stream) stay the caller's: they are
never released or closed here.

What a source may cost is bounded (:class:`Limits`): a frame larger than ``max_pixels`` is refused from its
header before it is decoded, no source blocks its reader longer than ``timeout`` seconds between frames, and
a string reads as a URL only for the network schemes of :data:`NETWORK_SCHEMES` (FFmpeg's other protocols,
``file:``, ``concat:``, ``subfile:``, ``pipe:``, ``data:``, ... only when the caller lists them in
``protocols``). A local file name always reads as that file, whatever characters it holds.
"""
from __future__ import annotations

import math
import os
import queue
import re
import select
import shlex
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from kvqe.errors import BadInputError, KvqeError
from kvqe.sdk.ffmpeg_decode import FfmpegDecode, FrameTooLargeError, check_pixels, find_ffmpeg, local_input

if TYPE_CHECKING:
    from typing import Self

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".y4m", ".ts", ".flv"})
# FOURCCs as containers store them -> the codec's usual name
_CODEC_NAMES = {"avc1": "h264", "avc3": "h264", "h264": "h264", "x264": "h264", "hvc1": "hevc", "hev1": "hevc",
                "hevc": "hevc", "h265": "hevc", "vp09": "vp9", "vp90": "vp9", "vp80": "vp8", "vp08": "vp8",
                "av01": "av1", "mp4v": "mpeg4", "fmp4": "mpeg4", "mjpg": "mjpeg"}
RAW_PIX_FMTS = {"bgr24": None, "rgb24": cv2.COLOR_RGB2BGR}
ASSUMED_FPS = 30.0  # used for Frame.time_s when a source has no known frame rate
DEFAULT_TIMEOUT_S = 30.0  # longest wait for a source's next frame (and for opening it)
# 8K UHD, the largest frame any broadcast, streaming or camera format delivers: a 33 MP BGR frame is 100 MB,
# and a header claiming more is a decompression bomb far more often than a real picture
DEFAULT_MAX_PIXELS = 7680 * 4320
# URL schemes read without asking: the protocols that serve video over a network
NETWORK_SCHEMES = frozenset({"http", "https", "rtsp", "rtsps", "rtmp", "rtmps", "srt", "udp", "tcp", "rtp"})
# ffmpeg's -timeout is the socket I/O timeout of these (for rtmp it would make ffmpeg listen instead)
_FFMPEG_TIMEOUT_SCHEMES = frozenset({"http", "https", "rtsp", "rtsps"})
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+):")  # two characters at least: "C:" is a drive
_DECODE_THREADS = 4  # OpenCV's decoder threads; each frame thread holds its own frames
_STALLED = 0.9  # a read that ends after this share of the timeout ended because it timed out
_PILLOW_PIXELS = re.compile(r"\((\d+) pixels\)")  # the size in Pillow's DecompressionBombError
_END = object()
_POLL_S = 0.05
# a file may decode a little short of the frame count its container declares (an estimate in some
# formats); more than this shortfall means the file is truncated or damaged
_COUNT_SLACK, _COUNT_SLACK_FRAMES = 0.05, 2
# a frame further ahead than this is reached by seeking (a seek decodes from the key picture before it,
# typically 1-10 s back), a nearer one by decoding forward
SEEK_GAP_S = 2.0


@dataclass(frozen=True, eq=False)
class Frame:
    """One decoded frame."""

    index: int  # 0-based decode index
    time_s: float  # the container's timestamp when it has one, else index / fps (ASSUMED_FPS when unknown)
    image: np.ndarray  # HxWx3 uint8 BGR, C-contiguous (a sampler may keep a reduced image instead)


def check_frame(image: object, what: str) -> np.ndarray:
    """Return ``image`` as a C-contiguous HxWx3 uint8 array, else raise BadInputError naming ``what``."""
    if not isinstance(image, np.ndarray):
        raise BadInputError(f"{what}: got {type(image).__name__}; expected an HxWx3 uint8 BGR numpy array")
    if image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8 and image.size:
        return np.ascontiguousarray(image)
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        hint = "kvqe does not invent colour: convert it first, e.g. cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)"
    elif image.ndim == 3 and image.shape[2] == 4:
        hint = ("kvqe does not drop alpha silently: flatten it first, e.g. "
                "cv2.cvtColor(image, cv2.COLOR_BGRA2BGR) or composite it onto a background")
    elif image.ndim == 4:
        hint = "a stack of frames? pass iter(array) to read it frame by frame"
    elif image.dtype != np.uint8 and image.ndim == 3 and image.shape[2] == 3:
        hint = ("convert to 8 bits per channel first, e.g. (image * 255).clip(0, 255).astype(np.uint8) "
                "for floats in 0..1 or (image // 257).astype(np.uint8) for 16-bit")
    else:
        hint = "convert it to a 3-channel 8-bit BGR image first"
    raise BadInputError(
        f"{what}: got an array of shape {image.shape} and dtype {image.dtype}; "
        f"expected a 3-channel uint8 BGR frame (HxWx3); {hint}"
    )


@dataclass(frozen=True)
class Limits:
    """What reading one source may cost.

    ``timeout``: seconds a reader may wait for the next frame, and the decoders' open and read timeouts
    (None: wait as long as the decoders do); ``max_pixels``: the largest frame (width x height), checked from
    headers before decoding (None: no cap); ``protocols``: URL schemes allowed beyond :data:`NETWORK_SCHEMES`.
    """

    timeout: float | None = DEFAULT_TIMEOUT_S
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    protocols: frozenset[str] = frozenset()

    @classmethod
    def of(cls, timeout: float | None = DEFAULT_TIMEOUT_S, max_pixels: int | None = DEFAULT_MAX_PIXELS,
           protocols: Iterable[str] | str = ()) -> Limits:
        """Limits from the API's keywords, checked (BadInputError naming the bad one)."""
        if max_pixels is not None and not (isinstance(max_pixels, int) and not isinstance(max_pixels, bool)
                                           and max_pixels > 0):
            raise BadInputError(f"max_pixels must be a positive integer or None, got {max_pixels!r}")
        names = [protocols] if isinstance(protocols, str) else list(protocols)
        if not all(isinstance(n, str) and _SCHEME.fullmatch(f"{n.rstrip(':/')}:") for n in names):
            raise BadInputError(f"protocols must be URL scheme names such as ['file'], got {protocols!r}")
        return cls(_positive(timeout, "timeout"), max_pixels, frozenset(n.rstrip(":/").lower() for n in names))

    def check(self, name: str, width: int, height: int) -> None:
        """FrameTooLargeError if a ``width`` x ``height`` frame is over the cap."""
        check_pixels(name, width, height, self.max_pixels)

    def frame(self, image: object, what: str) -> np.ndarray:
        """:func:`check_frame` of ``image`` after its size is checked from its shape (before any copy)."""
        if isinstance(image, np.ndarray) and image.ndim >= 2:
            self.check(what, image.shape[1], image.shape[0])
        return check_frame(image, what)

    def stalled(self, started: float) -> bool:
        """Whether a wait that began at ``started`` (time.monotonic) lasted until the timeout."""
        return self.timeout is not None and time.monotonic() - started >= _STALLED * self.timeout

    def stalled_error(self, name: str, what: str) -> BadInputError:
        return BadInputError(f"{name}: {what} within the timeout of {self.timeout:g} s (the source stalled or "
                             "is unreachable); pass timeout= to wait longer")


def _url_scheme(source: str) -> str | None:
    """The URL scheme of ``source`` (lower case), or None when it has none."""
    match = _SCHEME.match(source)
    return match.group(1).lower() if match else None


def _check_file(path: Path) -> None:
    if not path.exists():
        raise BadInputError(f"no such file: {path}")
    if path.is_dir():
        raise BadInputError(f"{path} is a directory; give a video or image file")
    if path.stat().st_size == 0:
        raise BadInputError(f"{path} is empty (0 bytes); give a video or image file")


def _check_image_size(path: Path, limits: Limits) -> None:
    """Check an image file's size against the cap from its header alone (Pillow opens lazily)."""
    try:
        with Image.open(path) as image:
            size = image.size
    except Image.DecompressionBombError as exc:  # over twice Pillow's own limit: its header is all it read
        pixels = _PILLOW_PIXELS.search(str(exc))
        count = f"{int(pixels.group(1)):,}" if pixels else "more"
        cap = f"the cap of {limits.max_pixels:,} pixels and " if limits.max_pixels else ""
        raise FrameTooLargeError(f"image {path}: {count} pixels by its header, over {cap}Pillow's limit "
                                 "(PIL.Image.MAX_IMAGE_PIXELS); refused before decoding") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise BadInputError(f"cannot read {path} as an image (corrupt or unsupported); "
                            f"supported: {', '.join(sorted(IMAGE_SUFFIXES))}") from exc
    limits.check(f"image {path}", *size)


def read_image(path: str | os.PathLike[str], *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as HxWx3 uint8 BGR, upright by its EXIF orientation.

    Its size is checked against ``max_pixels`` from the header before it is decoded. Grey, alpha and
    16-bit images are refused rather than silently converted.
    """
    path = Path(path)
    _check_file(path)
    _check_image_size(path, Limits.of(max_pixels=max_pixels))
    data = np.fromfile(path, np.uint8)
    try:
        stored = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)  # as stored, to see channels and depth
        if stored is None:
            raise BadInputError(f"cannot read {path} as an image (corrupt or unsupported); "
                                f"supported: {', '.join(sorted(IMAGE_SUFFIXES))}")
        check_frame(stored, f"image {path}")
        del stored
        return check_frame(cv2.imdecode(data, cv2.IMREAD_COLOR), f"image {path}")  # turned by EXIF orientation
    except cv2.error as exc:
        raise BadInputError(f"image {path}: OpenCV cannot decode it: {exc.err or exc}") from exc


def _positive(value: float | None, what: str) -> float | None:
    if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool)
                                  and math.isfinite(value) and value > 0):
        raise BadInputError(f"{what} must be a positive number, got {value!r}")
    return None if value is None else float(value)


class FrameSource:
    """An iterable of :class:`Frame` decoded on a background thread; a context manager. It is iterated
    once, by one thread (open one source per call); ``close`` may come from any thread.

    A watchdog bounds every wait: a reader that gets no frame for ``limits.timeout`` seconds gets a
    BadInputError instead, and a decode that ends after waiting that long ended because its source stalled
    (an error too, never a short video). ``interrupt`` (thread-safe) unblocks a decoder stuck in I/O when the
    source is closed early; ``release`` frees the decoder on its own thread once it stops. ``frames`` yields
    images (numbered in order, timed by ``fps``) or :class:`Frame` objects that carry their own index and time.
    """

    def __init__(
        self,
        name: str,
        frames: Iterator[np.ndarray | Frame],
        *,
        fps: float | None,
        frame_count: int | None = None,
        is_image: bool = False,
        queue_size: int = 8,
        release: Callable[[], None] | None = None,
        interrupt: Callable[[], None] | None = None,
        empty_message: str = "yielded no frames",
        check_length: bool = False,
        limits: Limits | None = None,
        codec: str = "",
        seeker: _Seeker | None = None,
    ) -> None:
        if not (isinstance(queue_size, int) and not isinstance(queue_size, bool) and queue_size >= 1):
            raise BadInputError(f"queue_size must be a positive integer, got {queue_size!r}")
        self.name = name
        self.fps = fps
        self.frame_count = frame_count
        self.is_image = is_image
        self.limits = limits or Limits()
        self.codec = codec  # the codec's name ("h264", "hevc", "vp9", ...), "" when unknown
        self.size: tuple[int, int] | None = None  # (width, height) of the frames, once one was read
        self.frames_read = 0  # frames delivered to the reader so far
        self._frames = frames
        self._seeker = seeker
        self._sought = False
        self._release = release
        self._interrupt = interrupt
        self._empty_message = empty_message
        self._check_length = check_length
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._iterated = False
        self._thread: threading.Thread | None = None
        self._released = threading.Lock()

    def __iter__(self) -> Iterator[Frame]:
        if self._iterated or self._stop.is_set():
            raise RuntimeError(f"{self.name}: this FrameSource was already iterated or closed; open it again")
        self._iterated = True
        return self._consume()

    @property
    def seekable(self) -> bool:
        """Whether :meth:`read_only` can seek: a local file OpenCV decodes, of known length and frame rate."""
        return self._seeker is not None and not self._iterated

    def read_only(self, indices: list[int]) -> None:
        """Deliver only the frames at these ascending decode ``indices`` (before iterating), seeking to
        those far ahead (the file's length is then checked by reading near its declared end). A seek that
        fails or lands elsewhere than asked (variable frame rate, broken timestamps) switches to decoding
        the rest of the file in order, so the frames delivered are those of a sequential decode."""
        if not self.seekable:
            raise RuntimeError(f"{self.name}: this FrameSource cannot seek or was already iterated")
        assert self._seeker is not None
        self._frames = self._seeker.frames(indices)
        self._check_length = False  # the seeker checks it
        self._sought = True

    @property
    def access(self) -> str:
        """How the frames were read: "seek" (only the frames asked for, by seeking) or "sequential"."""
        sought = self._sought and self._seeker is not None and not self._seeker.fell_back
        return "seek" if sought else "sequential"

    def _consume(self) -> Iterator[Frame]:
        # the thread starts on the first next(), so an iterator dropped unstarted leaves nothing running
        join_s = 2.0
        try:
            self._thread = threading.Thread(target=self._decode, name=f"kvqe-decoder {self.name}", daemon=True)
            self._thread.start()
            received = 0
            while True:
                try:
                    item = self._queue.get(timeout=self.limits.timeout)
                except queue.Empty:
                    join_s = 0.0  # the decoder is stuck: interrupted, it ends on its own; the caller goes now
                    raise self.limits.stalled_error(self.name, f"frame {received} did not arrive") from None
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield cast(Frame, item)
                received += 1
                self.frames_read = received
        finally:
            self.close(join_s)

    def _put(self, item: object) -> bool:
        """Put into the queue unless the source is closed meanwhile; False if it was."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                pass
        return False

    def _decode(self) -> None:
        index, shape = 0, None
        try:
            while True:
                started = time.monotonic()
                image = next(self._frames, None)
                if image is None:
                    if self.limits.stalled(started):
                        raise self.limits.stalled_error(self.name, f"frame {index} was not decoded")
                    break
                pixels = image.image if isinstance(image, Frame) else image
                if shape is None:
                    shape = pixels.shape
                    self.size = (shape[1], shape[0])
                elif pixels.shape != shape:
                    raise BadInputError(
                        f"{self.name}: frame {index} is {pixels.shape[1]}x{pixels.shape[0]} but frame 0 was "
                        f"{shape[1]}x{shape[0]}; every frame of one source must have the same size "
                        "(resize first, e.g. ffmpeg -vf scale=W:H or cv2.resize)"
                    )
                frame = image if isinstance(image, Frame) else Frame(index, index / (self.fps or ASSUMED_FPS), image)
                if not self._put(frame):
                    return
                index += 1
            if index == 0:
                raise BadInputError(f"{self.name}: {self._empty_message}")
            if self._check_length and self._ends_short(index):
                raise BadInputError(
                    f"{self.name}: the decode stopped after {index} of the {self.frame_count} frames its container "
                    "declares (the file is truncated or its stream is damaged); check it with ffprobe"
                )
            self._put(_END)
        except KvqeError as exc:
            self._put(exc)
        except Exception as exc:  # noqa: BLE001 - handed to the consumer with the source named
            detail = exc.err if isinstance(exc, cv2.error) and exc.err else exc
            error = BadInputError(f"{self.name}: reading frame {index} failed: {type(exc).__name__}: {detail}")
            error.__cause__ = exc
            self._put(error)
        finally:
            self._release_once()

    def _ends_short(self, decoded: int) -> bool:
        return self.frame_count is not None and decoded < least_frames(self.frame_count)

    def _release_once(self) -> None:
        if self._release is not None and self._released.acquire(blocking=False):
            self._release()

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop the decoder thread (waiting up to ``timeout_s``), drop queued frames, release the decoder."""
        self._stop.set()
        thread = self._thread
        if thread is None:
            self._release_once()
        elif thread is not threading.current_thread():
            if thread.is_alive() and self._interrupt is not None:
                self._interrupt()
            thread.join(timeout_s)
        while not self._queue.empty():
            self._queue.get_nowait()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def least_frames(declared: int) -> int:
    """The fewest frames a file whose container declares ``declared`` must decode: fewer means an
    interrupted upload or a damaged stream (scoring the first part would pass for the whole)."""
    return math.ceil(declared - max(_COUNT_SLACK_FRAMES, _COUNT_SLACK * declared))


def _timestamp(capture: cv2.VideoCapture, index: int, fps: float | None) -> float:
    """Seconds of the frame ``capture`` read last (the container's timestamp), else ``index / fps``."""
    milliseconds = capture.get(cv2.CAP_PROP_POS_MSEC)
    if math.isfinite(milliseconds) and (milliseconds > 0 or (index == 0 and milliseconds == 0)):
        return milliseconds / 1000
    return index / (fps or ASSUMED_FPS)


def _read(capture: cv2.VideoCapture, name: str, index: int, fps: float | None, timed: bool = True) -> Frame | None:
    """The next frame of ``capture`` as frame ``index``, or None at its end; timed by the container when
    ``timed``, else by ``fps`` (a rate the caller imposes)."""
    ok, image = capture.read()
    if not ok:
        return None
    time_s = _timestamp(capture, index, fps) if timed else index / (fps or ASSUMED_FPS)
    return Frame(index, time_s, check_frame(image, f"{name}: frame {index}"))


def _capture_frames(
    capture: cv2.VideoCapture, name: str, fps: float | None, first: Frame | None = None, start: int = 0,
    timed: bool = True,
) -> Iterator[Frame]:
    """The frames of ``capture`` numbered from ``start``, after ``first`` (frame 0, already read) if given;
    ``timed`` as for :func:`_read`."""
    index = start
    if first is not None:
        yield first
        index = 1
    while (frame := _read(capture, name, index, fps, timed)) is not None:
        yield frame
        index += 1


class _Seeker:
    """Reads chosen frames of a local file by seeking OpenCV's capture (see :meth:`FrameSource.read_only`).

    OpenCV's FFmpeg backend seeks to a frame number by time (``index / fps``) and decodes forward from the
    key picture before it, so with a constant frame rate the frame it lands on is the one a sequential
    decode gives at that index; the frame's own timestamp confirms it, and a seek that lands elsewhere
    (variable frame rate, broken timestamps) or fails hands over to a sequential decode.
    """

    def __init__(self, capture: cv2.VideoCapture, target: _Target, limits: Limits, first: Frame,
                 fps: float, frame_count: int) -> None:
        self.capture = capture
        self.fell_back = False
        self._target, self._limits, self._first = target, limits, first
        self._fps, self._frame_count = fps, frame_count

    def release(self) -> None:
        self.capture.release()

    def frames(self, indices: list[int]) -> Iterator[Frame]:
        """The frames at ``indices``; then the file's length checked at its last frame that must exist."""
        gap = SEEK_GAP_S * self._fps
        position = 1  # frame 0 was read when the file was opened
        if indices and indices[0] == 0:
            yield self._first
        probe = least_frames(self._frame_count) - 1
        for index in [i for i in indices if i > 0] + ([probe] if probe > max(indices, default=0) else []):
            frame = self._seek(index) if index - position > gap else self._forward(position, index)
            if frame is None:
                yield from self._sequential(position)
                return
            if index != probe:
                yield frame
            position = index + 1

    def _forward(self, position: int, index: int) -> Frame | None:
        """Frame ``index`` decoded forward from ``position``, or None if the file ends first."""
        for _ in range(index - position):
            if not self.capture.grab():
                return None
        return _read(self.capture, self._target.name, index, self._fps)

    def _seek(self, index: int) -> Frame | None:
        """Frame ``index`` by seeking, or None if the seek fails or lands on another frame."""
        try:
            self.capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        except cv2.error:
            return None
        frame = _read(self.capture, self._target.name, index, self._fps)
        milliseconds = self.capture.get(cv2.CAP_PROP_POS_MSEC)
        if frame is None or not abs(milliseconds / 1000 - index / self._fps) <= 0.5 / self._fps:
            return None
        return frame

    def _sequential(self, position: int) -> Iterator[Frame]:
        """Every frame from ``position`` on, decoded in order by a fresh capture; the file's length checked."""
        self.fell_back = True
        self.capture.release()
        self.capture = _open_capture(self._target, self._limits)
        for _ in range(position):
            if not self.capture.grab():
                break
        decoded = position
        for frame in _capture_frames(self.capture, self._target.name, self._fps, start=position):
            yield frame
            decoded += 1
        if decoded < least_frames(self._frame_count):
            raise BadInputError(
                f"{self._target.name}: the decode stopped after {decoded} of the {self._frame_count} frames its "
                "container declares (the file is truncated or its stream is damaged); check it with ffprobe"
            )


def _iterable_frames(items: Iterable[object], name: str, limits: Limits) -> Iterator[np.ndarray]:
    # copied: the frames are queued ahead, and a producer may reuse its buffer
    for index, item in enumerate(items):
        yield limits.frame(item, f"{name}: item {index}").copy()


@dataclass(frozen=True)
class _Container:
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
    def of(cls, capture: cv2.VideoCapture) -> _Container:
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


def _capture_source(
    capture: cv2.VideoCapture, name: str, fps: float | None, queue_size: int, owned: bool, limits: Limits,
    target: _Target | None = None, first: Frame | None = None,
) -> FrameSource:
    """A FrameSource over ``capture`` (``first``: frame 0, already read from it); a local file's (``target``
    with a path) decode is checked against its declared length (streams and URLs may not know theirs; a
    caller's capture may not start at frame 0), and it may seek when its length and frame rate are known."""
    container = _Container.of(capture)
    limits.check(name, container.width, container.height)
    rate = fps or container.fps
    local_file = target is not None and target.path is not None
    seeker = None  # OpenCV seeks by the container's rate: not when the caller overrides it
    if local_file and owned and first is not None and fps is None and container.fps and container.frame_count:
        assert target is not None
        seeker = _Seeker(capture, target, limits, first, container.fps, container.frame_count)
    return FrameSource(
        name,
        _capture_frames(capture, name, rate, first, timed=fps is None),
        fps=rate,
        frame_count=container.frame_count,
        queue_size=queue_size,
        release=(seeker.release if seeker else capture.release) if owned else None,
        empty_message="no decodable frames (the file may be truncated or corrupt); check it with ffprobe",
        check_length=local_file,
        limits=limits,
        codec=container.codec_name,
        seeker=seeker,
    )


@dataclass(frozen=True)
class _Target:
    """A video to open: ``name`` as the user gave it; a local file (read as that file by both decoders,
    whatever its name holds) or a URL with its scheme."""

    name: str
    path: Path | None = None
    scheme: str = ""

    @property
    def for_opencv(self) -> str:
        # an absolute path: FFmpeg takes a leading "name:" as a protocol, never a leading "/"
        return str(self.path.absolute()) if self.path is not None else self.name

    def for_ffmpeg(self, limits: Limits) -> list[str]:
        """ffmpeg's input options and ``-i`` argument."""
        if self.path is not None:
            return local_input(self.path)
        if limits.timeout is None:
            return ["-i", self.name]
        microseconds = str(round(limits.timeout * 1e6))
        socket = ["-timeout", microseconds] if self.scheme in _FFMPEG_TIMEOUT_SCHEMES else []
        return ["-rw_timeout", microseconds, *socket, "-i", self.name]


def _opencv_params(limits: Limits) -> list[int]:
    params = [cv2.CAP_PROP_N_THREADS, min(_DECODE_THREADS, os.cpu_count() or 1)]
    if limits.timeout is not None:
        milliseconds = max(1, round(limits.timeout * 1000))
        params += [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, milliseconds, cv2.CAP_PROP_READ_TIMEOUT_MSEC, milliseconds]
    return params


def _open_capture(target: _Target, limits: Limits) -> cv2.VideoCapture:
    """OpenCV's capture of ``target``, open; BadInputError if it cannot be opened in time."""
    started = time.monotonic()
    try:
        capture = cv2.VideoCapture(target.for_opencv, cv2.CAP_FFMPEG, _opencv_params(limits))
    except cv2.error as exc:
        raise BadInputError(f"cannot open {target.name} as a video: OpenCV: {exc.err or exc}") from exc
    if capture.isOpened():
        return capture
    if target.path is None and limits.stalled(started):
        raise limits.stalled_error(target.name, "it did not open")
    raise BadInputError(
        f"cannot open {target.name} as a video (corrupt, unsupported or unreachable); check it with ffprobe; "
        f"images are recognised by their suffix: {', '.join(sorted(IMAGE_SUFFIXES))}"
    )


def _open_video(target: _Target, fps: float | None, queue_size: int, limits: Limits) -> FrameSource:
    """A video file or URL decoded by OpenCV or, when OpenCV opens it but decodes no frame (e.g. AV1 with the
    opencv-python 4.x wheels), by the ``ffmpeg`` command if it is installed. Its size is checked against the
    cap from the container before the first frame is decoded."""
    name = target.name
    capture = _open_capture(target, limits)
    try:
        container = _Container.of(capture)
        limits.check(name, container.width, container.height)
        started = time.monotonic()
        ok, image = capture.read()
        time_s = _timestamp(capture, 0, container.fps) if fps is None else 0.0
        first = Frame(0, time_s, check_frame(image, f"{name}: frame 0")) if ok else None
    except cv2.error as exc:
        capture.release()
        raise BadInputError(f"{name}: OpenCV failed to decode frame 0: {exc.err or exc}") from exc
    except BaseException:
        capture.release()
        raise
    if first is not None:
        return _capture_source(capture, name, fps, queue_size, owned=True, limits=limits, target=target,
                               first=first)
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
    return _ffmpeg_source(executable, target, stream, container, fps, queue_size, limits)


def _ffmpeg_source(executable: str, target: _Target, stream: str, container: _Container, fps: float | None,
                   queue_size: int, limits: Limits) -> FrameSource:
    """The ffmpeg command's decode of ``target``, its first frame read here (within the timeout) so that a
    stream neither decoder can read fails at once."""
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
        frame_count=container.frame_count,
        queue_size=queue_size,
        release=decode.close,
        interrupt=decode.interrupt,
        check_length=target.path is not None,
        limits=limits,
        codec=container.codec_name,
    )


def _chain_first(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest


def _target(source: str | os.PathLike[str], limits: Limits) -> _Target:
    """A local file when ``source`` names one (or is a path object), else a URL of an allowed scheme."""
    scheme = _url_scheme(source) if isinstance(source, str) else None
    if scheme is None or os.path.lexists(source):
        path = Path(source)
        _check_file(path)
        return _Target(str(path), path)
    assert isinstance(source, str)
    allowed = NETWORK_SCHEMES | limits.protocols
    if scheme not in allowed:
        raise BadInputError(
            f"{source}: not a local file, and kvqe reads '{scheme}:' URLs only when asked (FFmpeg's {scheme} "
            "protocol can reach local files or other sources the caller did not mean to give); by default kvqe "
            f"reads {', '.join(sorted(NETWORK_SCHEMES))} URLs; to read this one, allow its scheme "
            f"explicitly: protocols=['{scheme}']"
        )
    return _Target(source, scheme=scheme)


def open_source(
    source: object,
    *,
    fps: float | None = None,
    queue_size: int = 8,
    timeout: float | None = DEFAULT_TIMEOUT_S,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    protocols: Iterable[str] | str = (),
) -> FrameSource:
    """Open a video/image path, URL, ``cv2.VideoCapture``, HxWx3 uint8 BGR array or iterable of them.

    ``fps`` overrides the container's frame rate. A ``cv2.VideoCapture`` given here is read from its
    current position and is not released on close (the caller owns it); so are iterators.
    ``timeout``: seconds to wait for the source to open and for each frame (None: no kvqe timeout);
    ``max_pixels``: largest frame accepted, checked before decoding (None: no cap); ``protocols``: URL
    schemes to read beyond :data:`NETWORK_SCHEMES` (e.g. ``["file"]`` for ``file://`` URLs).
    """
    fps = _positive(fps, "fps")
    limits = Limits.of(timeout, max_pixels, protocols)
    if isinstance(source, (str, os.PathLike)):
        target = _target(source, limits)
        if target.path is not None and target.path.suffix.lower() in IMAGE_SUFFIXES:
            image = read_image(target.path, max_pixels=limits.max_pixels)
            return FrameSource(target.name, iter([image]), fps=fps, frame_count=1, is_image=True,
                               queue_size=queue_size, limits=limits)
        return _open_video(target, fps, queue_size, limits)
    if isinstance(source, cv2.VideoCapture):
        if not source.isOpened():
            raise BadInputError("<VideoCapture>: the cv2.VideoCapture given is not open; check what it opened")
        return _capture_source(source, "<VideoCapture>", fps, queue_size, owned=False, limits=limits)
    if isinstance(source, np.ndarray):
        image = limits.frame(source, "<image>")
        return FrameSource("<image>", iter([image]), fps=fps, frame_count=1, is_image=True,
                           queue_size=queue_size, limits=limits)
    if isinstance(source, Iterable) and not isinstance(source, (bytes, bytearray)):
        return FrameSource("<frames>", _iterable_frames(source, "<frames>", limits), fps=fps, queue_size=queue_size,
                           limits=limits, frame_count=len(source) if isinstance(source, (list, tuple)) else None)
    raise BadInputError(
        f"cannot use a {type(source).__name__} as a source; give a video or image path, a URL, "
        "a cv2.VideoCapture, an HxWx3 uint8 BGR array or an iterable of them"
    )


def _read_into(stream: BinaryIO, array: np.ndarray) -> int:
    """Fill ``array`` (C-contiguous) from ``stream``; the number of bytes read (fewer at its end)."""
    view, filled, size = array.reshape(-1).data, 0, array.nbytes
    while filled < size and (chunk := stream.read(size - filled)):
        view[filled:filled + len(chunk)] = chunk
        filled += len(chunk)
    return filled


def _raw_frames(stream: BinaryIO, name: str, width: int, height: int, pix_fmt: str) -> Iterator[np.ndarray]:
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
        fps=_positive(fps, "fps"),
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
    rate = _positive(fps, "fps")
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
