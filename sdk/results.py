"""Result types returned by the SDK: frozen values, free to share between threads."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sampling:
    """How a video's keyframes were chosen and read."""

    per_second: float  # the keyframe rate for videos short enough for the budget
    max_frames: int  # the budget: at most this many keyframes, spread over the whole video
    how: str  # "seek" (only the keyframes were decoded) or "sequential" (the video was decoded in order)


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


@dataclass(frozen=True)
class Segment:
    """The score of one window of a stream."""

    start_s: float
    end_s: float
    score: float
    frames: int


@dataclass(frozen=True)
class VideoResult:
    """What ``enhance_video`` wrote."""

    frames: int
    width: int
    height: int
    out_width: int
    out_height: int
    fps: float
