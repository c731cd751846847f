"""``kvqe-export MODEL --out DIR ...`` builds a verified bundle; ``kvqe-export list`` shows the registry."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import click

from kvqe.clitools import emit, handle_errors
from kvqe.errors import BadInputError, missing_extra

_LIST = "list"


def _split(values: str) -> list[str]:
    return [v.strip() for v in values.split(",") if v.strip()]


def _parse_weights(items: tuple[str, ...], model: str, arch: str | None) -> tuple[str, dict[str, Path]]:
    """MODEL may be a checkpoint path with --arch; --weights takes PART=PATH (a bare PATH means 'model')."""
    parts: dict[str, Path] = {}
    if arch is not None:
        parts["model"] = Path(model)
        model = arch
    for item in items:
        part, sep, path = item.partition("=")
        if not sep:
            part, path = "model", item
        if part in parts:
            raise BadInputError(f"--weights gives part {part!r} twice")
        parts[part] = Path(path)
    return model, parts


def _parse_range(value: str | None) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        low, high = (float(v) for v in value.split(","))
    except ValueError:
        raise BadInputError(f"--score-range expects LOW,HIGH, got {value!r}") from None
    return low, high


def _list_models(as_json: bool) -> None:
    from kvqe.models.registry import list_models

    for card in list_models():
        record = {"name": card.name, "task": card.task, "params": card.params, "gflops": card.gflops,
                  "flops_input": card.flops_input, "weights_source": card.weights_source,
                  "licence": card.licence}
        emit(record, as_json, f"{card.name:24s} {card.task:4s} {card.params / 1e6:8.2f}M params "
                              f"{card.gflops:9.2f} GFLOPs ({card.flops_input})  weights: "
                              f"{card.weights_source}  licence: {card.licence}")


def _figures(metrics: dict[str, Any]) -> str:
    return "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(metrics.items()))


def _table(summary: dict[str, Any]) -> str:
    lines = [f"{summary['model']} -> {summary['out']} ({summary['seconds']:.1f} s)"]
    for a in summary["artifacts"]:
        state = "deployable" if a["deployable"] else "NOT DEPLOYABLE"
        name = a["backend"] + "/" + a["precision"] + (f" {a['stage']}" if "stage" in a else "")
        lines.append(f"  {name:18s} {a['bytes'] / 1e6:8.2f} MB  {state:14s} {_figures(a['metrics'])}")
        lines += [f"      gate failed: {failure}" for failure in a["failures"]]
        if a.get("float_layers"):
            lines.append(f"      kept float by the INT8 search: {len(a['float_layers'])} layer(s): "
                         + ", ".join(a["float_layers"][:8]) + (" ..." if len(a["float_layers"]) > 8 else ""))
        if a.get("latency"):
            lines.append(f"      latency {a['latency']['ms']:.1f} ms vs {a['latency']['fp32_ms']:.1f} ms at fp32 "
                         f"({a['latency']['ratio']:.2f}x)")
    for c in summary.get("pipeline", []):
        state = "deployable" if c["deployable"] else "NOT DEPLOYABLE"
        lines.append(f"  pipeline {c['backend'] + '/' + c['precision']:18s} {state:14s} {_figures(c['metrics'])}")
    lines += [f"  {u['format']}/{u['precision']}: unavailable: {u['error']}" for u in summary["unavailable"]]
    lines += [f"  warning: {w}" for w in summary["warnings"]]
    return "\n".join(lines)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model")
@click.option("--out", "out", type=click.Path(path_type=Path), help="Bundle directory to write.")
@click.option("--weights", "weights", multiple=True, metavar="PART=PATH",
              help="Checkpoint file, once per part (e.g. --weights model=ckpt.pth; a model made of several "
                   "checkpoints takes one per part, e.g. --weights unet=... --weights vq=..., and names the parts "
                   "it misses).")
@click.option("--arch", default=None, help="Registered architecture when MODEL is a checkpoint path.")
@click.option("--formats", default="onnx", show_default=True,
              help="Comma-separated: onnx, onnxruntime-int8, openvino, tensorrt.")
@click.option("--precision", "precisions", default="fp32", show_default=True,
              help="Comma-separated: fp32, fp16, int8.")
@click.option("--calib", type=click.Path(path_type=Path), default=None,
              help="Videos and/or images (a directory or a list file) for calibration and validation.")
@click.option("--val", type=click.Path(path_type=Path), default=None,
              help="Held-out videos and/or images to validate on (default: a share of --calib's sources).")
@click.option("--search-budget", type=click.FloatRange(min=0), default=900, show_default=True, metavar="SECONDS",
              help="INT8: time the search for layers to keep float may take when the policy misses a gate "
                   "(0: no search).")
@click.option("--gate", "gates", multiple=True, metavar="EXPR",
              help="Accuracy gate overriding the defaults, e.g. srcc>=0.99 or int8:psnr>=35.")
@click.option("--calib-method", type=click.Choice(["minmax", "entropy", "percentile"]), default="percentile",
              show_default=True, help="ONNX Runtime INT8 calibration method (percentile measured best for SR).")
@click.option("--per-channel/--per-tensor", default=True, show_default=True, help="INT8 weight granularity.")
@click.option("--calib-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="At most this many calibration samples.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the calibration/validation sampling.")
@click.option("--tile", type=click.IntRange(min=16), default=256, show_default=True,
              help="SR: the largest tile a TensorRT engine is built for.")
@click.option("--score-range", default=None, metavar="LOW,HIGH", help="VQA: the score range to declare.")
@click.option("--out-scale", type=int, default=None, metavar="N",
              help="Pipeline models (x4 SR in stages): output scale 4 (default), 2, or 1 (enhance in place: "
                   "the x4 result area-resized back to the input size).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line on stdout.")
@handle_errors
def main(model: str, out: Path | None, weights: tuple[str, ...], arch: str | None, formats: str,
         precisions: str, calib: Path | None, val: Path | None, search_budget: float, gates: tuple[str, ...],
         calib_method: str, per_channel: bool, calib_size: int, seed: int, tile: int, score_range: str | None,
         out_scale: int | None, as_json: bool) -> None:
    """Export registered MODEL (or `list` the registry) into a verified bundle at --out.

    Exit codes: 0 ok, 2 bad input, 3 an accuracy gate failed (the artifact is kept, marked not
    deployable), 4 a requested backend is unavailable here (the other artifacts are kept).
    """
    if importlib.util.find_spec("torch") is None:
        raise missing_extra("torch", "export")
    if model == _LIST:
        _list_models(as_json)
        return
    if out is None:
        raise BadInputError("--out DIR is required")
    from kvqe.calibration.data import SampleSettings
    from kvqe.export.bundle_builder import ExportRequest, build_bundle, exit_code

    name, parts = _parse_weights(weights, model, arch)
    request = ExportRequest(name, out, parts, _split(formats), _split(precisions), _parse_range(score_range),
                            calib, gates, calib_method, per_channel, SampleSettings(calib_size=calib_size, seed=seed),
                            tile=tile, out_scale=out_scale, val=val, search_budget=search_budget)
    summary = build_bundle(request, progress=lambda step: click.echo(f"kvqe-export: {step}", err=True))
    emit(summary, as_json, _table(summary))
    code = exit_code(summary)
    if code:
        reasons = {3: "an accuracy gate failed (artifact kept, deployable: false)",
                   4: "a requested backend is unavailable here (other artifacts written)"}
        click.echo(f"kvqe-export: {reasons[code]}", err=True)
        sys.exit(code)
