"""``kvqe score``: score videos, images, folders, globs and stdin, one line per source, optionally a CSV."""
from __future__ import annotations

import csv
import functools
import glob
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import click

from kvqe import scaleout
from kvqe.clitools import describe, emit, exit_code, handle_errors
from kvqe.commands.engine import run_on_ray, with_engine_options
from kvqe.commands.options import (
    backend_option,
    check_numbers,
    demuxers_option,
    json_option,
    max_pixels_option,
    precision_option,
    protocols_option,
    require_task,
    source_limits,
    threads_option,
    timeout_option,
    undeployable_option,
)
from kvqe.errors import BadInputError
from kvqe.files import atomic_output_file, check_output_path
from kvqe.sdk.frame_source import FrameSource
from kvqe.sdk.images import IMAGE_SUFFIXES
from kvqe.sdk.loader import load
from kvqe.sdk.model import Model
from kvqe.sdk.pipes import open_raw_pipe, open_y4m_pipe
from kvqe.sdk.results import ScoreResult
from kvqe.sdk.video_files import VIDEO_SUFFIXES


def _parse_size(raw: str) -> tuple[int, int]:
    """``--raw WxH`` as (width, height); BadInputError unless both are positive integers."""
    try:
        width, height = (int(v) for v in raw.lower().split("x"))
    except ValueError:
        raise BadInputError(f"--raw expects WxH, e.g. 1280x720, got {raw!r}") from None
    if width <= 0 or height <= 0:
        raise BadInputError(f"--raw size must be positive, got {raw!r}")
    return width, height


_GLOB_CHARACTERS = re.compile(r"[*?\[]")
_CSV_FIELDS = ("source", "score", "frames", "duration_s", "width", "height", "fps", "codec", "per_second",
               "max_frames", "how", "backend", "precision", "seconds", "error", "frame_scores")


def _media_in(folder: Path) -> list[str]:
    """The videos and images under ``folder`` (recursively, symlinked folders not followed), sorted."""
    media = VIDEO_SUFFIXES | IMAGE_SUFFIXES
    return sorted(str(Path(root) / name) for root, _, names in os.walk(folder) for name in names
                  if Path(name).suffix.lower() in media)


def expand(source: str) -> list[str]:
    """The sources SOURCE names: a folder's videos and images (recursively), a glob's files (sorted), or
    SOURCE itself; BadInputError for a folder or glob that names none."""
    if source == "-" or "://" in source or os.path.isfile(source):
        return [source]
    if os.path.isdir(source):
        found = _media_in(Path(source))
        if not found:
            raise BadInputError(f"{source}: the directory holds no videos or images "
                                f"({', '.join(sorted(VIDEO_SUFFIXES | IMAGE_SUFFIXES))})")
        return found
    if _GLOB_CHARACTERS.search(source) and not os.path.lexists(source):
        found = sorted(path for path in glob.glob(source, recursive=True) if os.path.isfile(path))
        if not found:
            raise BadInputError(f"{source}: no file matches this pattern")
        return found
    return [source]


def expand_catalogue(sources: list[str]) -> list[str]:
    """``--engine ray``'s sources: as :func:`expand` does, and a list file (``.txt``: one source per line,
    blank lines and ``#`` comments skipped) as the sources it lists, each expanded in turn."""
    expanded = []
    for source in sources:
        if source.endswith(".txt") and os.path.isfile(source):
            listed = [line.strip() for line in Path(source).read_text(encoding="utf-8").splitlines()]
            expanded += expand_catalogue([line for line in listed if line and not line.startswith("#")])
        else:
            expanded += expand(source)
    return expanded


def _stdin_source(size: tuple[int, int] | None, pix_fmt: str, fps: float | None,
                  limits: dict[str, Any]) -> FrameSource:
    """SOURCE '-': raw frames with --raw, else a YUV4MPEG2 stream."""
    caps = {"timeout": limits["timeout"], "max_pixels": limits["max_pixels"]}
    if size is not None:
        return open_raw_pipe(sys.stdin.buffer, *size, pix_fmt=pix_fmt, fps=fps, **caps)
    return open_y4m_pipe(sys.stdin.buffer, fps=fps, **caps)


