"""Build a verified bundle: registry model + weights -> FP32 ONNX validated against torch -> every
requested artifact -> accuracy vs the FP32 reference on held-out data -> gates -> manifest, atomically.

A gate that fails keeps its artifact with ``deployable: false``; a backend that is unavailable here
(e.g. TensorRT without a GPU) is reported and the other artifacts are still written.
"""
from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import onnxruntime
import torch

from kvqe import __version__
from kvqe.bundle import SCHEMA_VERSION, write_manifest
from kvqe.calibration.accuracy import compare, outputs
from kvqe.calibration.contract import SampleSet
from kvqe.calibration.data import SampleSettings, build_sample_sets
from kvqe.calibration.gates import Gate, gates_for
from kvqe.calibration.policy import POLICIES
from kvqe.errors import BackendUnavailableError, BadInputError
from kvqe.export.artifacts import BUILDERS, BuildContext, BuiltArtifact, requested_artifacts
from kvqe.export.onnx_export import OnnxExportSpec, export_onnx, torch_reference, validate_onnx
from kvqe.export.validation_inputs import builtin_validation_set, validation_batches
from kvqe.files import atomic_output_dir, sha256_file
from kvqe.models.registry import ModelCard, get_model
from kvqe.runtimes import Runner, create_runner

VALIDATION_FILE = "validation.npz"
REPORT_FILE = "report.json"


@dataclass(frozen=True)
class ExportRequest:
    """What ``kvqe-export`` was asked for.

    ``out_scale``: a pipeline bundle's output scale (``--out-scale``; None: the card's). ``factory``:
    Python API only, builds the torch module instead of the registered factory (tests export SinSR's
    reduced config with it); the weights still load through the model's own loader.
    """

    model: str
    out: Path
    weights: dict[str, Path]
    formats: Sequence[str] = ("onnx",)
    precisions: Sequence[str] = ("fp32",)
    score_range: tuple[float, float] | None = None
    calib: Path | None = None
    gates: Sequence[str] = ()
    calib_method: str = "percentile"
    per_channel: bool = True
    samples: SampleSettings = field(default_factory=SampleSettings)
    tile: int = 256
    out_scale: int | None = None
    factory: Callable[[], torch.nn.Module] | None = field(default=None, repr=False)


