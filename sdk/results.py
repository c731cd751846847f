"""Result types returned by the SDK: frozen values, free to share between threads."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sampling:
    """How a video's keyframes were chosen and read."""

    per_second: float  # the keyframe rate for videos short enough for the budget
    max_frames: int  # the budget: at most this many keyframes, spread over the whole video
    # "seek" (only the keyframes were decoded), "sequential" (the video was decoded in order) or "stream" (a
    # network source that declares no length, scored over what it delivered)
    how: str


@dataclass(frozen=True)
class ScoreResult:
    """A video's quality score.

    ``score`` is in the bundle's ``output.score_range``. ``frame_scores`` holds one score per distinct
    sampled frame, ``frame_times`` its time in seconds (the container's timestamp when it has one) and
    ``frame_indices`` its decode index; when the model's sampling pads short videos (``repeat_last``),
    ``score`` is pooled over the padded sequence, exactly as the model was trained, so it can differ from the
    plain mean. ``duration_s``: the video's length (its frame count over ``fps``), None for an image;
    ``codec``: the codec's name ("h264", "hevc", "vp9", "av1", "rawvideo", ...), "" when unknown (frames
    given as arrays). ``fps`` is the rate the keyframes were chosen by (30 when the source has none).
    """

    score: float
    frame_scores: list[float]
    frames: int
    source: str
    fps: float
    frame_times: list[float] = field(default_factory=list)
    frame_indices: list[int] = field(default_factory=list)
    duration_s: float | None = None
    width: int = 0
    height: int = 0
    codec: str = ""
    sampling: Sampling | None = None
    conversion: str = ""  # an image file's conversion to 8-bit BGR ("grey to BGR", "CMYK to BGR", ...)


@dataclass(frozen=True)
class Segment:
    """The score of one window of a stream."""

    start_s: float
    end_s: float
    score: float
    frames: int


@dataclass(frozen=True)
class CarriedStream:
    """An audio or subtitle stream of ``enhance_video``'s input, and what the output holds of it."""

    index: int  # the stream's index in the input
    kind: str  # "audio" or "subtitle"
    codec: str  # the input's codec
    written_as: str | None  # the output's codec (the same when stream-copied); None: not written (a pipe)
    encoder: str | None = None  # the ffmpeg encoder that converted it, None when stream-copied

    @property
    def copied(self) -> bool:
        return self.written_as is not None and self.encoder is None


@dataclass(frozen=True)
class VideoResult:
    """What ``enhance_video`` wrote.

    ``frame_rate``: the exact rate as "num/den" (``fps`` is the same as a float); ``codec``, ``encoder``,
    ``crf``: the video codec, the ffmpeg encoder and its quality ("" and None for a pipe); ``pix_fmt``: the
    frames' pixel format in the output; ``format``: the ffmpeg muxer ("mp4", "matroska", "yuv4mpegpipe",
    "rawvideo", ...); ``streams``: the input's audio and subtitle streams and what became of each.
    """

    frames: int
    width: int
    height: int
    out_width: int
    out_height: int
    fps: float
    frame_rate: str
    codec: str
    encoder: str
    crf: int | None
    pix_fmt: str
    format: str
    streams: tuple[CarriedStream, ...] = ()
