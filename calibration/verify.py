"""Re-run a bundle's accuracy gates on this machine (``kvqe verify``): every artifact whose backend is
available here is compared with the bundle's FP32 ONNX reference on the bundle's validation data (or
the user's), against the gates recorded at export. A pipeline bundle is verified per backend/precision
with all its stages composed, against its ONNX Runtime FP32 pipeline."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from kvqe.bundle import Bundle
from kvqe.calibration.comparison import compare_runs, reference_outputs
from kvqe.calibration.contract import SampleSet
from kvqe.calibration.data import build_validation_set
from kvqe.calibration.gates import Gate
from kvqe.calibration.tasks import task_named
from kvqe.errors import BackendUnavailableError, BundleError
from kvqe.runtimes import is_available
from kvqe.sdk.loader import configurations, create_bundle_runner, primary_artifact


def validation_data(bundle: Bundle, data: Path | None) -> SampleSet:
    """The user's media when given, else the validation set stored in the bundle, parsed from the bytes
    whose sha256 was checked."""
    if data is not None:
        return build_validation_set(data, task_named(bundle.task), bundle.input_spec)
    entry = bundle.validation
    if entry is None:
        raise BundleError(f"{bundle.path} carries no validation data; pass --data PATH")
    return SampleSet.load(bundle.read_verified_file(*entry), bundle.input_spec, where=bundle.path / entry.file,
                          advice="re-export the bundle")


def check_integrity(bundle: Bundle) -> None:
    """Every file of the bundle matches the manifest (also those of backends not available here)."""
    failures = [message for message in bundle.verify_all().values() if message]
    if failures:
        raise BundleError("bundle does not verify: " + "; ".join(failures))


def verify_bundle(bundle: Bundle, data: Path | None = None) -> list[dict[str, Any]]:
    """One record per artifact (per backend/precision of a pipeline bundle, all its stages together): its
    figures against the reference, gate results, or why it was skipped. Every file of the bundle is
    checked against the manifest first: a damaged file is an error even where its backend is missing."""
    check_integrity(bundle)
    configs = configurations(bundle)
    reference_stages = configs.get(("onnxruntime", "fp32"))
    if reference_stages is None:
        raise BundleError(f"{bundle.path} has no onnxruntime/fp32 reference artifact to verify against")
    samples = validation_data(bundle, data)
    comparator = task_named(bundle.task).comparator(samples, bundle.output_spec)
    with create_bundle_runner(bundle, reference_stages) as runner:
        reference = reference_outputs(runner, samples.inputs(), comparator)
    records: list[dict[str, Any]] = []
    for (backend, precision), stages in configs.items():
        name = f"{backend}/{precision}"
        if stages is reference_stages:
            continue
        if not is_available(backend):
            records.append({"artifact": name, "skipped": f"backend {backend} is not available here"})
            continue
        artifact = primary_artifact(stages, precision)
        recorded = artifact.record.get("accuracy", {}).get("gates")
        gates = [Gate.parse(g) for g in recorded] if recorded else list(task_named(bundle.task).gates(precision))
        try:
            result = compare_runs(create_bundle_runner(bundle, stages), reference, samples.inputs(), comparator, gates)
        except BackendUnavailableError as exc:
            records.append({"artifact": name, "skipped": str(exc)})
            continue
        record = {"artifact": name, "file": artifact.file, "metrics": result.figures,
                  "gates": [str(g) for g in gates], "failures": result.gate_failures, "passed": result.passed,
                  "deployable_at_export": all(a.deployable for a in stages.values()), "samples": len(samples)}
        if bundle.pipeline is not None:
            record["stages"] = {stage: f"{a.precision} {a.file}" for stage, a in stages.items()}
        records.append(record)
    return records