def score_record(source: str, result: ScoreResult, model: Model, seconds: float) -> dict[str, Any]:
    """One scored source as ``--json`` prints it."""
    sampling = result.sampling
    converted = {"conversion": result.conversion} if result.conversion else {}
    return {"source": source, "score": result.score, "frames": result.frames, "backend": model.backend,
            "precision": model.precision, "seconds": seconds, "frame_scores": result.frame_scores,
            "frame_times": result.frame_times, "frame_indices": result.frame_indices,
            "duration_s": result.duration_s, "width": result.width, "height": result.height,
            "fps": None if result.duration_s is None else result.fps, "codec": result.codec or None,
            "sampling": None if sampling is None else {"per_second": sampling.per_second,
                                                       "max_frames": sampling.max_frames, "how": sampling.how},
            **converted}


def score_job(model: Model, source: str, per_second: float | None, max_frames: int | None,
              fps: float | None, limits: dict[str, Any]) -> dict[str, Any]:
    """One source scored (on a Ray actor), as ``--json`` prints it."""
    started = time.perf_counter()
    result = model.score(source, fps=fps, per_second=per_second, max_frames=max_frames, **limits)
    return score_record(source, result, model, round(time.perf_counter() - started, 3))


def parquet_columns() -> dict[str, Any]:
    """``--parquet``'s columns and their pyarrow types: one row per source, the per-frame scores as lists."""
    import pyarrow as pa

    floats = pa.list_(pa.float64())
    return {"source": pa.string(), "score": pa.float64(), "frames": pa.int64(), "backend": pa.string(),
            "precision": pa.string(), "seconds": pa.float64(), "duration_s": pa.float64(), "width": pa.int64(),
            "height": pa.int64(), "fps": pa.float64(), "codec": pa.string(), "frame_scores": floats,
            "frame_times": floats, "frame_indices": pa.list_(pa.int64()), "error": pa.string()}


