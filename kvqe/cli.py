"""``kvqe``: score, enhance and inspect bundles from the command line (see INTERFACE.md)."""
from __future__ import annotations

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
from kvqe.sdk.sources import DEFAULT_MAX_PIXELS, DEFAULT_TIMEOUT_S, IMAGE_SUFFIXES, open_raw_pipe, read_image
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


@main.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--bundle", default="vqa", show_default=True, help="Bundle directory or embedded name.")
@_backend
@_precision
@_threads
@click.option("--raw", "raw_size", metavar="WxH", help="Frame size of raw video on stdin (SOURCE '-').")
@click.option("--pix-fmt", type=click.Choice(["bgr24", "rgb24"]), default="bgr24", show_default=True)
@click.option("--fps", type=float, default=None, help="Frame rate (overrides the container; for '-').")
@_timeout
@_max_pixels
@_protocols
@_undeployable
@_json
@handle_errors
def score(sources: tuple[str, ...], bundle: str, backend: str, precision: str | None, threads: int,
          raw_size: str | None, pix_fmt: str, fps: float | None, timeout: float, max_pixels: int, protocols: str,
          allow_undeployable: bool, as_json: bool) -> None:
    """Score each SOURCE (video file, URL, image, or '-' for raw frames on stdin). A source that fails is
    reported and the others are still scored; the exit code is then the first failure's (2: bad input)."""
    size = _parse_size(raw_size) if raw_size else None
    if "-" in sources and size is None:
        raise BadInputError("SOURCE '-' reads raw frames from stdin and needs --raw WxH")
    if sources.count("-") > 1:
        raise BadInputError("SOURCE '-' (stdin) can be given once")
    limits = _limits(timeout, max_pixels, protocols)
    model = load(bundle, backend=backend, precision=precision, threads=threads,
                 allow_undeployable=allow_undeployable)
    _require_task(model, "vqa", "kvqe score")
    failure = 0
    for source in sources:
        started = time.perf_counter()
        try:
            if source == "-" and size is not None:
                result = model.score(open_raw_pipe(sys.stdin.buffer, *size, pix_fmt=pix_fmt, fps=fps,
                                                   timeout=limits["timeout"], max_pixels=limits["max_pixels"]))
            else:
                result = model.score(source, fps=fps, **limits)
        except BrokenPipeError:
            raise
        except Exception as exc:  # noqa: BLE001 (one bad source must not stop the others)
            failure = failure or exit_code(exc)
            message = describe(exc)
            emit({"source": source, "error": message}, as_json, f"{source}: error: {message}")
            continue
        seconds = round(time.perf_counter() - started, 3)
        record = {"source": source, "score": result.score, "frames": result.frames,
                  "backend": model.backend, "precision": model.precision, "seconds": seconds}
        emit(record, as_json, f"{source}\t{result.score:.4f}\t({result.frames} frames, "
                              f"{model.backend}/{model.precision}, {seconds:.2f} s)")
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


def _enhance_video(model: Model, source: str, target: Path, tile: int | None,
                   limits: dict[str, Any]) -> dict[str, Any]:
    with progress_bar(None, "enhance") as bar:

        def advance(done: int, total: int | None) -> None:
            bar.total = total
            bar.update(done - bar.n)

        result = model.enhance_video(source, target, tile=tile, progress=advance, **limits)
    return {"frames": result.frames, "width": result.width, "height": result.height,
            "out_width": result.out_width, "out_height": result.out_height}


@main.command()
@click.argument("input_path", metavar="INPUT")
@click.option("-o", "--output", "output_path", required=True, help="Output image or video path.")
@click.option("--bundle", default="sr", show_default=True, help="Bundle directory or embedded name.")
@_backend
@_precision
@_threads
@click.option("--tile", type=click.IntRange(min=0), default=None,
              help="Tile size in input pixels (0: none; default: the bundle's, else sized to a memory budget).")
@_timeout
@_max_pixels
@_undeployable
@_json
@handle_errors
def enhance(input_path: str, output_path: str, bundle: str, backend: str, precision: str | None, threads: int,
            tile: int | None, timeout: float, max_pixels: int, allow_undeployable: bool, as_json: bool) -> None:
    """Super-resolve INPUT (image or video) into OUTPUT."""
    source, target = Path(input_path), Path(output_path)
    is_image = source.suffix.lower() in IMAGE_SUFFIXES
    if is_image != (target.suffix.lower() in IMAGE_SUFFIXES):
        wanted = f"an image output name ({', '.join(sorted(IMAGE_SUFFIXES))})" if is_image else \
            "a video output name (e.g. .mp4 or .mkv), not an image's"
        raise BadInputError(f"{target}: {'an image' if is_image else 'a video'} input needs {wanted}")
    check_output_path(target, source=source)
    if is_image and not cv2.haveImageWriter(str(target)):
        raise BadInputError(f"{target}: OpenCV cannot write {target.suffix} images here")
    started = time.perf_counter()
    model = load(bundle, backend=backend, precision=precision, threads=threads,
                 allow_undeployable=allow_undeployable)
    _require_task(model, "sr", "kvqe enhance")
    limits = _limits(timeout, max_pixels)
    facts = _enhance_image(model, source, target, tile, limits) if is_image else _enhance_video(
        model, input_path, target, tile, limits)
    seconds = round(time.perf_counter() - started, 3)
    record = {"input": input_path, "output": output_path, **facts, "backend": model.backend,
              "precision": model.precision, "seconds": seconds}
    emit(record, as_json, f"{input_path} -> {output_path}: {facts['width']}x{facts['height']} -> "
                          f"{facts['out_width']}x{facts['out_height']}, {facts['frames']} frame(s), "
                          f"{model.backend}/{model.precision}, {seconds:.2f} s")


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
