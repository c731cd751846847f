"""The runtime face of a bundle: ``score()`` / ``stream()`` for VQA, ``enhance()`` / ``enhance_video()`` for SR."""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import cv2
import numpy as np

from kvqe.bundle import Artifact, Bundle
from kvqe.errors import BadInputError, KvqeError
from kvqe.files import atomic_output_file
from kvqe.runtimes.base import Runner
from kvqe.sdk.pipeline import PipelineRunner
from kvqe.sdk.preprocess import postprocess_sr_output, preprocess_sr_image, preprocess_vqa_frame
from kvqe.sdk.results import ScoreResult, Segment, VideoResult
from kvqe.sdk.sampling import pad_to_max, select_keyframes, windowed_keyframes
from kvqe.sdk.sources import ASSUMED_FPS, FrameSource, check_frame, open_source, read_image
from kvqe.sdk.tiling import ExactTiler, TileSettings, enhance_tiled


def _open(source: Any, fps: float | None) -> FrameSource:
    """An already-open FrameSource (e.g. a raw pipe) as is, anything else through ``open_source``."""
    return source if isinstance(source, FrameSource) else open_source(source, fps=fps)


_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}


class Model:
    """A bundle loaded on one backend. Use :func:`kvqe.load` to get one."""

    def __init__(self, bundle: Bundle, artifact: Artifact, runner: Runner,
                 stages: Mapping[str, Artifact] | None = None) -> None:
        """``artifact``: the one that runs, or a pipeline's stage at the chosen precision; ``stages``: every
        stage's artifact of a pipeline bundle (``runner`` composes them)."""
        self.bundle = bundle
        self.artifact = artifact
        self.stages: dict[str, Artifact] = dict(stages) if stages else {artifact.stage: artifact}
        self.runner = runner.load()
        self.input_spec = bundle.input_spec
        self.output_spec = bundle.output_spec

    @property
    def task(self) -> str:
        return self.bundle.task

    @property
    def name(self) -> str:
        return self.bundle.model_name

    @property
    def backend(self) -> str:
        return self.artifact.backend

    @property
    def precision(self) -> str:
        return self.artifact.precision

    def close(self) -> None:
        self.runner.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Model({self.name!r}, task={self.task}, backend={self.backend}, precision={self.precision})"

    # -- VQA ---------------------------------------------------------------------------------------
    def _require(self, task: str, call: str) -> None:
        if self.task != task:
            other = "score()/stream()" if self.task == "vqa" else "enhance()/enhance_video()"
            raise KvqeError(f"{call} needs a {task} model, but {self.name!r} is a {self.task} model; use {other}")

    def _frame_scores(self, images: list[np.ndarray]) -> list[float]:
        batch = np.stack([preprocess_vqa_frame(image, self.input_spec) for image in images])
        return [float(v) for v in self.runner.run(batch).reshape(len(images))]

    def _clip(self, value: float) -> float:
        low, high = self.output_spec["score_range"]
        return float(min(max(value, low), high))

    def score(self, source: Any, *, fps: float | None = None) -> ScoreResult:
        """Score a video (path, URL, ``cv2.VideoCapture``, iterable of BGR frames) or one image.

        ``fps`` overrides the source's frame rate; sources that have none assume 30.
        """
        self._require("vqa", "score()")
        sampling = self.input_spec["sampling"]
        with _open(source, fps) as frames:
            rate = frames.fps or ASSUMED_FPS
            keyframes = select_keyframes(frames, rate, sampling, frames.frame_count)
            name = frames.name
        scores = self._frame_scores([frame.image for frame in keyframes])
        pooled = pad_to_max(scores, sampling)
        return ScoreResult(
            score=self._clip(float(np.mean(pooled))), frame_scores=scores, frames=len(scores), source=name, fps=rate
        )

    def stream(self, source: Any, *, window_s: float = 1.0, fps: float | None = None) -> Iterator[Segment]:
        """Score a live or long source window by window with bounded memory, yielding as it goes."""
        self._require("vqa", "stream()")
        if window_s <= 0:
            raise BadInputError(f"window_s must be positive, got {window_s}")
        per_second = float(self.input_spec["sampling"].get("per_second", 1))
        with _open(source, fps) as frames:
            rate = frames.fps or ASSUMED_FPS
            for window in windowed_keyframes(frames, rate, window_s, per_second):
                scores = self._frame_scores([frame.image for frame in window.frames])
                yield Segment(window.start_s, window.end_s, self._clip(float(np.mean(scores))), len(scores))

    # -- SR ----------------------------------------------------------------------------------------
    @property
    def scale(self) -> int:
        return int(self.output_spec["scale"])

    def tile_settings(self, tile: int | None = None, tile_pad: int | None = None,
                      pre_pad: int | None = None) -> TileSettings:
        """The bundle's tiling defaults, overridden by any argument given."""
        defaults = self.input_spec.get("tile", {})
        max_tile = min((bound for a in self.stages.values() if (bound := a.record.get("export", {}).get("max_tile"))),
                       default=None)
        if max_tile and tile is not None and not 0 < tile <= max_tile:
            raise BadInputError(f"this {self.backend} artifact takes tiles of at most {max_tile} pixels, got {tile}")
        return TileSettings(
            tile=(max_tile or defaults.get("size", 0)) if tile is None else tile,
            tile_pad=defaults.get("pad", 10) if tile_pad is None else tile_pad,
            pre_pad=defaults.get("pre_pad", 0) if pre_pad is None else pre_pad,
            blend=bool(defaults.get("blend", False)),
        )

    def enhance(self, image: np.ndarray | str | os.PathLike[str], *, tile: int | None = None,
                tile_pad: int | None = None, pre_pad: int | None = None) -> np.ndarray:
        """HxWx3 uint8 BGR (or an image path) -> (H*scale)x(W*scale)x3 uint8 BGR."""
        self._require("sr", "enhance()")
        settings = self.tile_settings(tile, tile_pad, pre_pad)
        if isinstance(image, (str, os.PathLike)):
            image = read_image(image)
        bgr = check_frame(image, "image")
        chw = preprocess_sr_image(bgr, self.input_spec)
        return enhance_tiled(
            chw, self.runner.run, self.scale, settings,
            lambda out: postprocess_sr_output(out, self.input_spec, self.output_spec),
            run_at=self.runner.run_at if isinstance(self.runner, PipelineRunner) else None,
            exact=self.runner if isinstance(self.runner, ExactTiler) else None,
        )

    def enhance_video(self, source: Any, output: str | os.PathLike[str], *, tile: int | None = None,
                      fps: float | None = None,
                      progress: Callable[[int, int | None], None] | None = None) -> VideoResult:
        """Enhance a video frame by frame into ``output``, keeping its fps and frame count.

        The file appears at ``output`` only when every frame is written. ``progress(done, total)`` is
        called after each frame (``total`` is the container's frame count, or None).
        """
        self._require("sr", "enhance_video()")
        target = Path(output)
        fourcc = _FOURCC.get(target.suffix.lower())
        if fourcc is None:
            raise BadInputError(f"{target}: unsupported video container; use one of {', '.join(sorted(_FOURCC))}")
        written, in_size = 0, (0, 0)
        with _open(source, fps) as frames, atomic_output_file(target) as tmp:
            rate = frames.fps or ASSUMED_FPS
            writer: cv2.VideoWriter | None = None
            try:
                for frame in frames:
                    result = self.enhance(frame.image, tile=tile)
                    if writer is None:
                        in_size = (frame.image.shape[1], frame.image.shape[0])
                        size = (result.shape[1], result.shape[0])
                        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*fourcc), rate, size)
                        if not writer.isOpened():
                            raise KvqeError(f"{target}: OpenCV cannot write {fourcc} video here")
                    writer.write(result)
                    written += 1
                    if progress is not None:
                        progress(written, frames.frame_count)
            finally:
                if writer is not None:
                    writer.release()
        return VideoResult(written, *in_size, in_size[0] * self.scale, in_size[1] * self.scale, rate)
