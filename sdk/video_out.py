"""Video output for ``enhance_video``: frames encoded by the ``ffmpeg`` command, with the input's audio and
subtitles, its exact frame rate and its colour description.

Why the ``ffmpeg`` command: it is the one tool here that has every encoder (x264, x265, libvpx, libaom,
SVT-AV1) and muxer, stream-copies audio and subtitles, and takes frame rates as exact fractions; the
installed ffmpeg is also what transcoding servers run. OpenCV's writer has no audio, no quality setting and
float rates only; PyAV is not a dependency, and its wheels bring their own FFmpeg build with its own set of
encoders. Frames go to ffmpeg's stdin as raw bgr24 from a writer thread through a short queue, so inference
does not wait on the encoder unless it falls that far behind, and memory stays bounded.

Quality: by default frames are written 4:4:4 at 10 bits per sample at a per-codec CRF chosen so that the
decoded frames are at least 45 dB PSNR (in BGR) from the model's output, the tolerance the export's FP16
gates allow. 4:2:0 alone cannot reach that (42-45 dB before any encoding on upscaled content, by the
decoder's chroma upsampling), and 10-bit 4:4:4 converts BGR exactly and compresses better than 8-bit 4:4:4.
Browsers and hardware decoders do not play 4:4:4 H.264/HEVC: ``chroma="420"`` writes 8-bit 4:2:0, which
every player decodes, for delivery.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import os
import queue
import re
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import IO, NoReturn, Self

import numpy as np

from kvqe.errors import BackendUnavailableError, BadInputError, KvqeError
from kvqe.files import atomic_output_file
from kvqe.sdk.ffmpeg_decode import MediaInfo, MediaStream, find_ffmpeg, find_ffprobe, local_input, probe
from kvqe.sdk.results import CarriedStream, VideoResult
from kvqe.sdk.sources import ASSUMED_FPS, FrameSource

_QUEUE_SIZE = 2  # enhanced frames waiting for the encoder
_POLL_S = 0.1
_STDERR_TAIL_LINES = 3
STDOUT = "-"


class VideoWriteError(KvqeError):
    """ffmpeg failed to write the output (its message says why)."""


@dataclass(frozen=True)
class Codec:
    """A video codec ``enhance_video`` writes."""

    encoders: tuple[str, ...]  # ffmpeg encoders, preferred first; the first installed one that takes the format
    crf: int  # default: >= 45 dB PSNR against the model's output at 4:4:4 (see the README's figures)
    max_crf: int
    options: dict[str, tuple[str, ...]] = field(default_factory=dict)  # per encoder


CODECS: dict[str, Codec] = {
    "h264": Codec(("libx264",), crf=3, max_crf=51),
    "hevc": Codec(("libx265",), crf=3, max_crf=51, options={"libx265": ("-x265-params", "log-level=error")}),
    # -b:v 0: constant quality (CRF alone); -cpu-used 4: libvpx's usual speed for files (0 is far slower)
    "vp9": Codec(("libvpx-vp9",), crf=7, max_crf=63,
                 options={"libvpx-vp9": ("-b:v", "0", "-row-mt", "1", "-cpu-used", "4")}),
    # SVT-AV1 is much faster but writes 4:2:0 only; libaom takes 4:4:4 (-cpu-used 6: its fastest file preset;
    # without look-ahead its quality holds steady frame to frame, with it a keyframe fell to 40 dB at the CRF
    # that kept the mean at 45)
    "av1": Codec(("libsvtav1", "libaom-av1"), crf=12, max_crf=63,
                 options={"libsvtav1": ("-preset", "8"),
                          "libaom-av1": ("-cpu-used", "6", "-row-mt", "1", "-lag-in-frames", "0")}),
}
CHROMAS = {"444": "yuv444p10le", "420": "yuv420p"}  # the pixel format written for each chroma choice
PIPE_FORMATS = {"y4m": "yuv4mpegpipe", "rawvideo": "rawvideo"}
_Y4M_PIX_FMTS = {"444": "yuv444p", "420": "yuv420p"}  # y4m's official 8-bit formats, which every reader takes
_TEXT_SUBTITLES = frozenset({"subrip", "srt", "ass", "ssa", "webvtt", "mov_text", "text"})


@dataclass(frozen=True)
class Container:
    """An output container: the codecs it takes and what becomes of the input's other streams.

    Audio in ``audio_copy`` and subtitles in ``subtitle_copy`` are stream-copied; other audio is encoded
    with the first installed of ``audio_encoders`` (encoder, codec); other text subtitles are converted to
    ``text_subtitles``; anything else (bitmap subtitles where only text fits) is refused, naming the stream.
    """

    muxer: str
    codecs: tuple[str, ...]  # the first is the default
    audio_copy: frozenset[str]
    audio_encoders: tuple[tuple[str, str], ...]
    subtitle_copy: frozenset[str]
    text_subtitles: str
    options: tuple[str, ...] = ()
    video_tags: dict[str, str] = field(default_factory=dict)  # codec -> tag (hvc1: what Apple players need)


_MP4_AUDIO = frozenset({"aac", "mp3", "ac3", "eac3", "alac", "opus"})
_MOV_AUDIO = frozenset({"aac", "mp3", "ac3", "eac3", "alac", "pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_s24be"})
_MKV_AUDIO = frozenset({"aac", "mp3", "mp2", "ac3", "eac3", "dts", "truehd", "flac", "opus", "vorbis", "alac",
                        "pcm_s16le", "pcm_s24le", "pcm_s32le", "pcm_f32le"})
_MKV_SUBTITLES = frozenset({"subrip", "ass", "ssa", "webvtt", "dvd_subtitle", "dvb_subtitle", "hdmv_pgs_subtitle"})
_FASTSTART = ("-movflags", "+faststart")  # the index first, so players start before the download ends
_MP4 = Container("mp4", ("h264", "hevc", "vp9", "av1"), _MP4_AUDIO, (("aac", "aac"),), frozenset({"mov_text"}),
                 "mov_text", _FASTSTART, {"hevc": "hvc1"})
CONTAINERS: dict[str, Container] = {
    ".mp4": _MP4,
    ".m4v": _MP4,
    ".mov": Container("mov", ("h264", "hevc"), _MOV_AUDIO, (("aac", "aac"),), frozenset({"mov_text"}), "mov_text",
                      _FASTSTART, {"hevc": "hvc1"}),
    ".mkv": Container("matroska", ("h264", "hevc", "vp9", "av1"), _MKV_AUDIO, (("flac", "flac"),), _MKV_SUBTITLES,
                      "subrip"),
    ".webm": Container("webm", ("vp9", "av1"), frozenset({"opus", "vorbis"}),
                       (("libopus", "opus"), ("libvorbis", "vorbis")), frozenset({"webvtt"}), "webvtt"),
}

# -colorspace name -> the scale filter's name of the same matrix; others are written as BT.709
_MATRICES = {"bt709": "bt709", "smpte170m": "smpte170m", "bt470bg": "bt470", "fcc": "fcc", "smpte240m": "smpte240m",
             "bt2020nc": "bt2020"}
_UNKNOWN = frozenset({"", "unknown", "reserved", "unspecified"})


@functools.cache
def _encoders(executable: str) -> frozenset[str]:
    """The names of the encoders ``executable`` has."""
    listing = subprocess.run([executable, "-hide_banner", "-encoders"], capture_output=True, check=False).stdout
    names = (line.split() for line in listing.decode(errors="replace").splitlines())
    return frozenset(words[1] for words in names if len(words) > 1 and len(words[0]) == 6)


@functools.cache
def _pix_fmts(executable: str, encoder: str) -> frozenset[str]:
    """The pixel formats ``encoder`` takes."""
    text = subprocess.run([executable, "-hide_banner", "-h", f"encoder={encoder}"], capture_output=True,
                          check=False).stdout.decode(errors="replace")
    match = re.search(r"Supported pixel formats:([^\n]*)", text)
    return frozenset(match.group(1).split()) if match else frozenset()


def _ffmpeg() -> str:
    executable = find_ffmpeg()
    if executable is None:
        raise BackendUnavailableError("video output needs the ffmpeg command, which is not installed here; "
                                      "install it (e.g. apt-get install ffmpeg) or write images instead")
    return executable


def _choice(value: object, choices: Iterable[str], what: str) -> str:
    names = sorted(choices)
    if not isinstance(value, str) or value not in names:
        raise BadInputError(f"{what} must be one of {', '.join(names)}, got {value!r}")
    return value


def _encoder(executable: str, codec: str, pix_fmt: str, chroma: str) -> str:
    """The first installed encoder of ``codec`` that takes ``pix_fmt``; BackendUnavailableError naming them."""
    candidates = CODECS[codec].encoders
    installed = [e for e in candidates if e in _encoders(executable)]
    if not installed:
        raise BackendUnavailableError(
            f"this ffmpeg has no {codec} encoder ({' or '.join(candidates)}; see `ffmpeg -encoders`); install an "
            f"ffmpeg built with one, or choose another codec: {', '.join(sorted(set(CODECS) - {codec}))}")
    for encoder in installed:
        if pix_fmt in _pix_fmts(executable, encoder):
            return encoder
    raise BackendUnavailableError(
        f"{' and '.join(installed)} cannot write {codec} in {chroma[0]}:{chroma[1]}:{chroma[2]} ({pix_fmt}); "
        "use chroma 420, or install an ffmpeg whose encoders take it"
        + (" (libaom-av1 writes AV1 4:4:4)" if codec == "av1" else ""))


def _crf(value: object, codec: str) -> int:
    top = CODECS[codec].max_crf
    if value is None:
        return CODECS[codec].crf
    if not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= top):
        raise BadInputError(f"crf for {codec} must be an integer from 0 (best) to {top}, got {value!r}")
    return value


def frame_rate(value: float | Fraction) -> Fraction:
    """An exact rate from a number: 30000/1001 from 29.97002997..., 25 from 25.0 (the nearest fraction with a
    denominator up to 1001, which every broadcast rate has)."""
    return Fraction(value).limit_denominator(1001)


@dataclass(frozen=True)
class Colour:
    """How BGR frames become YUV and how the output says so: the input's matrix, range, primaries and
    transfer when it declares them; an undeclared matrix is written (and declared) as BT.709, so that every
    decoder converts the frames back the same way (untagged, ffmpeg assumes BT.601 and players BT.709)."""

    matrix: str = "bt709"  # a -colorspace name, one of _MATRICES
    range: str = "tv"  # "tv" (limited) or "pc" (full)
    primaries: str | None = None
    transfer: str | None = None

    @classmethod
    def of(cls, stream: MediaStream | None) -> Colour:
        fields = stream.fields if stream is not None else {}

        def known(key: str) -> str | None:
            value = fields.get(key, "")
            return None if value in _UNKNOWN else value

        matrix = known("color_space")
        return cls(matrix if matrix in _MATRICES else "bt709", "pc" if known("color_range") == "pc" else "tv",
                   known("color_primaries"), known("color_transfer"))

    def filter(self, pix_fmt: str) -> str:
        """The filter converting bgr24 to ``pix_fmt`` with this matrix and range, rounding accurately."""
        return (f"scale=out_color_matrix={_MATRICES[self.matrix]}:out_range={self.range}:"
                f"flags=accurate_rnd+full_chroma_int,format={pix_fmt}")

    def options(self) -> list[str]:
        """The encoder options that declare it."""
        tags = ["-colorspace", self.matrix, "-color_range", self.range]
        if self.primaries:
            tags += ["-color_primaries", self.primaries]
        if self.transfer:
            tags += ["-color_trc", self.transfer]
        return tags


@dataclass(frozen=True)
class VideoOutput:
    """Where and how ``enhance_video`` writes, checked before any frame is decoded: a file (its container
    from its suffix) or stdout (``-``) as y4m or raw bgr24."""

    path: Path | None  # None: stdout
    format: str  # the ffmpeg muxer
    chroma: str
    pix_fmt: str
    container: Container | None = None  # None: a pipe
    codec: str = ""  # "" for a pipe
    encoder: str = ""
    crf: int | None = None
    executable: str | None = None  # None: raw frames need no ffmpeg

    @classmethod
    def of(cls, output: str | os.PathLike[str], codec: str | None = None, crf: int | None = None,
           chroma: str = "444", format: str | None = None) -> VideoOutput:
        """The output for ``enhance_video``'s arguments; BadInputError for a combination that cannot be
        written, BackendUnavailableError when ffmpeg or the codec's encoder is missing."""
        chroma = _choice(chroma, CHROMAS, "chroma")
        if os.fspath(output) == STDOUT:
            if codec is not None or crf is not None:
                raise BadInputError("codec and crf apply to video files; '-' writes uncompressed y4m or rawvideo")
            pipe = _choice("y4m" if format is None else format, PIPE_FORMATS, "format")
            if pipe == "rawvideo":
                return cls(None, "rawvideo", chroma, "bgr24")
            return cls(None, PIPE_FORMATS[pipe], chroma, _Y4M_PIX_FMTS[chroma], executable=_ffmpeg())
        path = Path(output)
        if format is not None:
            raise BadInputError(f"{path}: format= applies to '-' (stdout); a file's format comes from its suffix")
        container = CONTAINERS.get(path.suffix.lower())
        if container is None:
            raise BadInputError(f"{path}: unsupported video container; use one of {', '.join(sorted(CONTAINERS))} "
                                "(or '-' for y4m or raw frames on stdout)")
        codec = _choice(container.codecs[0] if codec is None else codec, CODECS, "codec")
        if codec not in container.codecs:
            raise BadInputError(f"{path}: {path.suffix.lower()} takes {' or '.join(container.codecs)} video, not "
                                f"{codec}; choose one of those codecs or another container (.mp4 and .mkv take "
                                f"{', '.join(_MP4.codecs)})")
        executable = _ffmpeg()
        pix_fmt = CHROMAS[chroma]
        return cls(path, container.muxer, chroma, pix_fmt, container, codec,
                   _encoder(executable, codec, pix_fmt, chroma), _crf(crf, codec), executable)

    def carried(self, info: MediaInfo | None, name: str) -> tuple[CarriedStream, ...]:
        """What becomes of the input's audio and subtitle streams (none for a pipe: video only);
        BadInputError naming a stream this container cannot take in any form."""
        streams = [s for s in info.streams if s.kind in ("audio", "subtitle")] if info is not None else []
        return tuple(self._carry(stream, name) for stream in streams)

    def _carry(self, stream: MediaStream, name: str) -> CarriedStream:
        container = self.container
        if container is None:
            return CarriedStream(stream.index, stream.kind, stream.codec, None)
        if stream.kind == "audio":
            if stream.codec in container.audio_copy:
                return CarriedStream(stream.index, "audio", stream.codec, stream.codec)
            encoders = _encoders(self.executable or "")
            for encoder, codec in container.audio_encoders:
                if encoder in encoders:
                    return CarriedStream(stream.index, "audio", stream.codec, codec, encoder)
            raise BackendUnavailableError(
                f"{name}: its audio stream #{stream.index} ({stream.codec}) needs encoding for {container.muxer}, "
                f"and this ffmpeg has none of {', '.join(e for e, _ in container.audio_encoders)}")
        if stream.codec in container.subtitle_copy:
            return CarriedStream(stream.index, "subtitle", stream.codec, stream.codec)
        if stream.codec in _TEXT_SUBTITLES:
            return CarriedStream(stream.index, "subtitle", stream.codec, container.text_subtitles,
                                 container.text_subtitles)
        raise BadInputError(
            f"{name}: its subtitle stream #{stream.index} ({stream.codec or 'unknown codec'}) cannot go into "
            f"{self.path.suffix if self.path else 'this output'}; write .mkv, which takes bitmap subtitles, or "
            f"leave the stream out first: ffmpeg -i IN -map 0 -map -0:{stream.index} -c copy OUT")

    def check_size(self, size: tuple[int, int]) -> None:
        """BadInputError when frames of ``size`` cannot be written in this pixel format (4:2:0 halves the
        chroma planes, so it needs even sizes; 4:4:4 takes any)."""
        if self.pix_fmt.startswith("yuv420") and (size[0] % 2 or size[1] % 2):
            raise BadInputError(f"{self.path or 'stdout'}: 4:2:0 video needs an even width and height, and the "
                                f"enhanced frames are {size[0]}x{size[1]}; use chroma 444, which takes any size")

    @contextlib.contextmanager
    def target(self) -> Iterator[Path | None]:
        """The file ffmpeg writes (the hidden temporary sibling that becomes ``path`` when the block
        succeeds), or None for stdout."""
        if self.path is None:
            yield None
            return
        with atomic_output_file(self.path) as tmp:
            yield tmp

    def command(self, tmp: Path | None, size: tuple[int, int], rate: Fraction, colour: Colour,
                source: Path | None, streams: tuple[CarriedStream, ...], offset: float) -> list[str]:
        """The ffmpeg command reading bgr24 frames of ``size`` at ``rate`` on stdin (its first frame shown
        ``offset`` seconds into ``source``, whose ``streams`` it maps) and writing ``tmp`` or stdout."""
        assert self.executable is not None
        frames = ["-f", "rawvideo", "-pixel_format", "bgr24", "-video_size", f"{size[0]}x{size[1]}",
                  "-framerate", f"{rate.numerator}/{rate.denominator}",
                  *(["-itsoffset", f"{offset:.6f}"] if offset else []), "-i", "pipe:0"]
        mapped = [s for s in streams if s.written_as is not None]
        inputs = local_input(source) if mapped and source is not None else []
        maps = ["-map", "0:v:0"]
        codecs = ["-c:v", self.encoder] if self.encoder else []
        for out, stream in enumerate(mapped, start=1):
            maps += ["-map", f"1:{stream.index}"]
            codecs += [f"-c:{out}", stream.encoder or "copy"]
        video = ["-vf", colour.filter(self.pix_fmt), *codecs, *colour.options(), "-fps_mode", "passthrough"]
        if self.encoder:
            assert self.container is not None and self.crf is not None
            codec = CODECS[self.codec]
            video += ["-crf", str(self.crf), *codec.options.get(self.encoder, ())]
            if tag := self.container.video_tags.get(self.codec):
                video += ["-tag:v", tag]
        muxer = [*(self.container.options if self.container else ()), "-f", self.format]
        output = [str(tmp)] if tmp is not None else ["pipe:1"]
        return [self.executable, "-nostdin", "-hide_banner", "-v", "error", "-y", *frames, *inputs, *maps, *video,
                *muxer, *output]


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
