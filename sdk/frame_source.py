"""A :class:`FrameSource`: frames decoded on a background daemon thread into a bounded queue.

Memory stays bounded by ``queue_size`` frames whatever the length of the video. A source is iterated once;
leaving the loop early, ``close()`` or dropping the iterator stops the thread and releases what the source
opened. Objects the caller passes in (a ``cv2.VideoCapture``, an iterator, a stream) stay the caller's: they
are never released or closed here.
"""
from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol, cast

import cv2
import numpy as np

from kvqe.errors import BadInputError, KvqeError
from kvqe.sdk.frames import ASSUMED_FPS, Frame
from kvqe.sdk.limits import Limits

if TYPE_CHECKING:
    from typing import Self

_END = object()
_POLL_S = 0.05
# a file may decode a little short of the frame count its container declares (an estimate in some
# formats); more than this shortfall means the file is truncated or damaged
_COUNT_SLACK, _COUNT_SLACK_FRAMES = 0.05, 2


class Seeker(Protocol):
    """What :meth:`FrameSource.read_only` needs of a reader that seeks (:class:`kvqe.sdk.seeking.CaptureSeeker`)."""

    fell_back: bool  # it switched to decoding in order

    def frames(self, indices: list[int]) -> Iterator[Frame]:
        """The frames at the ascending decode ``indices``."""
        ...


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
        live: bool = False,
        limits: Limits | None = None,
        codec: str = "",
        seeker: Seeker | None = None,
    ) -> None:
        if not (isinstance(queue_size, int) and not isinstance(queue_size, bool) and queue_size >= 1):
            raise BadInputError(f"queue_size must be a positive integer, got {queue_size!r}")
        self.name = name
        self.fps = fps
        self.frame_count = frame_count
        self.is_image = is_image
        self.live = live  # a network source or a file without a frame index: read as a stream without a length
        self.limits = limits or Limits()
        self.codec = codec  # the codec's name ("h264", "hevc", "vp9", ...), "" when unknown
        self.conversion = ""  # an image file's conversion to 8-bit BGR ("grey to BGR", ...), "" for none
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

    def declare_length(self, frame_count: int) -> None:
        """Take ``frame_count`` as the length of a source that declares none (a pipe, an iterator, a live
        stream), before iterating: keyframes are planned over it, and a decode that ends short is an error."""
        if self._iterated or self.frame_count is not None:
            raise RuntimeError(f"{self.name}: a length is declared once, before iterating, for a source without one")
        self.frame_count, self._check_length = frame_count, True

    @property
    def access(self) -> str:
        """How the frames were read: "seek" (only the frames asked for, by seeking), "stream" (a network source
        that declares no length, or a file without a frame index: scored over what it delivered until it
        ended) or "sequential"."""
        if self.live and self.frame_count is None:
            return "stream"
        sought = self._sought and self._seeker is not None and not self._seeker.fell_back
        return "seek" if sought else "sequential"

    def received(self, count: int) -> str:
        """What ``count`` frames are of the whole, for an error: "12 of the 250 frames it declares (0.5 of
        10.0 s)", or without a declared length "12 frames (0.5 s)"."""
        rate = self.fps or ASSUMED_FPS
        if self.frame_count is None:
            return f"{count} frames ({count / rate:.1f} s)"
        return (f"{count} of the {self.frame_count} frames it declares "
                f"({count / rate:.1f} of {self.frame_count / rate:.1f} s)")

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
                    raise self.limits.stalled_error(self.name, f"frame {received} did not arrive",
                                                    f"received {self.received(received)}") from None
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
                        raise self.limits.stalled_error(self.name, f"frame {index} was not decoded",
                                                        f"decoded {self.received(index)}")
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
                cause = ("the connection closed early or stalled" if self.live
                         else "the file is truncated or its stream is damaged")
                raise BadInputError(f"{self.name}: the decode stopped after {self.received(index)}: {cause}; "
                                    "never scored as a shorter video; check it with ffprobe")
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
