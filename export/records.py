"""What a bundle says about its artifacts: manifest entries (files, producer versions, accuracy records),
and writing ``manifest.json``, ``report.json`` and the validation set into the staging directory."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import onnx
import onnxruntime
import torch

from kvqe.bundle import write_manifest
from kvqe.calibration.comparison import Comparator, RunComparison, compare_runs
from kvqe.calibration.contract import SampleSet
from kvqe.calibration.gates import Gate
from kvqe.export.artifacts import BuildContext, BuiltArtifact
from kvqe.export.request import ExportRequest, Prepared
from kvqe.files import sha256_file
from kvqe.manifest import Manifest
from kvqe.runtimes import Runner

VALIDATION_FILE = "validation.npz"
REPORT_FILE = "report.json"


def producer_versions() -> dict[str, str]:
    versions = {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
    try:
        import openvino

        versions["openvino"] = openvino.get_version()
    except ImportError:
        pass
    return versions


def file_entry(path: Path) -> dict[str, Any]:
    return {"file": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size}


def reference_entry(path: Path, export: dict[str, Any], accuracy: dict[str, Any]) -> dict[str, Any]:
    """The manifest entry of an FP32 ONNX graph validated against torch (``accuracy``): the bundle's reference."""
    return {"backend": "onnxruntime", "precision": "fp32", "format": "onnx", **file_entry(path), "export": export,
            "producer": producer_versions(), "calibration": None, "accuracy": accuracy, "deployable": True}


def accuracy_record(runner: Runner, wanted_precision: str | None, samples: SampleSet, comparator: Comparator,
                    reference: list[Any], gates: tuple[Gate, ...], scope: str | None = None,
                    compared: RunComparison | None = None) -> tuple[dict[str, Any], str | None]:
    """Accuracy record of one artifact, or of a pipeline configuration (``runner`` composes its stages), run
    on the validation set against the reference outputs; and the precision it executed at (OpenVINO).
    ``compared``: the same artifact's comparison on the same set and gates, already made (the INT8 search's),
    used instead of running it again."""
    result = compared if compared is not None else compare_runs(runner, reference, samples.inputs(), comparator,
                                                                 gates)
    executed = result.executed_precision
    failures = result.gate_failures
    if executed is not None and wanted_precision and executed != wanted_precision:
        failures.append(f"executed at {executed}, not the requested {wanted_precision}")
    accuracy = {"reference": "onnxruntime fp32", "metrics": result.figures, "gates": [str(g) for g in gates],
                "results": [r.to_json() for r in result.gate_results], "failures": failures, "passed": not failures}
    if scope is not None:
        accuracy["scope"] = scope
    return accuracy, executed


def built_entry(built: BuiltArtifact, fmt: str, accuracy: dict[str, Any], executed: str | None,
                context: BuildContext, calib_record: dict[str, Any] | None) -> dict[str, Any]:
    """The manifest entry of a built (non-reference) artifact."""
    main, *extra = built.files
    return {
        "backend": built.backend, "precision": built.precision, "format": fmt, **file_entry(main),
        "extra_files": [file_entry(p) for p in extra], "export": built.export, "runtime": built.runtime,
        "executed_precision": executed,
        "producer": producer_versions(), "policy": context.policy.to_json() if built.calibration else None,
        "calibration": calib_record if built.calibration else None, "accuracy": accuracy,
        "deployable": accuracy["passed"]}


def write_bundle_files(stage: Path, request: ExportRequest, prepared: Prepared, artifacts: list[dict[str, Any]],
                       unavailable: list[dict[str, str]], pipeline: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the validation set, ``manifest.json`` and ``report.json`` into the staging directory; returns
    the report. ``pipeline``: a pipeline bundle's stages, glue constants and configurations."""
    card = prepared.card
    prepared.valid_set.save(stage / VALIDATION_FILE)
    manifest = Manifest(
        model={"name": card.name, "description": card.description,
               "params": sum(p.numel() for p in prepared.module.parameters()),  # the card's, unless overridden
               "gflops": card.gflops, "flops_input": card.flops_input},
        task=card.task, input=card.input, output=prepared.output_spec,
        weights={"source": prepared.provenance["source"], "files": prepared.provenance["files"],
                 "weights_source": card.weights_source, "licence": card.licence},
        licence=card.licence,
        validation={**file_entry(stage / VALIDATION_FILE), "origin": "--calib" if request.calib else "kvqe sample photo",
                    "record": prepared.calib_record},
        artifacts=tuple(artifacts), training=prepared.provenance.get("training"), pipeline=pipeline,
    )
    write_manifest(stage, manifest)
    report = {
        "model": card.name, "task": card.task,
        "artifacts": [{"backend": a["backend"], "precision": a["precision"], "file": a["file"],
                       **({"stage": a["stage"]} if "stage" in a else {}),
                       "bytes": a["bytes"] + sum(e["bytes"] for e in a.get("extra_files", [])),
                       "deployable": a["deployable"],
                       "metrics": a["accuracy"]["metrics"] if "metrics" in a["accuracy"]
                       else {"max_abs_diff_vs_torch": a["accuracy"]["max_abs_diff"]},
                       "failures": a["accuracy"].get("failures", []),
                       **({"float_layers": a["mixed_precision"]["float_layers"]} if a.get("mixed_precision") else {}),
                       **({"latency": a["latency"]} if a.get("latency") else {})} for a in artifacts],
        "unavailable": unavailable,
        "warnings": (prepared.calib_record or {}).get("warnings", []) + _speed_warnings(artifacts),
    }
    if pipeline is not None:
        report["pipeline"] = pipeline.get("configurations", [])
    (stage / REPORT_FILE).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report


def _speed_warnings(artifacts: list[dict[str, Any]]) -> list[str]:
    """An INT8 artifact no faster than FP32 on its backend is worth saying: its point is speed."""
    return [f"{a['backend']} int8 ({a['file']}) is no faster than fp32: {a['latency']['ms']:.1f} ms against "
            f"{a['latency']['fp32_ms']:.1f} ms ({a['latency']['ratio']:.2f}x; under 5% is timing noise)"
            for a in artifacts if a.get("latency") and not a["latency"]["faster_than_fp32"]]


def summarise(report: dict[str, Any], build_seconds: dict[str, float], request: ExportRequest,
              started: float) -> dict[str, Any]:
    """The CLI summary: the report, each artifact's build time, the output path and the total time."""
    for entry in report["artifacts"]:
        entry["seconds"] = build_seconds[entry["file"]]
    return {**report, "out": str(request.out), "seconds": round(time.perf_counter() - started, 2)}
