"""Frames written to video: :func:`write_video` enhances each frame of a source into a
:class:`~kvqe.sdk.video_out.VideoOutput` through a :class:`VideoWriter`, which feeds the ``ffmpeg`` command
(or stdout) from a thread of its own.

Why the ``ffmpeg`` command: it is the one tool here that has every encoder (x264, x265, libvpx, libaom,
SVT-AV1) and muxer, stream-copies audio and subtitles, and takes frame rates as exact fractions; the
installed ffmpeg is also what transcoding servers run. OpenCV's writer has no audio, no quality setting and
float rates only; PyAV is not a dependency, and its wheels bring their own FFmpeg build with its own set of
encoders. Frames go to ffmpeg's stdin as raw bgr24 from a writer thread through a short queue, so inference
does not wait on the encoder unless it falls that far behind, and memory stays bounded.
"""
from __future__ import annotations

import contextlib
import errno
import os
import queue
import subprocess
import tempfile
import threading
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import IO, NoReturn, Self

import numpy as np

from kvqe.errors import BackendUnavailableError, KvqeError
from kvqe.sdk.encoders import Colour, frame_rate
from kvqe.sdk.ffmpeg_decode import MediaInfo, find_ffprobe, probe
from kvqe.sdk.frame_source import FrameSource
from kvqe.sdk.frames import ASSUMED_FPS
from kvqe.sdk.results import CarriedStream, VideoResult
from kvqe.sdk.video_out import VideoOutput

_QUEUE_SIZE = 2  # enhanced frames waiting for the encoder
_POLL_S = 0.1
_STDERR_TAIL_LINES = 3


class VideoWriteError(KvqeError):
    """ffmpeg failed to write the output (its message says why)."""


