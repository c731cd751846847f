"""``kvqe enhance``: super-resolve an image or a video into a file, or a video's frames onto stdout."""
from __future__ import annotations

import contextlib
import functools
import sys
import time
from pathlib import Path
from typing import Any

import click
import cv2

from kvqe import scaleout
from kvqe.clitools import emit, handle_errors, progress_bar
from kvqe.commands.engine import run_on_ray, with_engine_options
from kvqe.commands.options import (
    backend_option,
    check_numbers,
    demuxers_option,
    json_option,
    max_pixels_option,
    precision_option,
    require_task,
    source_limits,
    threads_option,
    timeout_option,
    undeployable_option,
)
from kvqe.errors import BadInputError
from kvqe.files import atomic_output_file, check_output_path
from kvqe.sdk.encoders import CHROMAS, CODECS
from kvqe.sdk.images import IMAGE_SUFFIXES, decode_image
from kvqe.sdk.loader import load
from kvqe.sdk.model import Model
from kvqe.sdk.video_files import VIDEO_SUFFIXES
from kvqe.sdk.video_out import PIPE_FORMATS, STDOUT, VideoOutput


def enhance_image(model: Model, source: Path, target: Path, tile: int | None,
                   limits: dict[str, Any]) -> dict[str, Any]:
    """Enhance the image ``source`` into ``target`` (atomically); the facts the command reports."""
    image, conversion = decode_image(source, max_pixels=limits["max_pixels"])
    result = model.enhance(image, tile=tile, max_pixels=limits["max_pixels"])
    with atomic_output_file(target) as tmp:
        if not cv2.imwrite(str(tmp), result):
            raise BadInputError(f"{target}: OpenCV cannot write this image format")
    return {"frames": 1, "width": image.shape[1], "height": image.shape[0],
            "out_width": result.shape[1], "out_height": result.shape[0], **({"conversion": conversion} if conversion else {})}


def enhance_job(model: Model, source: str, out_dir: str, tile: int | None, limits: dict[str, Any]) -> dict[str, Any]:
    """One image or video enhanced (on a Ray actor) into ``out_dir`` under its own name, as ``--json`` prints
    it; a video is written as local ``kvqe enhance`` writes it (the input's codec family, audio copied)."""
    started = time.perf_counter()
    target = Path(out_dir) / Path(source).name
    if Path(source).suffix.lower() in IMAGE_SUFFIXES:
        facts = enhance_image(model, Path(source), target, tile, limits)
    else:
        written = model.enhance_video(source, target, tile=tile, **limits)
        facts = {"frames": written.frames, "width": written.width, "height": written.height,
                 "out_width": written.out_width, "out_height": written.out_height, "codec": written.codec}
    return {"input": source, "output": str(target), **facts, "backend": model.backend,
            "precision": model.precision, "seconds": round(time.perf_counter() - started, 3)}


def _enhance_on_ray(input_path: str, output_path: str, bundle: str, options: dict[str, Any], tile: int | None,
                    limits: dict[str, Any], engine: dict[str, Any], as_json: bool) -> None:
    """``--engine ray``: every image and video INPUT names (a folder or a glob) into the directory OUTPUT."""
    from kvqe.commands.score import expand

    scaleout.require_ray()
    media = IMAGE_SUFFIXES | VIDEO_SUFFIXES
    sources = [path for path in expand(input_path) if Path(path).suffix.lower() in media]
    if not sources:
        raise BadInputError(f"{input_path}: --engine ray enhances images and videos; this names none")
    out_dir = Path(output_path)
    if out_dir.exists() and not out_dir.is_dir():
        raise BadInputError(f"{output_path}: --engine ray writes into a directory, and this is a file")
    out_dir.mkdir(parents=True, exist_ok=True)
    job = functools.partial(enhance_job, out_dir=str(out_dir.resolve()), tile=tile, limits=limits)
    rows = run_on_ray(sources, job, bundle, options, engine, as_json)
    failures = [row["exit_code"] for row in rows if "error" in row]
    if failures:
        sys.exit(failures[0])


def _enhance_video(model: Model, source: str, output: str, tile: int | None, video: dict[str, Any],
                   limits: dict[str, Any]) -> dict[str, Any]:
    """Enhance the video ``source`` into ``output`` with a progress bar on stderr; the facts the command
    reports, a note on stderr for each stream a pipe leaves out."""
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


@click.command()
@click.argument("input_path", metavar="INPUT")
@click.option("-o", "--output", "output_path", required=True,
              help="Output image or video path; '-' writes video frames to stdout (see --format).")
