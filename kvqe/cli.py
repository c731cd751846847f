"""``kvqe``: score, enhance and inspect bundles from the command line (see INTERFACE.md)."""
from __future__ import annotations

import contextlib
import csv
import glob
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import click
import cv2

from kvqe.bundle import PRECISIONS, Artifact
from kvqe.clitools import describe, emit, exit_code, handle_errors, progress_bar
from kvqe.errors import AccuracyGateError, BadInputError, BundleError, KvqeError
from kvqe.files import atomic_output_file, check_output_path
from kvqe.runtimes.registry import AUTO_ORDER as FILE_BACKENDS
from kvqe.sdk.loader import load, resolve_bundle
from kvqe.sdk.model import Model
from kvqe.sdk.results import ScoreResult
from kvqe.sdk.sources import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_TIMEOUT_S,
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    FrameSource,
    open_raw_pipe,
    open_y4m_pipe,
    read_image,
)
from kvqe.sdk.video_out import CHROMAS, CODECS, PIPE_FORMATS, STDOUT, VideoOutput
from kvqe.training.cli import distill

_backend = click.option("--backend", type=click.Choice(("auto", *FILE_BACKENDS)), default="auto",
                        show_default=True, help="Runtime to run the bundle on (auto: the fastest installed).")
_precision = click.option("--precision", type=click.Choice(PRECISIONS), default=None,
                          help="Artifact precision (default: fp32 when the bundle has it).")
_json = click.option("--json", "as_json", is_flag=True, help="One JSON object per line on stdout.")
_threads = click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
                        help="Inference threads per call (0: the backend's default, every core).")
_timeout = click.option("--timeout", type=click.FloatRange(min=0), default=DEFAULT_TIMEOUT_S, show_default=True,
                        metavar="SECONDS", help="Longest wait for a source to open and for each frame (0: none).")
_max_pixels = click.option("--max-pixels", type=click.IntRange(min=0), default=DEFAULT_MAX_PIXELS,
                           show_default=True, help="Largest frame (width x height), checked before decoding (0: none).")
_protocols = click.option("--protocols", default="", metavar="LIST",
                          help="URL schemes to read beyond the network ones, e.g. file,concat (comma-separated).")
_undeployable = click.option("--allow-undeployable", is_flag=True,
                             help="Run an artifact that failed its accuracy gates (deployable: false).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kvqe")
def main() -> None:
    """kvqe: no-reference video quality scoring and super-resolution."""


def _limits(timeout: float, max_pixels: int, protocols: str = "") -> dict[str, Any]:
    """The API's source limits from the CLI's options (0: no limit)."""
    return {"timeout": timeout or None, "max_pixels": max_pixels or None,
            "protocols": [p for p in protocols.split(",") if p.strip()]}


def _parse_size(raw: str) -> tuple[int, int]:
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


def _expand(source: str) -> list[str]:
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


def _stdin_source(size: tuple[int, int] | None, pix_fmt: str, fps: float | None,
                  limits: dict[str, Any]) -> FrameSource:
    """SOURCE '-': raw frames with --raw, else a YUV4MPEG2 stream."""
    caps = {"timeout": limits["timeout"], "max_pixels": limits["max_pixels"]}
    if size is not None:
        return open_raw_pipe(sys.stdin.buffer, *size, pix_fmt=pix_fmt, fps=fps, **caps)
    return open_y4m_pipe(sys.stdin.buffer, fps=fps, **caps)


def _score_record(source: str, result: ScoreResult, model: Model, seconds: float) -> dict[str, Any]:
    """One scored source as ``--json`` prints it."""
    sampling = result.sampling
    return {"source": source, "score": result.score, "frames": result.frames, "backend": model.backend,
            "precision": model.precision, "seconds": seconds, "frame_scores": result.frame_scores,
            "frame_times": result.frame_times, "frame_indices": result.frame_indices,
            "duration_s": result.duration_s, "width": result.width, "height": result.height,
            "fps": None if result.duration_s is None else result.fps, "codec": result.codec or None,
            "sampling": None if sampling is None else {"per_second": sampling.per_second,
                                                       "max_frames": sampling.max_frames, "how": sampling.how}}