def producer_versions() -> dict[str, str]:
    versions = {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
    try:
        import openvino

        versions["openvino"] = openvino.get_version()
    except ImportError:
        pass
    return versions


def _output_spec(card: ModelCard, score_range: tuple[float, float] | None, out_scale: int | None) -> dict[str, Any]:
    output = dict(card.output)
    if score_range is not None:
        if card.task != "vqa":
            raise BadInputError("--score-range applies to VQA models only")
        if not score_range[0] < score_range[1]:
            raise BadInputError(f"score range {score_range} must be increasing")
        output["score_range"] = [float(score_range[0]), float(score_range[1])]
    if out_scale is not None:
        if "pipeline" not in card.extra:
            raise BadInputError(f"--out-scale applies to pipeline models (sinsr, sinsr+realesrgan), not {card.name}")
        allowed = card.extra.get("out_scales", ())
        if out_scale not in allowed:
            raise BadInputError(f"{card.name}: --out-scale must be one of {', '.join(map(str, allowed))}, "
                                f"got {out_scale}")
        output["scale"] = out_scale
    return output


def file_entry(path: Path) -> dict[str, Any]:
    return {"file": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size}


def evaluate(make_runner: Callable[[], Runner], wanted_precision: str | None, samples: SampleSet,
             reference: list[Any], output_spec: dict[str, Any], gates: Sequence[Gate],
             scope: str | None = None) -> tuple[dict[str, Any], str | None]:
    """Accuracy record of one artifact, or of a pipeline configuration (``make_runner`` composes its
    stages), run on the validation set; and the precision it executed at (OpenVINO)."""
    runner = make_runner()
    with runner:
        figures = compare(outputs(runner, samples, output_spec), reference, samples)
        executed = getattr(runner, "executed_precision", None)
    results = [gate(figures) for gate in gates]
    failures = [r.detail for r in results if not r]
    if executed is not None and wanted_precision and executed != wanted_precision:
        failures.append(f"executed at {executed}, not the requested {wanted_precision}")
    accuracy = {"reference": "onnxruntime fp32", "metrics": figures, "gates": [str(g) for g in gates],
                "results": [{"gate": str(g), "value": r.value, "passed": r.passed, "detail": r.detail}
                            for g, r in zip(gates, results)], "failures": failures, "passed": not failures}
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


@dataclass
class Prepared:
    """A checked request: the card, what to build, the module with its weights, and the sample sets."""

    card: ModelCard
    output_spec: dict[str, Any]
    pairs: list[tuple[str, str]]
    user_gates: list[Gate]
    module: torch.nn.Module
    provenance: dict[str, Any]
    calib_set: SampleSet | None
    valid_set: SampleSet
    calib_record: dict[str, Any] | None


def prepare(request: ExportRequest, progress: Callable[[str], None]) -> Prepared:
    """Check the request (before anything is built), build the module, load its weights, sample the data."""
    pairs = requested_artifacts(list(request.formats), list(request.precisions))
    user_gates = [Gate.parse(expression) for expression in request.gates]
    entry = get_model(request.model)
    card = entry.card
    output_spec = _output_spec(card, request.score_range, request.out_scale)
    for _, precision in pairs:
        gates_for(card.task, precision, user_gates)  # a gate that does not fit the task fails now
    if any(p == "int8" for _, p in pairs) and request.calib is None:
        raise BadInputError("INT8 needs calibration data: pass --calib DIR (videos and/or images)")
    if entry.check_weights is not None:
        entry.check_weights(request.weights)  # e.g. both SinSR checkpoints named, before building the net
    progress(f"building {card.name}")
    module = (request.factory or entry.factory)().eval()
    provenance = entry.load_weights(module, request.weights)
    teacher = provenance.get("training", {}).get("teacher", {})
    if card.task == "vqa" and teacher.get("units"):  # a distilled student scores in its teacher's units
        output_spec["units"] = teacher["units"]
    calib_set: SampleSet | None = None
    calib_record: dict[str, Any] | None = None
    if request.calib is not None:
        progress(f"sampling calibration and validation data from {request.calib}")
        calib_set, valid_set, calib_record = build_sample_sets(request.calib, card.task, card.input, request.samples)
    else:
        valid_set = builtin_validation_set(card)
    return Prepared(card, output_spec, pairs, user_gates, module, provenance, calib_set, valid_set, calib_record)


def write_bundle_files(stage: Path, request: ExportRequest, prepared: Prepared, artifacts: list[dict[str, Any]],
                       unavailable: list[dict[str, str]], **manifest_extra: Any) -> dict[str, Any]:
    """Write the validation set, ``manifest.json`` and ``report.json`` into the staging directory; returns
    the report. ``manifest_extra``: more top-level manifest entries (a pipeline's ``pipeline``)."""
    card = prepared.card
    prepared.valid_set.save(stage / VALIDATION_FILE)
    manifest = {
        "schema_version": SCHEMA_VERSION, "kvqe_version": __version__,
        "model": {"name": card.name, "description": card.description,
                  "params": sum(p.numel() for p in prepared.module.parameters()),  # the card's, unless overridden
                  "gflops": card.gflops, "flops_input": card.flops_input},
        "task": card.task, "input": card.input, "output": prepared.output_spec,
        "weights": {"source": prepared.provenance["source"], "files": prepared.provenance["files"],
                    "weights_source": card.weights_source, "licence": card.licence},
        "licence": card.licence,
        "validation": {**file_entry(stage / VALIDATION_FILE),
                       "origin": "--calib" if request.calib else "kvqe sample photo",
                       "record": prepared.calib_record},
        "artifacts": artifacts,
        **({"training": prepared.provenance["training"]} if "training" in prepared.provenance else {}),
        **manifest_extra,
    }
    write_manifest(stage, manifest)
    report = {
        "model": card.name, "task": card.task,
        "artifacts": [{"backend": a["backend"], "precision": a["precision"], "file": a["file"],
                       **({"stage": a["stage"]} if "stage" in a else {}),
                       "bytes": a["bytes"] + sum(e["bytes"] for e in a.get("extra_files", [])),
                       "deployable": a["deployable"],
                       "metrics": a["accuracy"]["metrics"] if "metrics" in a["accuracy"]
                       else {"max_abs_diff_vs_torch": a["accuracy"]["max_abs_diff"]},
                       "failures": a["accuracy"].get("failures", [])} for a in artifacts],
        "unavailable": unavailable, "warnings": (prepared.calib_record or {}).get("warnings", []),
    }
    if "pipeline" in manifest_extra:
        report["pipeline"] = manifest_extra["pipeline"].get("configurations", [])
    (stage / REPORT_FILE).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report


def summarise(report: dict[str, Any], build_seconds: dict[str, float], request: ExportRequest,
              started: float) -> dict[str, Any]:
    """The CLI summary: the report, each artifact's build time, the output path and the total time."""
    for entry in report["artifacts"]:
        entry["seconds"] = build_seconds[entry["file"]]
    return {**report, "out": str(request.out), "seconds": round(time.perf_counter() - started, 2)}


def build_bundle(request: ExportRequest, progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Export, validate, gate and write the bundle at ``request.out``; returns a summary for the CLI.

    Raises before anything is written for bad input; nothing appears at ``request.out`` unless the FP32
    reference exports and validates. A pipeline model (``card.extra["pipeline"]``) is built stage by stage
    by :mod:`kvqe.export.pipeline_builder`.
    """
    started = time.perf_counter()
    prepared = prepare(request, progress)
    if "pipeline" in prepared.card.extra:
        from kvqe.export.pipeline_builder import build_pipeline_bundle

        return build_pipeline_bundle(request, prepared, progress, started)
    card, module, valid_set, output_spec = prepared.card, prepared.module, prepared.valid_set, prepared.output_spec
    spec = OnnxExportSpec.from_card(card)
    batches = validation_batches(card)
    artifacts: list[dict[str, Any]] = []
    unavailable: list[dict[str, str]] = []
    with atomic_output_dir(request.out) as stage:
        fp32 = stage / "model.fp32.onnx"
        progress("exporting FP32 ONNX and validating it against torch")
        export_onnx(module, spec, batches[0], fp32)
        validation = validate_onnx(fp32, torch_reference(module, spec), batches, spec)
        artifacts.append({"backend": "onnxruntime", "precision": "fp32", "format": "onnx", **file_entry(fp32),
                          "export": spec.to_json(), "producer": producer_versions(), "calibration": None,
                          "accuracy": validation.to_json(), "deployable": True})
        build_seconds = {fp32.name: round(time.perf_counter() - started, 2)}
        with create_runner("onnxruntime", fp32) as reference_runner:
            reference = outputs(reference_runner, valid_set, output_spec)
        context = BuildContext(card, stage, fp32, prepared.calib_set, POLICIES[card.quant_policy],
                               request.calib_method, request.per_channel, request.tile)
        for fmt, precision in prepared.pairs:
            if (fmt, precision) == ("onnx", "fp32"):
                continue
            progress(f"building {fmt} {precision}")
            t0 = time.perf_counter()
            try:
                built = BUILDERS[fmt](context, precision)
            except BackendUnavailableError as exc:
                unavailable.append({"format": fmt, "precision": precision, "error": str(exc)})
                continue
            progress(f"checking {built.backend} {precision} against the FP32 reference")
            gates = gates_for(card.task, precision, prepared.user_gates)
            accuracy, executed = evaluate(
                functools.partial(create_runner, built.backend, built.files[0], **built.runtime),
                built.runtime.get("inference_precision"), valid_set, reference, output_spec, gates)
            artifacts.append(built_entry(built, fmt, accuracy, executed, context, prepared.calib_record))
            build_seconds[built.files[0].name] = round(time.perf_counter() - t0, 2)
        for leftover in set(context.built.values()) - {stage / a["file"] for a in artifacts}:
            leftover.unlink()  # an intermediate graph no artifact entry refers to
        report = write_bundle_files(stage, request, prepared, artifacts, unavailable)
    return summarise(report, build_seconds, request, started)


def exit_code(summary: dict[str, Any]) -> int:
    """3 when a gate failed, else 4 when a requested backend was unavailable, else 0."""
    if not all(a["deployable"] for a in summary["artifacts"]):
        return 3
    return 4 if summary["unavailable"] else 0

