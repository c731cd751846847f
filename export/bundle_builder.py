"""Build a verified bundle: registry model + weights -> FP32 ONNX of every stage validated against torch ->
every requested artifact -> accuracy vs the FP32 reference on held-out data -> gates -> manifest, atomically.

Every bundle is a list of stages (:mod:`kvqe.export.stage_plan`): a single-graph model is a one-stage plan,
a pipeline model gets its kind's plan. One loop serves both: per (format, precision) configuration, each
stage's artifact is built once (stages not quantised in an INT8 configuration run their FP32 artifact of
the same format) and the configuration is gated as one model; every artifact of it carries that accuracy
record and its ``deployable`` verdict.

A gate that fails keeps its artifact with ``deployable: false``; a backend that is unavailable here
(e.g. TensorRT without a GPU) is reported and the other artifacts are still written.
"""
from __future__ import annotations

import contextlib
import functools
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from kvqe.calibration.comparison import reference_outputs
from kvqe.calibration.policy import POLICIES
from kvqe.errors import BackendUnavailableError
from kvqe.export.artifacts import BACKENDS, BUILDERS, BuildContext, BuiltArtifact
from kvqe.export.int8_search import Build, Compared, artifact_key, search_int8
from kvqe.export.latency import INPUTS, compare_latency
from kvqe.export.onnx_export import export_onnx, torch_reference, validate_onnx
from kvqe.export.records import (
    accuracy_record,
    built_entry,
    reference_entry,
    summarise,
    write_bundle_files,
)
from kvqe.export.request import ExportRequest, Prepared, prepare
from kvqe.export.stage_plan import Progress, StagePlan, plan_for
from kvqe.files import atomic_output_dir
from kvqe.runtimes import Runner, create_runner, is_available

__all__ = ["ExportRequest", "build_bundle", "exit_code", "prepare"]


def _build_int8(fmt: str, context: BuildContext) -> BuiltArtifact:
    return BUILDERS[fmt](context, "int8")