def _csv_row(record: dict[str, Any]) -> dict[str, Any]:
    """A ``--json`` record as a CSV row: the sampling flattened, the per-frame scores as space-separated
    ``TIME:SCORE`` pairs (seconds and score)."""
    row = {**record, **(record.get("sampling") or {})}
    pairs = zip(record.get("frame_times", []), record.get("frame_scores", []))
    row["frame_scores"] = " ".join(f"{time_s:.3f}:{value:.4f}" for time_s, value in pairs)
    return {name: row.get(name) for name in _CSV_FIELDS}


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with atomic_output_file(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=_CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


@main.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--bundle", default="vqa", show_default=True, help="Bundle directory or embedded name.")
@_backend
@_precision
@_threads
@click.option("--per-second", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Keyframes per second for videos short enough for --max-frames (default: the bundle's).")
@click.option("--max-frames", type=click.IntRange(min=1), default=None,
              help="Most keyframes per video, spread over all of it (default: the bundle's).")
@click.option("--raw", "raw_size", metavar="WxH", help="Frame size of raw video on stdin (SOURCE '-'; needs --fps).")
@click.option("--pix-fmt", type=click.Choice(["bgr24", "rgb24"]), default="bgr24", show_default=True)
@click.option("--fps", type=float, default=None,
              help="Frame rate (overrides the container or the y4m header; required with --raw).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write one row per source to this CSV file (written when all are done).")
@_timeout
@_max_pixels
@_protocols
@_undeployable
@_json
@handle_errors
def score(sources: tuple[str, ...], bundle: str, backend: str, precision: str | None, threads: int,
          per_second: float | None, max_frames: int | None, raw_size: str | None, pix_fmt: str, fps: float | None,
          csv_path: Path | None, timeout: float, max_pixels: int, protocols: str, allow_undeployable: bool,
          as_json: bool) -> None:
    """Score each SOURCE: a video file, URL, image, folder (its videos and images, recursively), glob, or
    '-' for stdin (a YUV4MPEG2 stream, or raw frames with --raw WxH --fps F). A source that fails is reported
    and the others are still scored; the exit code is then the first failure's (2: bad input)."""
    size = _parse_size(raw_size) if raw_size else None
    if sources.count("-") > 1:
        raise BadInputError("SOURCE '-' (stdin) can be given once")
    if "-" in sources and size is not None and fps is None:
        raise BadInputError("SOURCE '-' with --raw needs --fps F: raw frames carry no frame rate, and keyframes "
                            "are chosen by time (ffprobe shows the rate; or pipe y4m, which carries it: "
                            "ffmpeg -i IN -f yuv4mpegpipe - | kvqe score -)")
    if csv_path is not None:
        check_output_path(csv_path)
    limits = _limits(timeout, max_pixels, protocols)
    model = load(bundle, backend=backend, precision=precision, threads=threads,
                 allow_undeployable=allow_undeployable)
    _require_task(model, "vqa", "kvqe score")
    failure, rows = 0, []
    for given in sources:
        try:
            expanded = _expand(given)
        except BadInputError as exc:
            expanded = []
            failure = failure or exc.exit_code
            rows.append({"source": given, "error": str(exc)})
            emit(rows[-1], as_json, f"{given}: error: {exc}")
        for source in expanded:
            started = time.perf_counter()
            try:
                frames = _stdin_source(size, pix_fmt, fps, limits) if source == "-" else source
                result = model.score(frames, fps=fps, per_second=per_second, max_frames=max_frames, **limits)
            except BrokenPipeError:
                raise
            except Exception as exc:  # noqa: BLE001 (one bad source must not stop the others)
                failure = failure or exit_code(exc)
                message = describe(exc)
                rows.append({"source": source, "error": message})
                emit(rows[-1], as_json, f"{source}: error: {message}")
                continue
            seconds = round(time.perf_counter() - started, 3)
            rows.append(_score_record(source, result, model, seconds))
            length = "" if result.duration_s is None else f" over {result.duration_s:.1f} s"
            emit(rows[-1], as_json, f"{source}\t{result.score:.4f}\t({result.frames} frames{length}, "
                                    f"{model.backend}/{model.precision}, {seconds:.2f} s)")
    if csv_path is not None:
        _write_csv(csv_path, [_csv_row(row) for row in rows])
    if failure:
        sys.exit(failure)


def _require_task(model: Model, task: str, command: str) -> None:
    if model.task != task:
        raise BadInputError(f"{command} needs a {task} bundle, but {model.name!r} is a {model.task} bundle "
                            f"(give --bundle {'vqa' if task == 'vqa' else 'sr'} or a {task} bundle's directory)")


def _enhance_image(model: Model, source: Path, target: Path, tile: int | None,
                   limits: dict[str, Any]) -> dict[str, Any]:
    image = read_image(source, max_pixels=limits["max_pixels"])
    result = model.enhance(image, tile=tile, max_pixels=limits["max_pixels"])
    with atomic_output_file(target) as tmp:
        if not cv2.imwrite(str(tmp), result):
            raise BadInputError(f"{target}: OpenCV cannot write this image format")
    return {"frames": 1, "width": image.shape[1], "height": image.shape[0],
            "out_width": result.shape[1], "out_height": result.shape[0]}


def _enhance_video(model: Model, source: str, output: str, tile: int | None, video: dict[str, Any],
                   limits: dict[str, Any]) -> dict[str, Any]:
    with progress_bar(None, "enhance") as bar:

        def advance(done: int, total: int | None) -> None:
            bar.total = total
            bar.update(done - bar.n)

        result = model.enhance_video(source, output, tile=tile, progress=advance, **video, **limits)
    streams = [{"index": s.index, "type": s.kind, "codec": s.codec, "written_as": s.written_as, "copied": s.copied}
               for s in result.streams]
    for stream in result.streams:
        if stream.written_as is None:
            click.echo(f"note: {source}: its {stream.kind} stream #{stream.index} ({stream.codec}) is not in the "
                       f"output: '-' carries video only", err=True)
    return {"frames": result.frames, "width": result.width, "height": result.height,
            "out_width": result.out_width, "out_height": result.out_height, "fps": result.fps,
            "frame_rate": result.frame_rate, "codec": result.codec or None, "encoder": result.encoder or None,
            "crf": result.crf, "pix_fmt": result.pix_fmt, "format": result.format, "streams": streams}


def _video_summary(facts: dict[str, Any]) -> str:
    """The human text's video part: codec, quality, rate and what became of the other streams."""
    coding = f"{facts['codec']} crf {facts['crf']}" if facts["codec"] else facts["format"]
    carried = [f"{s['type']} #{s['index']} {s['codec']}" + (" copied" if s["copied"] else f" as {s['written_as']}")
               for s in facts["streams"] if s["written_as"]]
    return f", {coding} {facts['pix_fmt']} at {facts['frame_rate']} fps" + "".join(f", {c}" for c in carried)


@main.command()
@click.argument("input_path", metavar="INPUT")
@click.option("-o", "--output", "output_path", required=True,
              help="Output image or video path; '-' writes video frames to stdout (see --format).")
@click.option("--bundle", default="sr", show_default=True, help="Bundle directory or embedded name.")
@_backend
@_precision
@_threads
@click.option("--tile", type=click.IntRange(min=0), default=None,
              help="Tile size in input pixels (0: none; default: the bundle's, else sized to a memory budget).")
@click.option("--codec", type=click.Choice(sorted(CODECS)), default=None,
              help="Video codec (default: h264; vp9 for .webm).")
@click.option("--crf", type=click.IntRange(min=0), default=None,
              help="Video quality, lower is better (default per codec: at least 45 dB PSNR from the model's output).")
@click.option("--chroma", type=click.Choice(sorted(CHROMAS)), default=None,
              help="444: 10-bit 4:4:4, the default, faithful; 420: 8-bit 4:2:0, which every player decodes.")
@click.option("--format", "pipe_format", type=click.Choice(sorted(PIPE_FORMATS)), default=None,
              help="With -o -: y4m (default; carries size and rate) or rawvideo (bgr24, the model's pixels).")
@_timeout
@_max_pixels
@_undeployable
@_json
@handle_errors
def enhance(input_path: str, output_path: str, bundle: str, backend: str, precision: str | None, threads: int,
            tile: int | None, codec: str | None, crf: int | None, chroma: str | None, pipe_format: str | None,
            timeout: float, max_pixels: int, allow_undeployable: bool, as_json: bool) -> None:
    """Super-resolve INPUT (image or video) into OUTPUT (a file, or '-' for video frames on stdout)."""
    source, target = Path(input_path), Path(output_path)
    is_image = source.suffix.lower() in IMAGE_SUFFIXES
    to_stdout = output_path == STDOUT
    if is_image != (target.suffix.lower() in IMAGE_SUFFIXES) and not (to_stdout and not is_image):
        wanted = f"an image output name ({', '.join(sorted(IMAGE_SUFFIXES))})" if is_image else \
            "a video output name (e.g. .mp4 or .mkv), not an image's"
        raise BadInputError(f"{target}: {'an image' if is_image else 'a video'} input needs {wanted}")
    video: dict[str, Any] = {"codec": codec, "crf": crf, "chroma": chroma or "444", "format": pipe_format}
    if is_image:
        given = [f"--{name}" for name, value in (("codec", codec), ("crf", crf), ("chroma", chroma),
                                                 ("format", pipe_format)) if value is not None]
        if given:
            raise BadInputError(f"{' and '.join(given)} apply to video output; {input_path} is an image")
        check_output_path(target, source=source)
    else:
        if not to_stdout:
            check_output_path(target, source=source)
        VideoOutput.of(output_path, **video)
    if is_image and not cv2.haveImageWriter(str(target)):
        raise BadInputError(f"{target}: OpenCV cannot write {target.suffix} images here")
    started = time.perf_counter()
    model = load(bundle, backend=backend, precision=precision, threads=threads,
                 allow_undeployable=allow_undeployable)
    _require_task(model, "sr", "kvqe enhance")
    limits = _limits(timeout, max_pixels)
    facts = _enhance_image(model, source, target, tile, limits) if is_image else _enhance_video(
        model, input_path, output_path, tile, video, limits)
    seconds = round(time.perf_counter() - started, 3)
    record = {"input": input_path, "output": output_path, **facts, "backend": model.backend,
              "precision": model.precision, "seconds": seconds}
    text = (f"{input_path} -> {output_path}: {facts['width']}x{facts['height']} -> "
            f"{facts['out_width']}x{facts['out_height']}, {facts['frames']} frame(s)"
            f"{'' if is_image else _video_summary(facts)}, {model.backend}/{model.precision}, {seconds:.2f} s")
    with contextlib.redirect_stdout(sys.stderr if to_stdout else sys.stdout):  # stdout holds the video then
        emit(record, as_json, text)


@main.command()
@click.argument("bundle_path", metavar="BUNDLE")
@_json
@handle_errors
def info(bundle_path: str, as_json: bool) -> None:
    """Show BUNDLE's manifest (a directory, or an embedded name such as `sr`) and whether every file it
    lists (artifacts, their companion files, validation data) verifies (exit 2 if not)."""
    try:
        bundle = resolve_bundle(bundle_path)
    except BundleError as exc:  # the manifest itself is missing or malformed: nothing of it can be shown
        if as_json:
            emit({"bundle": bundle_path, "verified": False, "error": str(exc)}, True, "")
        raise
    checks = bundle.verify_all()
    manifest = bundle.manifest

    def problems(artifact: Artifact) -> list[str]:
        names = [artifact.file, *(entry.file for entry in artifact.extra_files)]
        return [message for name in names if (message := checks.get(name))]

    artifacts = [{**a.record, "verified": not problems(a), "error": "; ".join(problems(a)) or None}
                 for a in bundle.artifacts]
    verified = all(v is None for v in checks.values())
    record = {"bundle": bundle_path, "schema_version": manifest["schema_version"],
              "kvqe_version": manifest.get("kvqe_version"), "model": manifest["model"],
              "task": bundle.task, "input": manifest["input"], "output": manifest["output"],
              "licence": manifest.get("licence"), "weights": manifest.get("weights"),
              "artifacts": artifacts, "files": checks, "verified": verified}
    lines = [f"bundle   {bundle_path}",
             (f"model    {bundle.model_name} ({bundle.task}), {manifest['model'].get('params', '?')} params, "
              f"{manifest['model'].get('gflops', '?')} GFLOPs per {manifest['model'].get('flops_input', '?')}"),
             f"licence  {manifest.get('licence')}",
             f"weights  {(manifest.get('weights') or {}).get('source')}",
             f"output   {manifest['output']}"]
    for a in artifacts:
        state = "ok" if a["verified"] else f"FAILED: {a['error']}"
        companions = "".join(f" + {e['file']}" for e in a.get("extra_files", []))
        lines.append(f"artifact {a['backend']}/{a['precision']}  {a['file']}{companions}  {a['bytes']} bytes  "
                     f"deployable={a['deployable']}  sha256 {state}")
    others = {name: message for name, message in checks.items()
              if not any(name == a["file"] or name in {e["file"] for e in a.get("extra_files", [])}
                         for a in artifacts)}
    lines += [f"file     {name}  sha256 {'ok' if message is None else f'FAILED: {message}'}"
              for name, message in others.items()]
    emit(record, as_json, "\n".join(lines))
    if not verified:
        failures = "; ".join(msg for msg in checks.values() if msg)
        raise BundleError(f"bundle does not verify: {failures}")


@main.command()
@click.argument("bundle_path", metavar="BUNDLE")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Videos/images to verify on instead of the bundle's own validation data.")
@_json
@handle_errors
def verify(bundle_path: str, data: Path | None, as_json: bool) -> None:
    """Re-run BUNDLE's accuracy gates on this machine (exit 3 if an artifact misses one)."""
    from kvqe.calibration.verify import verify_bundle

    bundle = resolve_bundle(bundle_path)
    failed = False
    for record in verify_bundle(bundle, data):
        if "skipped" in record:
            emit(record, as_json, f"{record['artifact']:18s} skipped: {record['skipped']}")
            continue
        failed = failed or not record["passed"]
        figures = "  ".join(f"{k}={v:.4g}" for k, v in sorted(record["metrics"].items()) if isinstance(v, float))
        state = "passes" if record["passed"] else "FAILS " + "; ".join(record["failures"])
        emit(record, as_json, f"{record['artifact']:18s} {state}  {figures}")
    if failed:
        raise AccuracyGateError("an artifact misses its accuracy gates on this machine")


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


@main.command("eval")
@click.option("--bundle", required=True, help="VQA bundle directory or embedded name.")
@click.option("--labels", "labels_path", required=True, type=click.Path(path_type=Path),
              help="Labels CSV: filename,score (KVQ truth.csv).")
@click.option("--pairs", "pairs_path", type=click.Path(path_type=Path), default=None,
              help="Rank pairs: CSV video1,video2,rank[,kind] or KVQ's XLSX (sheets source, nonsource).")
@click.option("--videos", "videos_dir", type=click.Path(path_type=Path), default=None,
              help="Folder holding the labelled videos by file name (default: the labels file's folder).")
@_backend
@_precision
@_undeployable
@_json
@handle_errors
def evaluate_bundle(bundle: str, labels_path: Path, pairs_path: Path | None, videos_dir: Path | None,
                    backend: str, precision: str | None, allow_undeployable: bool, as_json: bool) -> None:
    """Score every labelled video with the bundle and report SROCC, PLCC, KROCC, RMSE, Rank1, Rank2 and the
    KVQ final score (exit 2 if a video cannot be scored; the others are still evaluated)."""
    from kvqe.evaluation import evaluate, read_labels, read_pairs, unscored

    labels = read_labels(labels_path)
    pairs = read_pairs(pairs_path) if pairs_path else []
    strangers = unscored(pairs, labels)
    if strangers:
        raise BadInputError(f"{pairs_path}: {len(strangers)} video(s) of the pairs are not labelled in "
                            f"{labels_path}: {', '.join(strangers[:5])}")
    folder = videos_dir or labels_path.parent
    if not folder.is_dir():
        raise BadInputError(f"--videos {folder} is not a directory")
    model = load(bundle, backend=backend, precision=precision, allow_undeployable=allow_undeployable)
    _require_task(model, "vqa", "kvqe eval")
    scores: dict[str, float] = {}
    with progress_bar(len(labels), "eval") as bar:
        for name, label in labels.items():
            source = str(folder / name)
            try:
                scores[name] = model.score(source).score
            except KvqeError as exc:
                emit({"source": source, "error": str(exc)}, as_json, f"{source}: error: {exc}")
            else:
                if as_json:
                    emit({"source": source, "score": scores[name], "label": label}, True, "")
            bar.update()
    if not scores:
        raise BadInputError(f"none of the {len(labels)} labelled videos could be scored")
    failed = len(labels) - len(scores)
    usable = [p for p in pairs if p.video1 in scores and p.video2 in scores]
    summary = {**evaluate(scores, {name: labels[name] for name in scores}, usable), "failed": failed}
    heading = (f"videos {summary['videos']} (failed {failed}), pairs {summary['pairs_homologous']} homologous"
               f" / {summary['pairs_nonhomologous']} non-homologous")
    table = [f"{label:6s} {_figure(summary[label.lower()])}"
             for label in ("SROCC", "PLCC", "KROCC", "RMSE", "Rank1", "Rank2", "final")]
    text = "\n".join([heading, *table, "(final = 0.45*SROCC + 0.45*PLCC + 0.05*Rank1 + 0.05*Rank2; n/a if a term is)"])
    emit(summary, as_json, text)
    if failed:
        sys.exit(2)


main.add_command(distill)  # lives with the training code; torch is imported only when it runs
