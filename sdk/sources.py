"""Frame sources: video files, URLs, ``cv2.VideoCapture``, images, iterables of frames and raw pipes.

Every source decodes on a background daemon thread into a bounded queue, so memory stays bounded by
``queue_size`` frames whatever the length of the video. A :class:`FrameSource` is iterated once; leaving
the loop early, ``close()`` or dropping the iterator stops the thread and releases what the source opened.
Objects the caller passes in (a ``cv2.VideoCapture``, an iterator, a stream) stay the caller's: they are
never released or closed here.
"""
from __future__ import annotations

import itertools
import math
import os
import queue
import shlex
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

import cv2
import numpy as np

from kvqe.errors import BadInputError, KvqeError
from kvqe.sdk.ffmpeg_decode import FfmpegDecode, find_ffmpeg

if TYPE_CHECKING:
    from typing import Self

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
RAW_PIX_FMTS = {"bgr24": None, "rgb24": cv2.COLOR_RGB2BGR}
ASSUMED_FPS = 30.0  # used for Frame.time_s when a source has no known frame rate
_END = object()
_POLL_S = 0.05
# a file may decode a little short of the frame count its container declares (an estimate in some
# formats); more than this shortfall means the file is truncated or damaged
_COUNT_SLACK, _COUNT_SLACK_FRAMES = 0.05, 2


@dataclass(frozen=True, eq=False)
class Frame:
    """One decoded frame."""

    index: int  # 0-based decode index
    time_s: float  # index / fps, with ASSUMED_FPS when the source's rate is unknown
    image: np.ndarray  # HxWx3 uint8 BGR, C-contiguous


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


def _check_file(path: Path) -> None:
    if not path.exists():
        raise BadInputError(f"no such file: {path}")
    if path.is_dir():
        raise BadInputError(f"{path} is a directory; give a video or image file")
    if path.stat().st_size == 0:
        raise BadInputError(f"{path} is empty (0 bytes); give a video or image file")


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as HxWx3 uint8 BGR, upright by its EXIF orientation.

    Grey, alpha and 16-bit images are refused rather than silently converted.
    """
    path = Path(path)
    _check_file(path)
    data = np.fromfile(path, np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)  # as stored, to see channels and depth
    if image is None:
        raise BadInputError(f"cannot read {path} as an image (corrupt or unsupported); "
                            f"supported: {', '.join(sorted(IMAGE_SUFFIXES))}")
    check_frame(image, f"image {path}")
    return check_frame(cv2.imdecode(data, cv2.IMREAD_COLOR), f"image {path}")  # turned by EXIF orientation


def _positive(value: float | None, what: str) -> float | None:
    if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise BadInputError(f"{what} must be a positive number, got {value!r}")
    return None if value is None else float(value)


class FrameSource:
    """An iterable of :class:`Frame` decoded on a background thread; a context manager."""

    def __init__(
        self,
        name: str,
        frames: Iterator[np.ndarray],
        *,
        fps: float | None,
        frame_count: int | None = None,
        is_image: bool = False,
        queue_size: int = 8,
        release: Callable[[], None] | None = None,
        empty_message: str = "yielded no frames",
        check_length: bool = False,
    ) -> None:
        if not (isinstance(queue_size, int) and queue_size >= 1):
            raise BadInputError(f"queue_size must be a positive integer, got {queue_size!r}")
        self.name = name
        self.fps = fps
        self.frame_count = frame_count
        self.is_image = is_image
        self._frames = frames
        self._release = release
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

    def _consume(self) -> Iterator[Frame]:
        # the thread starts on the first next(), so an iterator dropped unstarted leaves nothing running
        try:
            self._thread = threading.Thread(target=self._decode, name=f"kvqe-decoder {self.name}", daemon=True)
            self._thread.start()
            while (item := self._queue.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield cast(Frame, item)
        finally:
            self.close()

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
            for image in self._frames:
                if shape is None:
                    shape = image.shape
                elif image.shape != shape:
                    raise BadInputError(
                        f"{self.name}: frame {index} is {image.shape[1]}x{image.shape[0]} but frame 0 was "
                        f"{shape[1]}x{shape[0]}; every frame of one source must have the same size "
                        "(resize first, e.g. ffmpeg -vf scale=W:H or cv2.resize)"
                    )
                if not self._put(Frame(index, index / (self.fps or ASSUMED_FPS), image)):
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
            error = BadInputError(f"{self.name}: reading frame {index} failed: {type(exc).__name__}: {exc}")
            error.__cause__ = exc
            self._put(error)
        finally:
            self._release_once()

    def _ends_short(self, decoded: int) -> bool:
        """Whether ``decoded`` frames fall well short of the declared count (an interrupted upload or a
        damaged stream: scoring the first part would pass for the whole)."""
        declared = self.frame_count
        return declared is not None and declared - decoded > max(_COUNT_SLACK_FRAMES, _COUNT_SLACK * declared)

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
            thread.join(timeout_s)
        while not self._queue.empty():
            self._queue.get_nowait()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _capture_frames(
    capture: cv2.VideoCapture, name: str, first: np.ndarray | None = None
) -> Iterator[np.ndarray]:
    """The frames of ``capture``, after ``first`` (a frame already read from it) when given."""
    index = 0
    if first is not None:
        yield check_frame(first, f"{name}: frame 0")
        index = 1
    while True:
        ok, image = capture.read()
        if not ok:
            return
        yield check_frame(image, f"{name}: frame {index}")
        index += 1


def _iterable_frames(items: Iterable[object], name: str) -> Iterator[np.ndarray]:
    # copied: the frames are queued ahead, and a producer may reuse its buffer
    for index, item in enumerate(items):
        yield check_frame(item, f"{name}: item {index}").copy()


@dataclass(frozen=True)
class _Container:
    """What a video's container declares, read by OpenCV before any frame is decoded."""

    fps: float | None
    frame_count: int | None
    codec: str  # the FOURCC, e.g. "h264" or "AV01"; "" when unknown
    size: str  # "WxH", "" when unknown

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
            size=f"{int(width)}x{int(height)}" if width and height else "",
        )