class _Export:
    """One export in progress: the plan, the staging directory, and what has been written so far."""

    def __init__(self, request: ExportRequest, prepared: Prepared, plan: StagePlan, out: Path,
                 progress: Progress) -> None:
        self.request, self.prepared, self.plan, self.out, self.progress = request, prepared, plan, out, progress
        self.artifacts: list[dict[str, Any]] = []
        self.unavailable: list[dict[str, str]] = []
        self.configurations: list[dict[str, Any]] = []
        self.seconds: dict[str, float] = {}
        self.fp32: dict[str, Path] = {}
        self.built: dict[tuple[str, str, str], BuiltArtifact] = {}
        self.configured: set[tuple[str, str]] = set()
        self.contexts: dict[str, BuildContext] = {}
        self.search: dict[str, dict[str, Any]] = {}  # the INT8 search record by INT8 source
        self.compared: Compared = {}  # the INT8 search's comparisons, reused when an artifact built is one it judged

    def export_references(self) -> None:
        """Every stage to FP32 ONNX, validated against torch on its real inputs; then the plan's own graphs."""
        plan = self.plan
        inputs = plan.stage_inputs(self.progress)
        for stage, module in plan.stages.items():
            t0 = time.perf_counter()
            path = self.fp32[stage] = self.out / f"{stage}.fp32.onnx"
            spec = plan.specs[stage]
            self.progress("exporting FP32 ONNX and validating it against torch" if plan.kind is None
                          else f"exporting the {stage} to FP32 ONNX and validating it against torch")
            export_onnx(module, spec, inputs[stage][0], path)
            validation = validate_onnx(path, torch_reference(module, spec), inputs[stage], spec)
            self.artifacts.append(plan.tagged(stage, reference_entry(path, spec.to_json(), validation.to_json())))
            self.seconds[path.name] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        fixed = plan.export_fixed(self.out, inputs, self.progress)
        for stage, (path, export, accuracy) in fixed.items():
            self.fp32[stage] = path
            self.artifacts.append(plan.tagged(stage, reference_entry(path, export, accuracy)))
            self.seconds[path.name] = round((time.perf_counter() - t0) / len(fixed), 2)

    def make_contexts(self, reference: Runner) -> None:
        """Each stage's build context; an inner INT8 stage is calibrated on its inputs from the FP32 stages."""
        prepared, request, first = self.prepared, self.request, next(iter(self.plan.stages))
        for stage in self.fp32:
            calibration = None
            if prepared.calib_set is not None and stage in self.plan.int8_stages:
                calibration = prepared.calib_set if stage == first else \
                    prepared.calib_set.feeding(self.plan.calibration_feed(reference, stage))
            policy = POLICIES[self.plan.policies.get(stage, prepared.card.quant_policy)]
            self.contexts[stage] = BuildContext(prepared.card, self.out, self.fp32[stage], calibration, policy,
                                                request.calib_method, request.per_channel, request.tile, prefix=stage)

    def search_int8(self, fmt: str, comparator: Any, reference: list[Any]) -> None:
        """The INT8 search for ``fmt``'s INT8 source, once per source, on every requested format made from it
        whose backend runs here, within what is left of the budget. A single-graph model only: a pipeline's
        stages are gated together, not searched."""
        if self.plan.kind is not None or self.prepared.calib_set is None:
            return
        context = self.contexts[next(iter(self.plan.stages))]
        source = context.int8_source(fmt)
        if source in self.search:
            return
        group = [f for f in dict.fromkeys(f for f, p in self.prepared.pairs if p == "int8")
                 if context.int8_source(f) == source and is_available(BACKENDS[f])]
        builds: dict[str, Build] = {f: functools.partial(_build_int8, f) for f in group or [fmt]}
        gates = self.prepared.task.gates("int8", self.prepared.user_gates)
        budget = max(0.0, self.request.search_budget - sum(r["seconds"] for r in self.search.values()))
        self.search[source] = search_int8(context, builds, self.prepared.valid_set, comparator, reference, gates,
                                          budget, self.progress, self.compared)

    def fp32_runner(self, fmt: str, tmp: Path) -> Runner:
        """The FP32 configuration of ``fmt`` (its artifacts, or ones built into ``tmp`` when not requested)."""
        runners = {}
        for stage in self.fp32:
            built = self.built.get((fmt, "fp32", stage))
            if fmt == "onnx" or stage in self.plan.fixed_stages:
                runners[stage] = create_runner("onnxruntime", self.fp32[stage])
                continue
            if built is None:
                context = replace(self.contexts[stage], stage=tmp, built={}, records={})
                built = self.plan.adapt(stage, BUILDERS[fmt](context, "fp32"))
            runners[stage] = create_runner(built.backend, built.files[0], **built.runtime)
        return self.plan.compose(runners)

    def latency(self, fmt: str, runner: Runner) -> dict[str, Any]:
        """The INT8 configuration ``runner`` timed against the FP32 one of the same backend."""
        self.progress(f"timing {fmt} int8 against {fmt} fp32")
        inputs = list(self.prepared.valid_set.inputs())[:INPUTS]
        with tempfile.TemporaryDirectory(prefix="kvqe-fp32-") as tmp:
            return compare_latency(runner, self.fp32_runner(fmt, Path(tmp)), inputs)

    def build_configuration(self, fmt: str, precision: str, comparator: Any, reference: list[Any]) -> None:
        """Build the stages of one (format, precision) configuration, gate it as one model, record it."""
        plan, prepared = self.plan, self.prepared
        per_stage = plan.stage_precisions(precision)
        if any((fmt, p) != ("onnx", "fp32") and (fmt, p) not in self.configured
               for p in per_stage.values() if p != precision):
            self.unavailable.append({"format": fmt, "precision": precision,
                                     "error": f"its {fmt} fp32 stages could not be built here"})
            return
        mixed = "" if plan.kind is None else f" ({', '.join(f'{s} {p}' for s, p in per_stage.items())})"
        t0 = time.perf_counter()
        new: list[BuiltArtifact] = []
        try:
            if precision == "int8":
                self.search_int8(fmt, comparator, reference)
            self.progress(f"building {fmt} {precision}{mixed}")
            for stage, stage_precision in per_stage.items():
                key = (fmt, stage_precision, stage)
                if (fmt, stage_precision) != ("onnx", "fp32") and key not in self.built:
                    self.built[key] = plan.adapt(stage, BUILDERS[fmt](self.contexts[stage], stage_precision))
                    new.append(self.built[key])
        except BackendUnavailableError as exc:
            self.unavailable.append({"format": fmt, "precision": precision, "error": str(exc)})
            return
        self.configured.add((fmt, precision))
        chosen = {s: self.built.get((fmt, p, s)) for s, p in per_stage.items()}
        wanted = {b.runtime.get("inference_precision") for b in chosen.values() if b is not None}
        runner = plan.compose({s: create_runner(b.backend, b.files[0], **b.runtime) if b is not None
                               else create_runner("onnxruntime", self.fp32[s]) for s, b in chosen.items()})
        backend = next(b.backend for b in chosen.values() if b is not None)
        self.progress(f"checking {backend} {precision} against the FP32 reference" if plan.kind is None
                      else f"checking the {backend} {precision} pipeline against the FP32 reference")
        scope = None if plan.kind is None else (f"the whole {plan.kind} pipeline on {backend}{mixed} "
                                                "vs the onnxruntime fp32 pipeline")
        gates = prepared.task.gates(precision, prepared.user_gates)
        judged = [b for b in chosen.values() if b is not None]
        reusable = self.compared and plan.kind is None and len(judged) == 1  # hash only when the search judged some
        compared = self.compared.get(artifact_key(judged[0].files)) if reusable else None
        accuracy, executed = accuracy_record(runner, wanted.pop() if len(wanted) == 1 else None, prepared.valid_set,
                                             comparator, reference, gates, scope, compared)
        latency = self.latency(fmt, runner) if precision == "int8" else None
        seconds = round((time.perf_counter() - t0) / max(len(new), 1), 2)
        for artifact in new:
            stage = next(s for s, b in chosen.items() if b is artifact)
            entry = built_entry(artifact, fmt, accuracy, executed, self.contexts[stage], prepared.calib_record)
            if artifact.precision == "int8":
                entry["mixed_precision"] = self.search.get(self.contexts[stage].int8_source(fmt))
                entry["latency"] = latency
            self.artifacts.append(plan.tagged(stage, entry))
            self.seconds[artifact.files[0].name] = seconds
        self.configurations.append({
            "backend": backend, "precision": precision, "deployable": accuracy["passed"],
            "stages": {s: (b.files[0].name if b is not None else self.fp32[s].name) for s, b in chosen.items()},
            "metrics": accuracy["metrics"], "failures": accuracy["failures"]})

    def close(self) -> None:
        """Release what the build contexts hold (calibrated models in temporary directories)."""
        for context in self.contexts.values():
            context.close()

    def remove_leftovers(self) -> None:
        """Delete intermediate graphs no artifact entry refers to."""
        referenced = {self.out / a["file"] for a in self.artifacts}
        for context in self.contexts.values():
            for leftover in set(context.built.values()) - referenced:
                leftover.unlink()