class VideoWriter:
    """Frames written from a thread of their own, through a short queue, to ffmpeg's stdin (``command``) or,
    raw, to stdout (``command`` None). A context manager: leaving it without :meth:`finish` (an error, a
    signal, KeyboardInterrupt) kills ffmpeg and waits for it."""

    def __init__(self, command: list[str] | None, name: str) -> None:
        self.name = name
        self._queue: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=_QUEUE_SIZE)
        self._error: BaseException | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._to_stdout = command is None or command[-1] == "pipe:1"
        if command is None:
            self._sink: IO[bytes] = open(1, "wb", closefd=False)  # noqa: SIM115 (closed by the thread)
        else:
            self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed on leaving the context)
            self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=self._stderr,
                                             stdout=None if self._to_stdout else subprocess.DEVNULL)
            assert self._process.stdin is not None
            self._sink = self._process.stdin
        self._finished = False
        self._thread = threading.Thread(target=self._drain, name=f"kvqe-encoder {name}", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        try:
            while (frame := self._queue.get()) is not None:
                self._sink.write(frame.reshape(-1).data)
            self._sink.flush()
        except BaseException as exc:  # noqa: BLE001 (handed to the caller's thread)
            self._error = exc
        finally:
            with contextlib.suppress(OSError):
                self._sink.close()

    def write(self, frame: np.ndarray) -> None:
        """Queue one HxWx3 uint8 BGR frame; waits while the queue is full, raises if writing failed."""
        frame = np.ascontiguousarray(frame)
        while True:
            self._check()
            try:
                self._queue.put(frame, timeout=_POLL_S)
                return
            except queue.Full:
                pass

    def _check(self) -> None:
        if self._error is not None or not self._thread.is_alive():
            self._thread.join()
            self._fail()

    def finish(self) -> None:
        """Write what is queued, end the stream and wait for ffmpeg; VideoWriteError if it failed."""
        while self._thread.is_alive():
            try:
                self._queue.put(None, timeout=_POLL_S)
                break
            except queue.Full:
                pass
        self._thread.join()
        if self._error is not None:
            self._fail()
        if self._process is not None and self._process.wait() != 0:
            self._fail()
        self._finished = True

    def _fail(self) -> NoReturn:
        """Raise what went wrong: ffmpeg's own message when it failed, BrokenPipeError when stdout's reader
        went away."""
        if self._process is None:
            if isinstance(self._error, BrokenPipeError):
                raise BrokenPipeError(errno.EPIPE, "stdout was closed")
            raise VideoWriteError(f"{self.name}: writing frames to stdout failed: {self._error}") from self._error
        self.kill()
        errors = self.errors()
        if self._to_stdout and "Broken pipe" in errors:
            raise BrokenPipeError(errno.EPIPE, "stdout was closed")
        raise VideoWriteError(
            f"{self.name}: ffmpeg failed to write the video (exit status {self._process.returncode}): {errors}")

    def kill(self) -> None:
        """Stop ffmpeg and the thread: kill, wait, unblock and join."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
        if self._process is not None:
            self._process.wait()
        while not self._queue.empty():
            self._queue.get_nowait()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        self._thread.join(timeout=5.0)

    def errors(self) -> str:
        """The last lines ffmpeg wrote to stderr."""
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        lines = self._stderr.read().decode(errors="replace").strip().splitlines()
        return " | ".join(lines[-_STDERR_TAIL_LINES:]) or "no error message"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._finished:
            self.kill()
        if self._stderr is not None:
            self._stderr.close()


def _probe(source: object, frames: FrameSource, timeout: float | None, needed: bool) -> tuple[MediaInfo | None, Path | None]:
    """The streams of a local video file and its path; (None, None) for anything else (URLs, arrays,
    captures, iterables). ``needed``: ffprobe must be there (the output carries the streams it finds)."""
    if frames.is_image or not isinstance(source, (str, os.PathLike)) or not os.path.lexists(source):
        return None, None
    executable = find_ffprobe()
    if executable is None:
        if needed:
            raise BackendUnavailableError("video output needs the ffprobe command (it comes with ffmpeg) to carry "
                                          "the input's frame rate, audio and subtitles; install ffmpeg's tools")
        return None, None
    return probe(executable, source, frames.name, timeout), Path(source)


def _rate(fps: float | None, info: MediaInfo | None, frames: FrameSource) -> Fraction:
    """``fps`` when given, else the file's exact rate, else the source's, else 30."""
    if fps is not None:
        return frame_rate(fps)
    stream_rate = info.video.rate() if info is not None and info.video is not None else None
    return stream_rate or frame_rate(frames.fps or ASSUMED_FPS)


def _offset(info: MediaInfo | None, streams: tuple[CarriedStream, ...]) -> float:
    """Seconds from the file's start to its first video frame, kept so that copied audio stays in sync."""
    video = info.video if info is not None else None
    start = video.seconds("start_time") if video is not None else None
    if info is None or start is None or not any(s.written_as for s in streams):
        return 0.0
    return max(0.0, start - info.start_time)


def write_video(frames: FrameSource, enhance: Callable[[np.ndarray], np.ndarray], out: VideoOutput, *,
                source: object, fps: float | None, timeout: float | None,
                progress: Callable[[int, int | None], None] | None = None) -> VideoResult:
    """Enhance every frame of ``frames`` into ``out``, with the audio and subtitles of ``source`` when it is
    a local file; the output appears only when ffmpeg wrote every frame and exited cleanly."""
    info, path = _probe(source, frames, timeout, needed=out.executable is not None)
    streams = out.carried(info, frames.name)
    rate = _rate(fps, info, frames)
    colour = Colour.of(info.video if info is not None else None)
    written, in_size, out_size = 0, (0, 0), (0, 0)
    with out.target() as tmp, contextlib.ExitStack() as stack:
        writer: VideoWriter | None = None
        for frame in frames:
            result = enhance(frame.image)
            if writer is None:
                in_size, out_size = (frame.image.shape[1], frame.image.shape[0]), (result.shape[1], result.shape[0])
                out.check_size(out_size)
                command = out.command(tmp, out_size, rate, colour, path, streams, _offset(info, streams)) \
                    if out.executable else None
                writer = stack.enter_context(VideoWriter(command, frames.name))
            writer.write(result)
            written += 1
            if progress is not None:
                progress(written, frames.frame_count)
        if writer is not None:
            writer.finish()
    return VideoResult(written, *in_size, *out_size, float(rate), f"{rate.numerator}/{rate.denominator}", out.codec,
                       out.encoder, out.crf, out.pix_fmt, out.format, streams)
