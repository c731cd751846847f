"""Result types returned by the SDK: frozen values, free to share between threads."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ScoreResult:
    """A video's quality score.

    ``score`` is in the bundle's ``output.score_range``. ``frame_scores`` holds one score per distinct
    sampled frame; when the model's sampling pads short videos (``repeat_last``), ``score`` is pooled over
    the padded sequence, exactly as the model was trained, so it can differ from the plain mean.
    """

    score: float
    frame_scores: list[float]
    frames: int
    source: str
    fps: float


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
