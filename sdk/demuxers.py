"""Which FFmpeg demuxers may open a source: by default only those of single media files.

A playlist or manifest (HLS, DASH, ffconcat, IMF, SDP, image sequences) makes FFmpeg read the files or
URLs it lists: a local upload naming another file on the server would read that file. Both decoders are
given FFmpeg's own ``format_whitelist`` (the ``ffmpeg`` command as an input option, OpenCV through
``OPENCV_FFMPEG_CAPTURE_OPTIONS`` while it opens), and a local file that starts as such a playlist is
refused by name before either decoder sees it. A caller allows more with ``demuxers`` (e.g. ``["hls"]``).
"""
from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from kvqe.errors import BadInputError

# FFmpeg demuxers that read one file (or one network stream) and nothing it names: video containers,
# elementary streams, single images; rtsp and rtp are chosen by a URL's scheme only, never for a file
SINGLE_FILE_DEMUXERS = frozenset({
    "mov", "matroska", "avi", "mpegts", "flv", "ivf", "yuv4mpegpipe", "mpeg", "mxf", "asf", "nut", "ogg", "dv",
    "obu", "av1", "h261", "h263", "h264", "hevc", "vvc", "m4v", "mpegvideo", "mjpeg", "vc1", "dirac", "gif",
    "apng", "png_pipe", "jpeg_pipe", "bmp_pipe", "tiff_pipe", "webp_pipe", "gif_pipe", "rtsp", "rtp",
})
_NAME = re.compile(r"[a-z0-9_]+")
_HEAD_BYTES = 4096
_OPENCV_OPTIONS = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
# what OpenCV sets when that variable is absent (RTSP over TCP first): kept when kvqe sets it
_OPENCV_DEFAULT = "rtsp_flags;prefer_tcp"


def demuxer_names(demuxers: Iterable[str] | str) -> frozenset[str]:
    """The demuxer names a caller allows (a comma-separated string or names); BadInputError for others."""
    names = demuxers.split(",") if isinstance(demuxers, str) else demuxers
    cleaned = [n.strip().lower() if isinstance(n, str) else n for n in names] if isinstance(names, Iterable) else [names]
    if not all(isinstance(n, str) and (n == "" or _NAME.fullmatch(n)) for n in cleaned):
        raise BadInputError(f"demuxers must be FFmpeg demuxer names such as ['hls'], got {demuxers!r}")
    return frozenset(n for n in cleaned if n)


def format_whitelist(allowed: frozenset[str]) -> str:
    """FFmpeg's ``format_whitelist``: the single-file demuxers and ``allowed``."""
    return ",".join(sorted(SINGLE_FILE_DEMUXERS | allowed))


def _listing_format(head: bytes) -> tuple[str, str] | None:
    """(demuxer, what it is) when ``head`` starts a playlist or manifest FFmpeg would follow, else None."""
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    lower = text.lower()
    if text.startswith(b"#EXTM3U"):
        return "hls", "an HLS playlist"
    if text.startswith(b"ffconcat"):
        return "concat", "an ffconcat list"
    if text.startswith(b"v=0") and b"c=IN IP" in text:
        return "sdp", "an SDP description"
    if text.startswith(b"<") and b"<mpd" in lower:
        return "dash", "a DASH manifest"
    if text.startswith(b"<") and b"<compositionplaylist" in lower:
        return "imf", "an IMF composition playlist"
    return None


def _indexless_format(head: bytes) -> str | None:
    """The container's name when ``head`` starts one without a frame index, else None."""
    if len(head) > 376 and head[0] == head[188] == head[376] == 0x47:
        return "MPEG-TS"
    if len(head) > 388 and head[4] == head[196] == head[388] == 0x47:
        return "MPEG-TS (M2TS)"
    if head.startswith(b"\x00\x00\x01\xba"):
        return "MPEG-PS"
    if head.startswith(b"FLV\x01"):
        return "FLV"
    iso_box = head[4:8].isalpha()  # an MP4/MOV's first box: a 4-byte size (which may start 00 00 01), its type
    if head.startswith((b"\x00\x00\x00\x01", b"\x00\x00\x01")) and not iso_box:
        return "an elementary stream"
    return None


def indexless_format(path: Path) -> str | None:
    """The container of the local file at ``path`` when it carries no frame index (MPEG-TS, MPEG-PS, FLV, an
    elementary stream), else None. Its frame count is an estimate, not a declaration, and its pictures may
    change size mid-stream (a new sequence header): such a file is read to its end as a stream."""
    with path.open("rb") as handle:
        return _indexless_format(handle.read(_HEAD_BYTES))


def check_local_file(path: Path, name: str, allowed: frozenset[str]) -> None:
    """BadInputError if the file at ``path`` is a playlist or manifest whose demuxer is not ``allowed``."""
    with path.open("rb") as handle:
        found = _listing_format(handle.read(_HEAD_BYTES))
    if found is not None and found[0] not in allowed:
        demuxer, what = found
        raise BadInputError(
            f"{name}: {what} ({demuxer} demuxer), which makes FFmpeg read the files or URLs it lists; kvqe opens "
            f"single media files only, unless asked: demuxers=['{demuxer}'] (--demuxers {demuxer}) for a "
            "playlist you trust"
        )


class _OpenCvOptions:
    """``OPENCV_FFMPEG_CAPTURE_OPTIONS``, which OpenCV reads as it opens a capture: set for the opens in
    flight, which share one value (an open that needs another waits until they are done); the caller's
    own value is kept in front and comes back when no open is in flight."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._whitelist: str | None = None  # the one in the variable while opens are in flight
        self._original: str | None = None  # the caller's value, restored when none is
        self._opening = 0

    @contextlib.contextmanager
    def set(self, whitelist: str) -> Iterator[None]:
        """Hold the variable at the caller's options plus ``format_whitelist`` for the block."""
        with self._changed:
            self._changed.wait_for(lambda: self._opening == 0 or self._whitelist == whitelist)
            if self._opening == 0:
                self._original = os.environ.get(_OPENCV_OPTIONS)
                options = f"{self._original or _OPENCV_DEFAULT}|format_whitelist;{whitelist}"
                os.environ[_OPENCV_OPTIONS], self._whitelist = options, whitelist
            self._opening += 1
        try:
            yield
        finally:
            with self._changed:
                self._opening -= 1
                if self._opening == 0:
                    self._restore()
                self._changed.notify_all()

    def _restore(self) -> None:
        self._whitelist = None
        if self._original is None:
            os.environ.pop(_OPENCV_OPTIONS, None)
        else:
            os.environ[_OPENCV_OPTIONS] = self._original


opencv_options = _OpenCvOptions()
