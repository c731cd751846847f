"""``open_source``: a :class:`FrameSource` for whatever the caller gives: a video or image path, a URL, a
``cv2.VideoCapture``, an HxWx3 uint8 BGR array or an iterable of them.

A local file name always reads as that file, whatever characters it holds; a string reads as a URL only for
the schemes :class:`Limits` allows.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

import cv2
import numpy as np

from kvqe.errors import BadInputError
from kvqe.sdk.frame_source import FrameSource
from kvqe.sdk.images import IMAGE_SUFFIXES, decode_image
from kvqe.sdk.limits import DEFAULT_MAX_PIXELS, DEFAULT_TIMEOUT_S, Limits, imposed_fps
from kvqe.sdk.targets import resolve_target
from kvqe.sdk.video_files import capture_source, open_video


def open_source(
    source: object,
    *,
    fps: float | None = None,
    queue_size: int = 8,
    timeout: float | None = DEFAULT_TIMEOUT_S,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    protocols: Iterable[str] | str = (),
    demuxers: Iterable[str] | str = (),
) -> FrameSource:
    """Open a video/image path, URL, ``cv2.VideoCapture``, HxWx3 uint8 BGR array or iterable of them.

    ``fps`` overrides the container's frame rate. A ``cv2.VideoCapture`` given here is read from its
    current position and is not released on close (the caller owns it); so are iterators.
    ``timeout``: seconds to wait for the source to open and for each frame (None: no kvqe timeout);
    ``max_pixels``: largest frame accepted, checked before decoding (None: no cap); ``protocols``: URL
    schemes to read beyond :data:`NETWORK_SCHEMES` (e.g. ``["file"]`` for ``file://`` URLs); ``demuxers``:
    FFmpeg demuxers to open beyond those of single media files (e.g. ``["hls"]`` for a playlist you trust).
    """
    fps = imposed_fps(fps)
    limits = Limits.of(timeout, max_pixels, protocols, demuxers)
    if isinstance(source, (str, os.PathLike)):
        target = resolve_target(source, limits)
        if target.path is not None and target.path.suffix.lower() in IMAGE_SUFFIXES:
            image, conversion = decode_image(target.path, max_pixels=limits.max_pixels)
            source = FrameSource(target.name, iter([image]), fps=fps, frame_count=1, is_image=True,
                                 queue_size=queue_size, limits=limits)
            source.conversion = conversion
            return source
        return open_video(target, fps, queue_size, limits)
    if isinstance(source, cv2.VideoCapture):
        if not source.isOpened():
            raise BadInputError("<VideoCapture>: the cv2.VideoCapture given is not open; check what it opened")
        return capture_source(source, "<VideoCapture>", fps, queue_size, owned=False, limits=limits)
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


def _iterable_frames(items: Iterable[object], name: str, limits: Limits) -> Iterator[np.ndarray]:
    """Each item checked and copied: the frames are queued ahead, and a producer may reuse its buffer."""
    for index, item in enumerate(items):
        yield limits.frame(item, f"{name}: item {index}").copy()