def _capture_source(
    capture: cv2.VideoCapture, name: str, fps: float | None, queue_size: int, owned: bool, local_file: bool = False,
    first: np.ndarray | None = None,
) -> FrameSource:
    """A FrameSource over ``capture`` (``first``: a frame already read from it); a ``local_file``'s decode is
    checked against its declared length (streams and URLs may not know theirs; a caller's capture may not
    start at frame 0)."""
    container = _Container.of(capture)
    return FrameSource(
        name,
        _capture_frames(capture, name, first),
        fps=fps or container.fps,
        frame_count=container.frame_count,
        queue_size=queue_size,
        release=capture.release if owned else None,
        empty_message="no decodable frames (the file may be truncated or corrupt); check it with ffprobe",
        check_length=local_file,
    )


def _open_video(target: str, name: str, fps: float | None, queue_size: int, local_file: bool) -> FrameSource:
    """A video file or URL decoded by OpenCV or, when OpenCV opens it but decodes no frame (e.g. AV1 with the
    opencv-python 4.x wheels), by the ``ffmpeg`` command if it is installed."""
    capture = cv2.VideoCapture(target, cv2.CAP_FFMPEG)
    if not capture.isOpened():
        raise BadInputError(
            f"cannot open {name} as a video (corrupt, unsupported or unreachable); check it with ffprobe; "
            f"images are recognised by their suffix: {', '.join(sorted(IMAGE_SUFFIXES))}"
        )
    ok, first = capture.read()
    if ok:
        return _capture_source(capture, name, fps, queue_size, owned=True, local_file=local_file, first=first)
    container = _Container.of(capture)
    capture.release()
    stream = f"its {container.codec} stream" if container.codec else "its video stream"
    executable = find_ffmpeg()
    if executable is None:
        raise BadInputError(
            f"{name}: no decodable frames: OpenCV {cv2.__version__} opened it but decoded none of {stream} "
            "(the file may be truncated or corrupt, or the codec unsupported: the opencv-python 4.x wheels "
            "decode no AV1); install ffmpeg and kvqe decodes such streams with it, or pipe them: "
            f"ffmpeg -i {shlex.quote(target)} -f rawvideo -pix_fmt bgr24 - | "
            f"kvqe score - --raw {container.size or 'WxH'}" + (f" --fps {container.fps:g}" if container.fps else "")
        )
    decode = FfmpegDecode(executable, target, name)
    frames = decode.frames()
    try:
        first = next(frames)
    except BadInputError as exc:
        errors = decode.errors()
        decode.close()
        raise BadInputError(
            f"{name}: no decodable frames: OpenCV decoded none of {stream} and ffmpeg none either "
            f"({errors}); the file may be truncated or corrupt; check it with ffprobe"
        ) from exc
    return FrameSource(
        name,
        itertools.chain([first], frames),
        fps=fps or container.fps,
        frame_count=container.frame_count,
        queue_size=queue_size,
        release=decode.close,
        check_length=local_file,
    )