def build_bundle(request: ExportRequest, progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Export, validate, gate and write the bundle at ``request.out``; returns a summary for the CLI.

    Raises before anything is written for bad input; nothing appears at ``request.out`` unless every FP32
    reference graph exports and validates.
    """
    started = time.perf_counter()
    prepared = prepare(request, progress)
    plan = plan_for(prepared.card, prepared.module, prepared.output_spec)
    precisions = {precision: {s: p for s, p in plan.stage_precisions(precision).items() if p != precision}
                  for precision in dict.fromkeys(p for _, p in prepared.pairs if p != "fp32")}
    with atomic_output_dir(request.out) as out, contextlib.ExitStack() as cleanup:
        job = _Export(request, prepared, plan, out, progress)
        cleanup.callback(job.close)
        job.export_references()
        comparator = prepared.task.comparator(prepared.valid_set, prepared.output_spec)
        reference_runner = plan.compose({s: create_runner("onnxruntime", path) for s, path in job.fp32.items()})
        with reference_runner:  # kept loaded: it also feeds the calibration of inner stages
            if plan.kind is not None:
                progress("running the ONNX Runtime FP32 pipeline on the validation crops (the reference)")
            reference = reference_outputs(reference_runner, prepared.valid_set.inputs(), comparator)
            job.make_contexts(reference_runner)
            for fmt, precision in plan.build_order(prepared.pairs):
                if (fmt, precision) == ("onnx", "fp32"):
                    job.configured.add((fmt, precision))
                    continue
                job.build_configuration(fmt, precision, comparator, reference)
        job.remove_leftovers()
        entry = plan.manifest_entry(precisions, job.configurations)
        report = write_bundle_files(out, request, prepared, job.artifacts, job.unavailable, pipeline=entry)
    return summarise(report, job.seconds, request, started)


def exit_code(summary: dict[str, Any]) -> int:
    """3 when a gate failed, else 4 when a requested backend was unavailable, else 0."""
    if not all(a["deployable"] for a in summary["artifacts"]):
        return 3
    return 4 if summary["unavailable"] else 0
