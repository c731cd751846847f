"""``kvqe-export MODEL --out DIR ...`` builds a verified bundle; ``kvqe-export list`` shows the registry."""
from __future__ import annotations

import importlib.util
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
    from kvqe.export.registry import list_models

    for card in list_models():
        record = {"name": card.name, "task": card.task, "params": card.params, "gflops": card.gflops,
                  "flops_input": card.flops_input, "weights_source": card.weights_source,
                  "licence": card.licence}
        emit(record, as_json, f"{card.name:24s} {card.task:4s} {card.params / 1e6:8.2f}M params "
                              f"{card.gflops:9.2f} GFLOPs ({card.flops_input})  weights: "
                              f"{card.weights_source}  licence: {card.licence}")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model")
@click.option("--out", "out", type=click.Path(path_type=Path), help="Bundle directory to write.")
@click.option("--weights", "weights", multiple=True, metavar="PART=PATH",
              help="Checkpoint file, once per part (e.g. --weights model=ckpt.pth).")
@click.option("--arch", default=None, help="Registered architecture when MODEL is a checkpoint path.")
@click.option("--formats", default="onnx", show_default=True, help="Comma-separated artifact formats.")
@click.option("--precision", "precisions", default="fp32", show_default=True, help="Comma-separated precisions.")
@click.option("--score-range", default=None, metavar="LOW,HIGH", help="VQA: the score range to declare.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line on stdout.")
@handle_errors
def main(model: str, out: Path | None, weights: tuple[str, ...], arch: str | None, formats: str,
         precisions: str, score_range: str | None, as_json: bool) -> None:
    """Export registered MODEL (or `list` the registry) into a verified bundle at --out."""
    if importlib.util.find_spec("torch") is None:
        raise missing_extra("torch", "export")
    if model == _LIST:
        _list_models(as_json)
        return
    if out is None:
        raise BadInputError("--out DIR is required")
    from kvqe.export.bundle_builder import ExportRequest, build_bundle

    name, parts = _parse_weights(weights, model, arch)
    request = ExportRequest(name, out, parts, _split(formats), _split(precisions), _parse_range(score_range))
    summary: dict[str, Any] = build_bundle(request, progress=lambda step: click.echo(f"kvqe-export: {step}", err=True))
    lines = [f"{summary['model']} -> {summary['out']} ({summary['seconds']:.1f} s)"]
    lines += [f"  {a['backend']}/{a['precision']} {a['file']}: max |onnx - torch| = {a['max_abs_diff']:.2e}, "
              f"deployable={a['deployable']}" for a in summary["artifacts"]]
    emit(summary, as_json, "\n".join(lines))
