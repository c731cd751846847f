"""The runtime face of a bundle: ``score()`` / ``stream()`` for VQA, ``enhance()`` / ``enhance_video()`` for SR.

Every call bounds what its source may cost (``timeout``, ``max_pixels``, ``protocols``, ``demuxers``: see
:class:`kvqe.sdk.limits.Limits`), decodes through a short queue, and refuses a model output that is not
finite (a broken or tampered model) instead of turning it into a score or an image.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, Self

import cv2
import numpy as np

from kvqe.bounds import SECONDS, TILE, checked, checked_int
from kvqe.bundle import Artifact, Bundle
from kvqe.errors import BadInputError, BundleError, ModelClosedError, UnscorableError
from kvqe.files import check_output_path
from kvqe.interrupt import interruptible
from kvqe.runtimes.base import Runner
from kvqe.sdk.frame_source import FrameSource
from kvqe.sdk.frames import ASSUMED_FPS
from kvqe.sdk.images import read_image
from kvqe.sdk.limits import DEFAULT_MAX_PIXELS, DEFAULT_TIMEOUT_S, Limits
from kvqe.sdk.preprocess import (
    check_scorable,
    normalise,
    postprocess_sr_output,
    preprocess_sr_image,
    vqa_geometry,
)
from kvqe.sdk.results import Sampling, ScoreResult, Segment, VideoResult
from kvqe.sdk.sampling import (
    keyframe_index,
    keyframe_plan,
    pad_to_max,
    sampling_spec,
    select_keyframes,
    windowed_keyframes,
    worth_seeking,
)
from kvqe.sdk.sources import open_source
from kvqe.sdk.tiling import (
    SR_MEMORY_BUDGET_MB,
    ExactTiler,
    PositionedRunner,
    TileSettings,
    budget_tile,
    enhance_tiled,
)
from kvqe.sdk.video_out import VideoOutput
from kvqe.sdk.video_writer import write_video
from kvqe.specs import Tile

_QUEUE_SIZE = 2  # decoded frames waiting for the model: the decoder only needs to stay one frame ahead


def _open(source: Any, fps: float | None, timeout: float | None, max_pixels: int | None,
          protocols: Iterable[str] | str, demuxers: Iterable[str] | str) -> FrameSource:
    """An already-open FrameSource (e.g. a raw pipe) as is, anything else through ``open_source``."""
    if isinstance(source, FrameSource):
        return source
    return open_source(source, fps=fps, queue_size=_QUEUE_SIZE, timeout=timeout, max_pixels=max_pixels,
                       protocols=protocols, demuxers=demuxers)


_CALLS = {"vqa": "score()/stream()", "sr": "enhance()/enhance_video()"}  # what each task's model offers


class Model:
    """A bundle loaded on one backend. Use :func:`kvqe.load` to get one.

    Thread safety: one Model may be shared by any number of threads; ``score``, ``stream``, ``enhance`` and
    ``enhance_video`` may run concurrently and each returns what it would alone (every runner is safe to
    share, see :class:`kvqe.runtimes.base.Runner`). ``close`` must not race with a call in flight.
    """

    def __init__(self, bundle: Bundle, artifact: Artifact, runner: Runner,
                 stages: Mapping[str, Artifact] | None = None) -> None:
        """``artifact``: the one that runs, or a pipeline's stage at the chosen precision; ``stages``: every
        stage's artifact of a pipeline bundle (``runner`` composes them)."""
        self.bundle = bundle
        self.artifact = artifact
        self.stages: dict[str, Artifact] = dict(stages) if stages else {artifact.stage: artifact}
        self.runner = runner.load()
        self.closed = False
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
        """Release the backend's model; any later call raises ModelClosedError."""
        self.runner.close()
        self.closed = True

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
        if self.closed:
            raise ModelClosedError(f"{self.name}: {call} on a closed model; load the bundle again with kvqe.load()")
        if self.task != task:
            raise BadInputError(f"{call} needs a {task} model, but {self.name!r} is a {self.task} model; "
                                f"use {_CALLS[self.task]}")

    def _finite(self, values: np.ndarray, what: str) -> np.ndarray:
        """``values``, or BundleError if any is NaN or infinite: a model that produces them is broken."""
        if not np.isfinite(values).all():
            raise BundleError(
                f"{self.name} ({self.backend}/{self.precision}) produced non-finite values (NaN or infinity) for "
                f"{what}; the bundle may be corrupt or tampered with: check it with `kvqe info` and "
                "`kvqe verify`, or reinstall it"
            )
        return values

    def _reducer(self, name: str) -> Callable[[np.ndarray], np.ndarray]:
        """A chosen frame -> the uint8 image the model sees (kept instead of the full frame); UnscorableError
        for a frame below the bundle's minimum."""

        def reduce(image: np.ndarray) -> np.ndarray:
            check_scorable(image.shape[1], image.shape[0], self.input_spec, name)
            try:
                return vqa_geometry(image, self.input_spec)
            except cv2.error as exc:
                raise BadInputError(f"{name}: OpenCV cannot resize a {image.shape[1]}x{image.shape[0]} frame "
                                    f"to the model's input: {exc.err or exc}") from exc

        return reduce

    def _frame_scores(self, images: list[np.ndarray], name: str) -> list[float]:
        """One score per reduced keyframe, run one frame at a time (the runtime's working memory is one
        frame's, and each frame's score does not depend on the others)."""
        scores = []
        for image in images:
            output = self.runner.run_single(normalise(image, self.input_spec)[None])
            scores.append(float(self._finite(output, f"a frame of {name}").reshape(-1)[0]))
        return scores

    def _clip(self, value: float) -> float:
        low, high = self.output_spec.score_range or (-math.inf, math.inf)
        return float(min(max(value, low), high))

    def score(self, source: Any, *, fps: float | None = None, per_second: float | None = None,
              max_frames: int | None = None, timeout: float | None = DEFAULT_TIMEOUT_S,
              max_pixels: int | None = DEFAULT_MAX_PIXELS, protocols: Iterable[str] | str = (),
              demuxers: Iterable[str] | str = (), duration: float | None = None) -> ScoreResult:
        """Score a video (path, URL, ``cv2.VideoCapture``, iterable of BGR frames) or one image.

        Keyframes cover the whole video: the middle frame of each ``1 / per_second`` seconds, or, for a video
        longer than ``max_frames / per_second`` seconds, of ``max_frames`` equal parts of it (both default to
        the bundle's sampling: 1 and 8 for the embedded student); their scores are pooled as the model was
        trained (the mean). A local file of known length is read by seeking to each keyframe far apart
        (``result.sampling.how``); other sources are decoded in order, and one of unknown length (a pipe, an
        iterator) keeps between ``(max_frames + 2) // 3`` and ``max_frames`` keyframes spread over it (see
        :func:`kvqe.sdk.sampling.select_keyframes`); a URL that declares no length is read as a stream (``how``
        is "stream"), one that ends short of the length it declares is an error. Frames whose short side is
        below the bundle's minimum (:func:`kvqe.sdk.preprocess.minimum_side`: 32 pixels for the embedded
        student) or a video that ends before its first keyframe raise UnscorableError (a BadInputError).

        ``fps`` overrides the source's frame rate; sources that have none assume 30. ``timeout``: seconds to
        wait for the source to open and for each frame; ``max_pixels``: largest frame, refused before it is
        decoded; ``protocols``: URL schemes allowed beyond the network ones; ``demuxers``: container formats
        allowed beyond single media files, e.g. ``["hls"]`` (see :func:`open_source`). ``duration``: the
        seconds of a source that declares no length (a pipe, an iterator, a live stream), so that its keyframes
        are those of the same video as a file; it must then deliver that many seconds (BadInputError if it
        ends short, or if the source declares its own length).
        """
        self._require("vqa", "score()")
        sampling = sampling_spec(self.input_spec.sampling, per_second, max_frames)
        if duration is not None:
            duration = checked(duration, "duration", SECONDS)
        with _open(source, fps, timeout, max_pixels, protocols, demuxers) as frames:
            rate = frames.fps or ASSUMED_FPS
            name = frames.name
            if duration is not None:
                self._declare_duration(frames, duration, rate)
            if frames.seekable and frames.frame_count:
                plan = keyframe_plan(frames.frame_count, rate, sampling)
                if worth_seeking(plan, rate):
                    frames.read_only(plan)
            keyframes = select_keyframes(frames, rate, sampling, frames.frame_count, reduce=self._reducer(name))
            width, height = frames.size or (0, 0)
            length = frames.frame_count or frames.frames_read
            duration = None if frames.is_image else length / rate
            if not frames.is_image:
                self._check_length(name, length, rate, sampling.per_second, width, height)
            how = Sampling(sampling.per_second, sampling.max_frames, frames.access)
            codec, conversion = frames.codec, frames.conversion
        scores = self._frame_scores([frame.image for frame in keyframes], name)
        pooled = pad_to_max(scores, sampling)
        return ScoreResult(
            score=self._clip(float(np.mean(pooled))), frame_scores=scores, frames=len(scores), source=name, fps=rate,
            frame_times=[frame.time_s for frame in keyframes], frame_indices=[frame.index for frame in keyframes],
            duration_s=duration, width=width, height=height, codec=codec, sampling=how, conversion=conversion,
        )

    @staticmethod
    def _declare_duration(frames: FrameSource, duration: float, rate: float) -> None:
        count = frames.frame_count
        if frames.is_image or count is not None:
            declared = ("is an image" if frames.is_image or count is None
                        else f"declares its own length, {count} frames ({count / rate:.2f} s)")
            raise BadInputError(f"{frames.name}: duration= is for a source that declares no length (a pipe, an "
                                f"iterator, a live stream); this one {declared}")
        frames.declare_length(max(1, round(duration * rate)))

    @staticmethod
    def _check_length(name: str, length: int, rate: float, per_second: float, width: int, height: int) -> None:
        """UnscorableError for a video that ends before its first keyframe (the middle of its first sampling
        interval): it holds none of the frames the model is sampled on."""
        first = keyframe_index(0, rate, per_second)
        if length <= first:
            raise UnscorableError(
                f"{name}: {length} frames ({length / rate:.2f} s) end before the first keyframe (frame {first}, "
                f"{first / rate:.2f} s at {per_second:g} keyframes a second); the shortest video this bundle scores "
                f"is {first + 1} frames; unscorable", width, height)

    def stream(self, source: Any, *, window_s: float = 1.0, fps: float | None = None,
               per_second: float | None = None, timeout: float | None = DEFAULT_TIMEOUT_S,
               max_pixels: int | None = DEFAULT_MAX_PIXELS, protocols: Iterable[str] | str = (),
               demuxers: Iterable[str] | str = ()) -> Iterator[Segment]:
        """Score a live or long source window by window with bounded memory, yielding as it goes: each
        window's keyframes at ``per_second`` (default: the bundle's rate) are scored and averaged
        (``timeout``, ``max_pixels``, ``protocols``, ``demuxers`` as for :meth:`score`)."""
        self._require("vqa", "stream()")
        window_s = checked(window_s, "window_s", SECONDS)
        rate_spec = sampling_spec(self.input_spec.sampling, per_second)
        with _open(source, fps, timeout, max_pixels, protocols, demuxers) as frames:
            rate = frames.fps or ASSUMED_FPS
            reduce = self._reducer(frames.name)
            for window in windowed_keyframes(frames, rate, window_s, rate_spec.per_second, reduce=reduce):
                scores = self._frame_scores([frame.image for frame in window.frames], frames.name)
                yield Segment(window.start_s, window.end_s, self._clip(float(np.mean(scores))), len(scores))

    # -- SR ----------------------------------------------------------------------------------------
    @property
    def scale(self) -> int:
        return int(self.output_spec.scale or 1)

    def tile_settings(self, tile: int | None = None, tile_pad: int | None = None, pre_pad: int | None = None,
                      memory_budget_mb: float = SR_MEMORY_BUDGET_MB) -> TileSettings:
        """The bundle's tiling defaults, overridden by any argument given; a bundle that declares no tile
        size is tiled to fit ``memory_budget_mb`` (``tile=0`` runs whole images)."""
        tile = None if tile is None else checked_int(tile, "tile", TILE)
        defaults = self.input_spec.tile or Tile(size=0, pad=10)
        max_tile = min((bound for a in self.stages.values() if (bound := a.record.get("export", {}).get("max_tile"))),
                       default=None)
        if max_tile and tile is not None and not 0 < tile <= max_tile:
            raise BadInputError(f"this {self.backend} artifact takes tiles of at most {max_tile} pixels, got {tile}")
        pad = defaults.pad if tile_pad is None else tile_pad
        if tile is None:
            tile = max_tile or defaults.size or budget_tile(memory_budget_mb, self.scale, pad)
        return TileSettings(
            tile=tile,
            tile_pad=pad,
            pre_pad=(defaults.pre_pad or 0) if pre_pad is None else pre_pad,
            blend=bool(defaults.blend),
        )

    def enhance(self, image: np.ndarray | str | os.PathLike[str], *, tile: int | None = None,
                tile_pad: int | None = None, pre_pad: int | None = None,
                memory_budget_mb: float = SR_MEMORY_BUDGET_MB,
                max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """HxWx3 uint8 BGR (or an image path) -> (H*scale)x(W*scale)x3 uint8 BGR.

        Tiled to fit ``memory_budget_mb`` unless the bundle or ``tile`` says otherwise; an input over
        ``max_pixels`` is refused (an image file from its header, before decoding).
        """
        self._require("sr", "enhance()")
        settings = self.tile_settings(tile, tile_pad, pre_pad, memory_budget_mb)
        if isinstance(image, (str, os.PathLike)):
            image = read_image(image, max_pixels=max_pixels)
        return self._enhance(Limits.of(max_pixels=max_pixels).frame(image, "image"), settings)

    def _enhance(self, bgr: np.ndarray, settings: TileSettings) -> np.ndarray:
        """Each tile runs through :func:`interruptible`: a signal ends the call within moments, not after the
        tile in progress."""
        chw = preprocess_sr_image(bgr, self.input_spec)
        runner = self.runner
        positioned = runner if isinstance(runner, PositionedRunner) else None
        return enhance_tiled(
            chw, lambda patch: interruptible(lambda: runner.run_single(patch)), self.scale, settings,
            lambda out: postprocess_sr_output(self._finite(out, "a tile"), self.input_spec, self.output_spec),
            run_at=None if positioned is None else (
                lambda patch, origin: interruptible(lambda: positioned.run_at(patch, origin))),
            exact=self.runner if isinstance(self.runner, ExactTiler) else None,
        )

    def enhance_video(self, source: Any, output: str | os.PathLike[str], *, tile: int | None = None,
                      fps: float | None = None, codec: str | None = None, crf: int | None = None,
                      chroma: str | None = None, format: str | None = None,
                      progress: Callable[[int, int | None], None] | None = None,
                      memory_budget_mb: float = SR_MEMORY_BUDGET_MB, timeout: float | None = DEFAULT_TIMEOUT_S,
                      max_pixels: int | None = DEFAULT_MAX_PIXELS, protocols: Iterable[str] | str = (),
                      demuxers: Iterable[str] | str = ()) -> VideoResult:
        """Enhance a video frame by frame into ``output``, encoded by the ``ffmpeg`` command, keeping its
        exact frame rate (30000/1001 stays 30000/1001), frame count, colour description, audio and subtitles.

        ``output``: a file, its container from its suffix (.mp4, .m4v, .mov, .mkv, .webm), or ``"-"`` for
        stdout as ``format`` ``"y4m"`` (default) or ``"rawvideo"`` (bgr24, the model's pixels exactly; video
        only). ``codec``: ``"h264"`` (default; ``"vp9"`` for .webm), ``"hevc"``, ``"vp9"`` or ``"av1"``;
        ``chroma``: ``"420"`` (8-bit 4:2:0, which every player decodes; the default for files) or ``"444"``
        (10-bit 4:4:4, a faithful intermediate; the default for stdout); ``crf``: its quality (default per
        codec and chroma: 4:2:0 keeps the enhancement, 4:4:4 is at least 45 dB PSNR from the model's
        output; :mod:`kvqe.sdk.encoders`). The input's audio and
        subtitle streams are stream-copied when the container takes their codec, else converted (see
        :class:`kvqe.sdk.video_out.Container`); ``result.streams`` says which. ``fps`` overrides the rate.

        The file appears at ``output`` only when every frame is written and ffmpeg succeeded; an output that
        cannot be written there, or that is the input itself, is refused before any frame is decoded.
        ``progress(done, total)`` is called after each frame (``total`` is the container's frame count, or
        None). ``timeout``, ``max_pixels``, ``protocols`` and ``demuxers`` as for :meth:`score`.
        """
        self._require("sr", "enhance_video()")
        out = VideoOutput.of(output, codec, crf, chroma, format)
        if out.path is not None:
            check_output_path(out.path, source=source if isinstance(source, (str, os.PathLike)) else None)
        settings = self.tile_settings(tile, memory_budget_mb=memory_budget_mb)
        with _open(source, fps, timeout, max_pixels, protocols, demuxers) as frames:
            return write_video(frames, lambda image: self._enhance(image, settings), out, source=source, fps=fps,
                               timeout=timeout, progress=progress)
