"""What reading one source may cost (:class:`Limits`): the frame size cap, the wait for each frame, the
URL schemes read and the container formats opened.

A frame larger than ``max_pixels`` is refused from its header before it is decoded, no source blocks its
reader longer than ``timeout`` seconds between frames, and a string reads as a URL only for the network
schemes of :data:`NETWORK_SCHEMES` (FFmpeg's other protocols, ``file:``, ``concat:``, ``subfile:``,
``pipe:``, ``data:``, ... only when the caller lists them in ``protocols``), and only the demuxers of single
media files open it (playlists and manifests only when listed in ``demuxers``: see :mod:`kvqe.sdk.demuxers`).
"""
from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from kvqe.bounds import FPS, MAX_PIXELS, TIMEOUT, checked_int, optional
from kvqe.errors import BadInputError
from kvqe.sdk.demuxers import demuxer_names, format_whitelist
from kvqe.sdk.ffmpeg_decode import check_pixels
from kvqe.sdk.frames import check_frame

DEFAULT_TIMEOUT_S = 30.0  # longest wait for a source's next frame (and for opening it)
# 8K UHD, the largest frame any broadcast, streaming or camera format delivers: a 33 MP BGR frame is 100 MB,
# and a header claiming more is a decompression bomb far more often than a real picture
DEFAULT_MAX_PIXELS = 7680 * 4320
# URL schemes read without asking: the protocols that serve video over a network
NETWORK_SCHEMES = frozenset({"http", "https", "rtsp", "rtsps", "rtmp", "rtmps", "srt", "udp", "tcp", "rtp"})
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+):")  # two characters at least: "C:" is a drive
_STALLED = 0.9  # a read that ends after this share of the timeout ended because it timed out


def imposed_fps(fps: float | None) -> float | None:
    """A frame rate a caller imposes (None: the source's), checked (:data:`kvqe.bounds.FPS`)."""
    return optional(fps, "fps", FPS)


def url_scheme(source: str) -> str | None:
    """The URL scheme of ``source`` (lower case), or None when it has none."""
    match = _SCHEME.match(source)
    return match.group(1).lower() if match else None


@dataclass(frozen=True)
class Limits:
    """What reading one source may cost.

    ``timeout``: seconds a reader may wait for the next frame, and the decoders' open and read timeouts
    (None: wait as long as the decoders do); ``max_pixels``: the largest frame (width x height), checked from
    headers before decoding (None: no cap); ``protocols``: URL schemes allowed beyond :data:`NETWORK_SCHEMES`;
    ``demuxers``: FFmpeg demuxers allowed beyond those of single media files (e.g. ``hls``).
    """

    timeout: float | None = DEFAULT_TIMEOUT_S
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    protocols: frozenset[str] = frozenset()
    demuxers: frozenset[str] = frozenset()

    @classmethod
    def of(cls, timeout: float | None = DEFAULT_TIMEOUT_S, max_pixels: int | None = DEFAULT_MAX_PIXELS,
           protocols: Iterable[str] | str = (), demuxers: Iterable[str] | str = ()) -> Limits:
        """Limits from the API's keywords, checked (BadInputError naming the bad one)."""
        if max_pixels is not None:
            max_pixels = checked_int(max_pixels, "max_pixels", MAX_PIXELS)
        names = [protocols] if isinstance(protocols, str) else list(protocols)
        if not all(isinstance(n, str) and _SCHEME.fullmatch(f"{n.rstrip(':/')}:") for n in names):
            raise BadInputError(f"protocols must be URL scheme names such as ['file'], got {protocols!r}")
        return cls(optional(timeout, "timeout", TIMEOUT), max_pixels, frozenset(n.rstrip(":/").lower() for n in names),
                   demuxer_names(demuxers))

    @property
    def format_whitelist(self) -> str:
        """FFmpeg's ``format_whitelist`` for a source read under these limits."""
        return format_whitelist(self.demuxers)

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

    def stalled_error(self, name: str, what: str, received: str = "") -> BadInputError:
        """The error for a source that gave no ``what`` within the timeout, after ``received`` (what it gave
        before, e.g. "received 12 of the 250 frames it declares (0.5 of 10.0 s)")."""
        before = f"{received}; " if received else ""
        return BadInputError(f"{name}: {what} within the timeout of {self.timeout:g} s ({before}the source "
                             "stalled or is unreachable); never scored as a shorter video; pass timeout= to wait longer")
