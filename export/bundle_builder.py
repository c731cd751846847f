"""Build a verified bundle: registry model + weights -> ONNX -> validation vs torch -> manifest, atomically."""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import onnxruntime
import torch

from kvqe import __version__
from kvqe.bundle import SCHEMA_VERSION, write_manifest
from kvqe.errors import BadInputError
from kvqe.export.onnx_export import OnnxExportSpec, export_onnx, torch_reference, validate_onnx
from kvqe.export.registry import ModelCard, get_model
from kvqe.export.validation_inputs import validation_batches
from kvqe.files import atomic_output_dir, sha256_file

SUPPORTED_FORMATS = ("onnx",)
SUPPORTED_PRECISIONS = ("fp32",)


@dataclass(frozen=True)
class ExportRequest:
    """What ``kvqe-export`` was asked for."""

    model: str
    out: Path
    weights: dict[str, Path]
    formats: Sequence[str] = ("onnx",)
    precisions: Sequence[str] = ("fp32",)
    score_range: tuple[float, float] | None = None

    def check(self) -> None:
        for fmt in self.formats:
            if fmt not in SUPPORTED_FORMATS:
                raise BadInputError(f"format {fmt!r} is not supported yet; supported: {', '.join(SUPPORTED_FORMATS)}")
        for precision in self.precisions:
            if precision not in SUPPORTED_PRECISIONS:
                raise BadInputError(
                    f"precision {precision!r} is not supported yet; supported: {', '.join(SUPPORTED_PRECISIONS)}")


def producer_versions() -> dict[str, str]:
    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def _output_spec(card: ModelCard, score_range: tuple[float, float] | None) -> dict[str, Any]:
    output = dict(card.output)
    if score_range is not None:
        if card.task != "vqa":
            raise BadInputError("--score-range applies to VQA models only")
        if not score_range[0] < score_range[1]:
            raise BadInputError(f"score range {score_range} must be increasing")
        output["score_range"] = [float(score_range[0]), float(score_range[1])]
    return output


def build_bundle(request: ExportRequest, progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Export, validate and write the bundle at ``request.out``; returns a summary for the CLI.

    Nothing appears at ``request.out`` unless every step succeeds.
    """
    request.check()
    started = time.perf_counter()
    entry = get_model(request.model)
    card = entry.card
    output_spec = _output_spec(card, request.score_range)
    progress(f"building {card.name}")
    module = entry.factory().eval()
    progress("loading weights")
    provenance = entry.load_weights(module, request.weights)
    spec = OnnxExportSpec.from_card(card)
    batches = validation_batches(card)
    with atomic_output_dir(request.out) as stage:
        onnx_path = stage / "model.fp32.onnx"
        progress("exporting ONNX")
        export_onnx(module, spec, batches[0], onnx_path)
        progress("validating ONNX Runtime against torch")
        report = validate_onnx(onnx_path, torch_reference(module, spec), batches, spec)
        artifact = {
            "backend": "onnxruntime", "precision": "fp32", "format": "onnx", "file": onnx_path.name,
            "sha256": sha256_file(onnx_path), "bytes": onnx_path.stat().st_size,
            "export": spec.to_json(), "producer": producer_versions(),
            "calibration": None, "accuracy": report.to_json(), "deployable": True,
        }
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "kvqe_version": __version__,
            "model": {"name": card.name, "description": card.description, "params": card.params,
                      "gflops": card.gflops, "flops_input": card.flops_input},
            "task": card.task,
            "input": card.input,
            "output": output_spec,
            "weights": {"source": provenance["source"], "files": provenance["files"],
                        "weights_source": card.weights_source, "licence": card.licence},
            "licence": card.licence,
            "artifacts": [artifact],
        }
        write_manifest(stage, manifest)
    return {
        "model": card.name, "out": str(request.out), "task": card.task,
        "artifacts": [{"backend": "onnxruntime", "precision": "fp32", "file": artifact["file"],
                       "max_abs_diff": report.max_abs_diff, "deployable": True}],
        "seconds": round(time.perf_counter() - started, 3),
    }
