"""Where and how ``enhance_video`` writes (:class:`VideoOutput`), checked before any frame is decoded: a file
in a container its suffix names, with the input's audio and subtitles carried as that container takes
them, or stdout (``-``) as y4m or raw bgr24; and the ffmpeg command that writes it."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from kvqe.errors import BackendUnavailableError, BadInputError
from kvqe.files import atomic_output_file
from kvqe.sdk.encoders import (
    CHROMAS,
    CODECS,
    Colour,
    check_crf,
    choose_encoder,
    ffmpeg_executable,
    installed_encoders,
)
from kvqe.sdk.ffmpeg_decode import MediaInfo, MediaStream, local_input
from kvqe.sdk.results import CarriedStream

STDOUT = "-"
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


def _choice(value: object, choices: Iterable[str], what: str) -> str:
    """``value`` when it is one of ``choices``, else BadInputError listing them."""
    names = sorted(choices)
    if not isinstance(value, str) or value not in names:
        raise BadInputError(f"{what} must be one of {', '.join(names)}, got {value!r}")
    return value


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
           chroma: str | None = None, format: str | None = None) -> VideoOutput:
        """The output for ``enhance_video``'s arguments; BadInputError for a combination that cannot be
        written, BackendUnavailableError when ffmpeg or the codec's encoder is missing. ``chroma`` None: 4:2:0
        for a file (it plays everywhere), 4:4:4 for stdout (the next tool gets the model's frames)."""
        to_stdout = os.fspath(output) == STDOUT
        chroma = _choice(("444" if to_stdout else "420") if chroma is None else chroma, CHROMAS, "chroma")
        if to_stdout:
            if codec is not None or crf is not None:
                raise BadInputError("codec and crf apply to video files; '-' writes uncompressed y4m or rawvideo")
            pipe = _choice("y4m" if format is None else format, PIPE_FORMATS, "format")
            if pipe == "rawvideo":
                return cls(None, "rawvideo", chroma, "bgr24")
            return cls(None, PIPE_FORMATS[pipe], chroma, _Y4M_PIX_FMTS[chroma], executable=ffmpeg_executable())
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
        executable = ffmpeg_executable()
        pix_fmt = CHROMAS[chroma]
        return cls(path, container.muxer, chroma, pix_fmt, container, codec,
                   choose_encoder(executable, codec, pix_fmt, chroma), check_crf(crf, codec, chroma), executable)

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
            encoders = installed_encoders(self.executable or "")
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
                                f"enhanced frames are {size[0]}x{size[1]}; write 4:4:4 (--master, or chroma "
                                "444), which takes any size")

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