@click.option("--bundle", default="sr", show_default=True, help="Bundle directory or embedded name.")
@backend_option
@precision_option
@threads_option
@click.option("--tile", type=int, default=None,
              help="Tile size in input pixels (0: none; default: the bundle's, else sized to a memory budget).")
@click.option("--codec", type=click.Choice(sorted(CODECS)), default=None,
              help="Video codec (default: h264; vp9 for .webm).")
@click.option("--crf", type=click.IntRange(min=0), default=None,
              help="Video quality, lower is better (default per codec: keeps the enhancement at 4:2:0; at least "
                   "45 dB PSNR from the model's output with --master).")
@click.option("--master", is_flag=True,
              help="Write the faithful intermediate (10-bit 4:4:4) instead of video every player opens (8-bit 4:2:0).")
@click.option("--chroma", type=click.Choice(sorted(CHROMAS)), default=None,
              help="420: 8-bit 4:2:0, which every player decodes (files' default); 444: 10-bit 4:4:4 (--master).")
@click.option("--format", "pipe_format", type=click.Choice(sorted(PIPE_FORMATS)), default=None,
              help="With -o -: y4m (default; carries size and rate) or rawvideo (bgr24, the model's pixels).")
@with_engine_options
@timeout_option
@max_pixels_option
@demuxers_option
@undeployable_option
@json_option
@handle_errors
def enhance(input_path: str, output_path: str, bundle: str, backend: str, precision: str | None, threads: int,
            tile: int | None, codec: str | None, crf: int | None, master: bool, chroma: str | None,
            pipe_format: str | None, engine: str, address: str | None, actors: int, retries: int, timeout: float,
            max_pixels: int, demuxers: str, allow_undeployable: bool, as_json: bool) -> None:
    """Super-resolve INPUT (image or video) into OUTPUT (a file, or '-' for video frames on stdout); with
    --engine ray, every image and video of INPUT (a folder or a glob) into the directory OUTPUT."""
    check_numbers(threads=threads, tile=tile, timeout=timeout, max_pixels=max_pixels)
    if engine == "ray":
        options = {"backend": backend, "precision": precision, "threads": threads,
                   "allow_undeployable": allow_undeployable}
        return _enhance_on_ray(input_path, output_path, bundle, options, tile, source_limits(timeout, max_pixels, demuxers=demuxers),
                               {"address": address, "actors": actors, "retries": retries}, as_json)
    source, target = Path(input_path), Path(output_path)
    is_image = source.suffix.lower() in IMAGE_SUFFIXES
    to_stdout = output_path == STDOUT
    if is_image != (target.suffix.lower() in IMAGE_SUFFIXES) and not (to_stdout and not is_image):
        wanted = f"an image output name ({', '.join(sorted(IMAGE_SUFFIXES))})" if is_image else \
            "a video output name (e.g. .mp4 or .mkv), not an image's"
        raise BadInputError(f"{target}: {'an image' if is_image else 'a video'} input needs {wanted}")
    if master and chroma not in (None, "444"):
        raise BadInputError(f"--master writes 10-bit 4:4:4; it cannot be combined with --chroma {chroma}")
    video: dict[str, Any] = {"codec": codec, "crf": crf, "chroma": "444" if master else chroma,
                             "format": pipe_format}
    if is_image:
        given = [f"--{name}" for name, value in (("codec", codec), ("crf", crf), ("chroma", chroma),
                                                 ("format", pipe_format)) if value is not None]
        given += ["--master"] if master else []
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
    require_task(model, "sr", "kvqe enhance")
    limits = source_limits(timeout, max_pixels, demuxers=demuxers)
    facts = enhance_image(model, source, target, tile, limits) if is_image else _enhance_video(
        model, input_path, output_path, tile, video, limits)
    seconds = round(time.perf_counter() - started, 3)
    record = {"input": input_path, "output": output_path, **facts, "backend": model.backend,
              "precision": model.precision, "seconds": seconds}
    text = (f"{input_path} -> {output_path}: {facts['width']}x{facts['height']} -> "
            f"{facts['out_width']}x{facts['out_height']}, {facts['frames']} frame(s)"
            f"{'' if is_image else _video_summary(facts)}, {model.backend}/{model.precision}, {seconds:.2f} s")
    with contextlib.redirect_stdout(sys.stderr if to_stdout else sys.stdout):  # stdout holds the video then
        emit(record, as_json, text)