def open_source(source: object, *, fps: float | None = None, queue_size: int = 8) -> FrameSource:
    """Open a video/image path, URL, ``cv2.VideoCapture``, HxWx3 uint8 BGR array or iterable of them.

    ``fps`` overrides the container's frame rate. A ``cv2.VideoCapture`` given here is read from its
    current position and is not released on close (the caller owns it); so are iterators.
    """
    fps = _positive(fps, "fps")
    if isinstance(source, str) and "://" in source:
        return _open_video(source, source, fps, queue_size, local_file=False)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        _check_file(path)
        if path.suffix.lower() in IMAGE_SUFFIXES:
            image = read_image(path)
            return FrameSource(str(path), iter([image]), fps=fps, frame_count=1, is_image=True,
                               queue_size=queue_size)
        return _open_video(str(path), str(path), fps, queue_size, local_file=True)
    if isinstance(source, cv2.VideoCapture):
        if not source.isOpened():
            raise BadInputError("<VideoCapture>: the cv2.VideoCapture given is not open; check what it opened")
        return _capture_source(source, "<VideoCapture>", fps, queue_size, owned=False)
    if isinstance(source, np.ndarray):
        image = check_frame(source, "<image>")
        return FrameSource("<image>", iter([image]), fps=fps, frame_count=1, is_image=True,
                           queue_size=queue_size)
    if isinstance(source, Iterable) and not isinstance(source, (bytes, bytearray)):
        return FrameSource("<frames>", _iterable_frames(source, "<frames>"), fps=fps, queue_size=queue_size)
    raise BadInputError(
        f"cannot use a {type(source).__name__} as a source; give a video or image path, a URL, "
        "a cv2.VideoCapture, an HxWx3 uint8 BGR array or an iterable of them"
    )


def _raw_frames(stream: BinaryIO, name: str, width: int, height: int, pix_fmt: str) -> Iterator[np.ndarray]:
    size = width * height * 3
    conversion = RAW_PIX_FMTS[pix_fmt]
    while True:
        buffer = bytearray()
        while len(buffer) < size and (chunk := stream.read(size - len(buffer))):
            buffer += chunk
        if not buffer:
            return
        if len(buffer) < size:
            raise BadInputError(
                f"{name}: the raw stream ended in the middle of a frame: got {len(buffer)} of {size} bytes "
                f"of a {width}x{height} {pix_fmt} frame; check that --raw WxH and --pix-fmt match the stream"
            )
        image = np.frombuffer(buffer, np.uint8).reshape(height, width, 3)
        yield image if conversion is None else cv2.cvtColor(image, conversion)


def open_raw_pipe(
    stream: BinaryIO,
    width: int,
    height: int,
    *,
    pix_fmt: str = "bgr24",
    fps: float | None = None,
    queue_size: int = 8,
) -> FrameSource:
    """Read raw packed frames (``ffmpeg -f rawvideo -pix_fmt bgr24|rgb24 -``) from a binary stream.

    The stream is not closed here. A trailing partial frame is an error raised after the complete frames.
    """
    if pix_fmt not in RAW_PIX_FMTS:
        raise BadInputError(f"unsupported raw pix_fmt {pix_fmt!r}; supported: {', '.join(RAW_PIX_FMTS)}")
    for value, what in ((width, "width"), (height, "height")):
        if not (isinstance(value, int) and value > 0):
            raise BadInputError(f"raw frame {what} must be a positive integer, got {value!r}")
    return FrameSource(
        "-",
        _raw_frames(stream, "-", width, height, pix_fmt),
        fps=_positive(fps, "fps"),
        queue_size=queue_size,
        empty_message=f"yielded no frames (expected raw {width}x{height} {pix_fmt} frames)",
    )