def _csv_row(record: dict[str, Any]) -> dict[str, Any]:
    """A ``--json`` record as a CSV row: the sampling flattened, the per-frame scores as space-separated
    ``TIME:SCORE`` pairs (seconds and score)."""
    row = {**record, **(record.get("sampling") or {})}
    pairs = zip(record.get("frame_times", []), record.get("frame_scores", []))
    row["frame_scores"] = " ".join(f"{time_s:.3f}:{value:.4f}" for time_s, value in pairs)
    return {name: row.get(name) for name in _CSV_FIELDS}


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """``--csv``: the rows under a header, written atomically (no half-written file on failure)."""
    with atomic_output_file(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=_CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


@click.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--bundle", default="vqa", show_default=True, help="Bundle directory or embedded name.")
@backend_option
@precision_option
@threads_option
@click.option("--per-second", type=float, default=None,
              help="Keyframes per second for videos short enough for --max-frames (default: the bundle's).")
@click.option("--max-frames", type=int, default=None,
              help="Most keyframes per video, spread over all of it (default: the bundle's).")
@click.option("--raw", "raw_size", metavar="WxH", help="Frame size of raw video on stdin (SOURCE '-'; needs --fps).")
@click.option("--pix-fmt", type=click.Choice(["bgr24", "rgb24"]), default="bgr24", show_default=True)
@click.option("--fps", type=float, default=None,
              help="Frame rate (overrides the container or the y4m header; required with --raw).")
@click.option("--duration", type=float, default=None, metavar="SECONDS",
              help="Seconds of video on stdin (SOURCE '-'), which declares no length: its keyframes are then "
                   "those of the same video as a file, and a pipe that ends short is an error.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write one row per source to this CSV file (written when all are done).")
@click.option("--parquet", "parquet_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --engine ray: also write one row per source to this Parquet file.")
@with_engine_options
@timeout_option
@max_pixels_option
@protocols_option
@demuxers_option
@undeployable_option
@json_option
@handle_errors
def score(sources: tuple[str, ...], bundle: str, backend: str, precision: str | None, threads: int,
          per_second: float | None, max_frames: int | None, raw_size: str | None, pix_fmt: str, fps: float | None,
          duration: float | None, csv_path: Path | None, parquet_path: Path | None, engine: str, address: str | None,
          actors: int, retries: int, timeout: float, max_pixels: int, protocols: str, demuxers: str,
          allow_undeployable: bool, as_json: bool) -> None:
    """Score each SOURCE: a video file, URL, image, folder (its videos and images, recursively), glob, or
    '-' for stdin (a YUV4MPEG2 stream, or raw frames with --raw WxH --fps F). A source that fails is reported
    and the others are still scored; the exit code is then the first failure's (2: bad input)."""
    check_numbers(threads=threads, per_second=per_second, max_frames=max_frames, fps=fps, timeout=timeout,
                  max_pixels=max_pixels, duration=duration)
    size = _parse_size(raw_size) if raw_size else None
    if sources.count("-") > 1:
        raise BadInputError("SOURCE '-' (stdin) can be given once")
    if duration is not None and "-" not in sources:
        raise BadInputError("--duration is for SOURCE '-' (stdin), which declares no length; files and URLs "
                            "declare their own")
    if "-" in sources and size is not None and fps is None:
        raise BadInputError("SOURCE '-' with --raw needs --fps F: raw frames carry no frame rate, and keyframes "
                            "are chosen by time (ffprobe shows the rate; or pipe y4m, which carries it: "
                            "ffmpeg -i IN -f yuv4mpegpipe - | kvqe score -)")
    for path in (csv_path, parquet_path):
        if path is not None:
            check_output_path(path)
    limits = source_limits(timeout, max_pixels, protocols, demuxers)
    if engine == "ray":
        if "-" in sources:
            raise BadInputError("--engine ray reads files and URLs, not stdin ('-')")
        scaleout.require_ray()
        expanded = expand_catalogue(list(sources))
        job = functools.partial(score_job, per_second=per_second, max_frames=max_frames, fps=fps, limits=limits)
        options = {"backend": backend, "precision": precision, "threads": threads,
                   "allow_undeployable": allow_undeployable}
        rows = run_on_ray(expanded, job, bundle, options,
                          {"address": address, "actors": actors, "retries": retries}, as_json)
        if csv_path is not None:
            _write_csv(csv_path, [_csv_row(row) for row in rows])
        if parquet_path is not None:
            scaleout.write_parquet(parquet_path, rows, parquet_columns())
        failures = [row["exit_code"] for row in rows if "error" in row]
        if failures:
            sys.exit(failures[0])
        return
    if parquet_path is not None:
        raise BadInputError("--parquet is written by --engine ray")
    model = load(bundle, backend=backend, precision=precision, threads=threads,
                 allow_undeployable=allow_undeployable)
    require_task(model, "vqa", "kvqe score")
    failure, rows = 0, []
    for given in sources:
        try:
            expanded = expand(given)
        except BadInputError as exc:
            expanded = []
            failure = failure or exc.exit_code
            rows.append({"source": given, "error": str(exc)})
            emit(rows[-1], as_json, f"{given}: error: {exc}")
        for source in expanded:
            started = time.perf_counter()
            try:
                frames = _stdin_source(size, pix_fmt, fps, limits) if source == "-" else source
                result = model.score(frames, fps=fps, per_second=per_second, max_frames=max_frames,
                                     duration=duration if source == "-" else None, **limits)
            except BrokenPipeError:
                raise
            except Exception as exc:  # noqa: BLE001 (one bad source must not stop the others)
                failure = failure or exit_code(exc)
                message = describe(exc)
                rows.append({"source": source, "error": message})
                emit(rows[-1], as_json, f"{source}: error: {message}")
                continue
            seconds = round(time.perf_counter() - started, 3)
            rows.append(score_record(source, result, model, seconds))
            length = "" if result.duration_s is None else f" over {result.duration_s:.1f} s"
            emit(rows[-1], as_json, f"{source}\t{result.score:.4f}\t({result.frames} frames{length}, "
                                    f"{model.backend}/{model.precision}, {seconds:.2f} s)")
    if csv_path is not None:
        _write_csv(csv_path, [_csv_row(row) for row in rows])
    if failure:
        sys.exit(failure)
