"""Pipeline bundles (``sinsr``, ``sinsr+realesrgan``): one graph per stage, gated as one SR model.

Called by :func:`kvqe.export.bundle_builder.build_bundle` when the card says ``extra["pipeline"]``; it
shares that module's request checks, weights, sample sets, artifact builders, evaluation, manifest,
report and atomic write. Per stage:

1. FP32 ONNX (``export_onnx``), validated against the torch stage (``validate_onnx``) on *real* stage
   inputs: real photo crops (the SR validation batches) run through the torch stages with the runtime's
   own glue (:mod:`kvqe.sdk.pipelines.sinsr`), so each stage sees what it will see at run time. The decoder is
   validated on the codebook rows its real input quantises to: its argmin over 8192 codes has near-ties
   on real latents, where an ulp of difference between two correct implementations flips a code.
2. Every requested format/precision through the same builders as a single graph
   (:data:`kvqe.export.artifacts.BUILDERS`), files named after the stage (``denoiser.fp16.onnx``).
   INT8 is attempted for the card's ``int8_stages`` only (SinSR: the denoiser); the other stages of an
   INT8 configuration run their FP32 artifact of the same format (the manifest's ``pipeline.precisions``
   says so, and the loader follows it). Calibration inputs of an inner stage come from the FP32 ONNX stages
   before it, run on the calibration crops: the one :class:`~kvqe.calibration.contract.SampleSet` contract
   with a ``feed``.
3. Gates per configuration (backend, precision: all stages together) as for SR: PSNR of the composed
   pipeline against the ONNX Runtime FP32 pipeline on the validation crops. Each artifact of the
   configuration carries that accuracy record and its ``deployable`` verdict.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kvqe.calibration.accuracy import outputs
from kvqe.calibration.gates import gates_for
from kvqe.calibration.policy import POLICIES
from kvqe.errors import BackendUnavailableError, ExportValidationError
from kvqe.export.artifacts import BUILDERS, FORMATS, BuildContext, BuiltArtifact
from kvqe.export.bundle_builder import (
    ExportRequest,
    Prepared,
    built_entry,
    evaluate,
    file_entry,
    producer_versions,
    summarise,
    write_bundle_files,
)
from kvqe.export.onnx_export import OnnxExportSpec, export_onnx, torch_reference, validate_onnx
from kvqe.export.validation_inputs import validation_batches
from kvqe.files import atomic_output_dir
from kvqe.models.sinsr import SinSR
from kvqe.models.sinsr.one_step import bicubic_x4
from kvqe.models.sinsr.split import export_tile_graph, split_stages, whole_stats
from kvqe.runtimes import Runner, create_runner
from kvqe.sdk.pipelines import describe
from kvqe.sdk.pipelines import sinsr_glue as glue
from kvqe.sdk.pipelines.driver import StagedRunner
from kvqe.sdk.pipelines.sinsr import EXACT_STAGES, KINDS, TILE_STAGES
from kvqe.sdk.pipelines.sinsr import build as compose

_PRECISION_ORDER = ("fp32", "fp16", "int8")


def stage_specs(card_spec: OnnxExportSpec, channels: dict[str, int]) -> dict[str, OnnxExportSpec]:
    """Each stage's export spec: the card's opset and tolerance, dynamic batch/height/width, its channels."""
    return {stage: dataclasses.replace(card_spec, input_shape=(None, count, None, None))
            for stage, count in channels.items()}


def trace_stage_inputs(pipeline: StagedRunner, batch: np.ndarray) -> dict[str, np.ndarray]:
    """The input every stage of ``pipeline`` receives for ``batch`` (one pass through all stages)."""
    return pipeline.trace(batch)


def _sinsr_of(module: nn.Module) -> SinSR:
    """The SinSR of a pipeline module (itself, or its ``sinsr`` part)."""
    sinsr = module if isinstance(module, SinSR) else getattr(module, "sinsr", None)
    if not isinstance(sinsr, SinSR):
        raise TypeError(f"{type(module).__name__} holds no SinSR")
    return sinsr


def _codebook_snapped(module: nn.Module, x0: np.ndarray) -> np.ndarray:
    """The decoder input quantised to its codebook rows (same codes; no argmin near-ties left)."""
    with torch.no_grad():
        return _sinsr_of(module).vq.quantize(torch.from_numpy(x0)).numpy()


def _with_float_partners(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Requested (format, precision) pairs plus the FP32 of every format, FP32 first per format: every
    configuration runs SinSR's exact-tiling graphs in FP32 (and INT8 ones the stages not quantised)."""
    wanted = list(dict.fromkeys([*pairs, *((fmt, "fp32") for fmt, _ in pairs)]))
    return sorted(wanted, key=lambda p: (FORMATS.index(p[0]), _PRECISION_ORDER.index(p[1])))


class _Memo:
    """``feed`` for a calibration set: a stage's input from the FP32 stages before it, computed once per image."""

    def __init__(self, reference: StagedRunner, stage: str) -> None:
        self.reference, self.stage = reference, stage
        self.cache: dict[bytes, np.ndarray] = {}

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        key = batch.tobytes()
        if key not in self.cache:
            self.cache[key] = self.reference.stage_input(batch, self.stage)
        return self.cache[key]


def build_pipeline_bundle(request: ExportRequest, prepared: Prepared, progress: Callable[[str], None],
                          started: float) -> dict[str, Any]:
    """Export, validate, gate and write a pipeline bundle at ``request.out``; returns the CLI summary."""
    card, module = prepared.card, prepared.module
    kind = str(card.extra["pipeline"])
    stages = KINDS[kind]
    channels = {stage: int(card.extra["stage_channels"][stage]) for stage in stages}
    int8_stages = [s for s in card.extra.get("int8_stages", stages) if s in stages]
    modules: dict[str, nn.Module] = module.stages()  # type: ignore[operator]
    specs = stage_specs(OnnxExportSpec.from_card(card), channels)
    out_scale = int(prepared.output_spec["scale"])
    seed = glue.DEFAULT_SEED
    restore = getattr(module, "restore_name", None)
    # SinSR's VQ split by resolution (exact tiling, kvqe.models.sinsr.split): FP32 at every precision
    split = split_stages(_sinsr_of(module))
    exact_tiling = {"norms": {s: int(split[s].norms) for s in TILE_STAGES}}  # type: ignore[arg-type]

    def stage_precisions(precision: str) -> dict[str, str]:
        """What each stage (and split graph) runs at in the ``precision`` configuration."""
        per_stage = {s: precision if precision != "int8" or s in int8_stages else "fp32" for s in stages}
        return {**per_stage, **{s: "fp32" for s in split}}

    precisions_map = {precision: {s: p for s, p in stage_precisions(precision).items() if p != precision}
                      for precision in dict.fromkeys(p for _, p in prepared.pairs if p != "fp32")}

    def entry(**facts: Any) -> dict[str, Any]:
        extra = {"restore_model": restore} if restore else {}
        return describe(kind, out_scale=out_scale, seed=seed, precisions=precisions_map, exact_tiling=exact_tiling,
                        **extra, **facts)

    progress("tracing real stage inputs through the torch stages")
    torch_pipeline = compose({**entry(), "exact_tiling": None},
                             {s: torch_reference(modules[s], specs[s]) for s in stages}).load()
    stage_inputs: dict[str, list[np.ndarray]] = {s: [] for s in stages}
    for batch in validation_batches(card):
        for stage, x in trace_stage_inputs(torch_pipeline, batch).items():
            stage_inputs[stage].append(_codebook_snapped(module, x) if stage == "decoder" else x)

    artifacts: list[dict[str, Any]] = []
    unavailable: list[dict[str, str]] = []
    configurations: list[dict[str, Any]] = []
    build_seconds: dict[str, float] = {}
    with atomic_output_dir(request.out) as out:
        fp32: dict[str, Path] = {}
        for stage in stages:
            t0 = time.perf_counter()
            fp32[stage] = out / f"{stage}.fp32.onnx"
            progress(f"exporting the {stage} to FP32 ONNX and validating it against torch")
            export_onnx(modules[stage], specs[stage], stage_inputs[stage][0], fp32[stage])
            validation = validate_onnx(fp32[stage], torch_reference(modules[stage], specs[stage]),
                                       stage_inputs[stage], specs[stage])
            artifacts.append({"stage": stage, "backend": "onnxruntime", "precision": "fp32", "format": "onnx",
                              **file_entry(fp32[stage]), "export": specs[stage].to_json(),
                              "producer": producer_versions(), "calibration": None,
                              "accuracy": validation.to_json(), "deployable": True})
            build_seconds[fp32[stage].name] = round(time.perf_counter() - t0, 2)
        progress("exporting the VQ split by resolution (exact tiling) and validating it against torch")
        t0 = time.perf_counter()
        exported = _export_split(split, specs, stage_inputs, module, out)
        for stage, (path, record) in exported.items():
            fp32[stage] = path
            artifacts.append({"stage": stage, "backend": "onnxruntime", "precision": "fp32", "format": "onnx",
                              **file_entry(path), "export": record.pop("export"),
                              "producer": producer_versions(), "calibration": None, "accuracy": record,
                              "deployable": True})
            build_seconds[path.name] = round((time.perf_counter() - t0) / len(exported), 2)
        all_stages = (*stages, *split)

        reference_runner = compose(entry(), {s: create_runner("onnxruntime", fp32[s]) for s in all_stages}).load()
        contexts: dict[str, BuildContext] = {}
        try:
            progress("running the ONNX Runtime FP32 pipeline on the validation crops (the reference)")
            reference = outputs(reference_runner, prepared.valid_set, prepared.output_spec)
            for stage in all_stages:
                calibration = None
                if prepared.calib_set is not None and stage in int8_stages:
                    calibration = prepared.calib_set if stage == stages[0] else \
                        prepared.calib_set.feeding(_Memo(reference_runner, stage))
                policy = POLICIES[card.extra.get("stage_policies", {}).get(stage, card.quant_policy)]
                contexts[stage] = BuildContext(card, out, fp32[stage], calibration, policy, request.calib_method,
                                               request.per_channel, request.tile, prefix=stage)
            built: dict[tuple[str, str, str], BuiltArtifact] = {}
            configured: set[tuple[str, str]] = set()
            for fmt, precision in _with_float_partners(prepared.pairs):
                if (fmt, precision) == ("onnx", "fp32"):
                    configured.add((fmt, precision))
                    continue
                per_stage = stage_precisions(precision)
                if any((fmt, p) != ("onnx", "fp32") and (fmt, p) not in configured
                       for p in per_stage.values() if p != precision):
                    unavailable.append({"format": fmt, "precision": precision,
                                        "error": f"its {fmt} fp32 stages could not be built here"})
                    continue
                progress(f"building {fmt} {precision} ({', '.join(f'{s} {p}' for s, p in per_stage.items())})")
                t0 = time.perf_counter()
                new: list[BuiltArtifact] = []
                try:
                    for stage, stage_precision in per_stage.items():
                        key = (fmt, stage_precision, stage)
                        if (fmt, stage_precision) != ("onnx", "fp32") and key not in built:
                            built[key] = BUILDERS[fmt](contexts[stage], stage_precision)
                            if stage in TILE_STAGES and built[key].backend == "openvino":
                                built[key] = dataclasses.replace(built[key],
                                                                 runtime={**built[key].runtime, "multi_io": True})
                            new.append(built[key])
                except BackendUnavailableError as exc:
                    unavailable.append({"format": fmt, "precision": precision, "error": str(exc)})
                    continue
                configured.add((fmt, precision))
                chosen = {s: built.get((fmt, p, s)) for s, p in per_stage.items()}
                wanted = {b.runtime.get("inference_precision") for b in chosen.values() if b is not None}

                def make_runner(chosen: dict[str, BuiltArtifact | None] = chosen) -> Runner:
                    return compose(entry(), {s: create_runner(b.backend, b.files[0], **b.runtime) if b is not None
                                             else create_runner("onnxruntime", fp32[s]) for s, b in chosen.items()})

                backend = next(b.backend for b in chosen.values() if b is not None)
                progress(f"checking the {backend} {precision} pipeline against the FP32 reference")
                gates = gates_for(card.task, precision, prepared.user_gates)
                scope = (f"the whole {kind} pipeline on {backend} ("
                         + ", ".join(f"{s} {p}" for s, p in per_stage.items()) + ") vs the onnxruntime fp32 pipeline")
                accuracy, executed = evaluate(make_runner, wanted.pop() if len(wanted) == 1 else None,
                                              prepared.valid_set, reference, prepared.output_spec, gates, scope)
                seconds = round((time.perf_counter() - t0) / max(len(new), 1), 2)
                for artifact in new:
                    stage = next(s for s, b in chosen.items() if b is artifact)
                    artifacts.append({"stage": stage, **built_entry(artifact, fmt, accuracy, executed, contexts[stage],
                                                                    prepared.calib_record)})
                    build_seconds[artifact.files[0].name] = seconds
                configurations.append({
                    "backend": backend, "precision": precision, "deployable": accuracy["passed"],
                    "stages": {s: (b.files[0].name if b is not None else fp32[s].name) for s, b in chosen.items()},
                    "metrics": accuracy["metrics"], "failures": accuracy["failures"]})
        finally:
            reference_runner.close()
            torch_pipeline.close()
        referenced = {out / a["file"] for a in artifacts}
        for context in contexts.values():
            for leftover in set(context.built.values()) - referenced:
                leftover.unlink()  # an intermediate graph no artifact entry refers to
        report = write_bundle_files(out, request, prepared, artifacts, unavailable,
                                    pipeline=entry(configurations=configurations))
    return summarise(report, build_seconds, request, started)


def _export_split(split: dict[str, nn.Module], specs: dict[str, OnnxExportSpec],
                  stage_inputs: dict[str, list[np.ndarray]], module: nn.Module,
                  out: Path) -> dict[str, tuple[Path, dict[str, Any]]]:
    """Export SinSR's exact-tiling graphs to FP32 ONNX and validate each against torch on real inputs: the
    features the torch stages compute for the validation crops; the tile graphs with their untiled
    statistics and a mask that keeps the centre (outputs and sums within the card's tolerance, sums
    relative to their magnitude). Returns per stage its file and accuracy record (with ``export``)."""
    card_spec = specs["encoder"]
    enc = _sinsr_of(module).vq.encoder
    with torch.no_grad():
        def enc_features(y0: np.ndarray) -> np.ndarray:
            h = enc.conv_in(bicubic_x4(torch.from_numpy(y0)))
            for level in enc.down:
                h = level(h)
            return h.numpy()

        inputs = {"encoder_high": list(stage_inputs["encoder"]),
                  "encoder_mid": [enc_features(y0) for y0 in stage_inputs["encoder"]],
                  "decoder_mid": list(stage_inputs["decoder"])}
        inputs["decoder_high"] = [split["decoder_mid"](torch.from_numpy(x0)).numpy() for x0 in inputs["decoder_mid"]]
    results: dict[str, tuple[Path, dict[str, Any]]] = {}
    for stage in EXACT_STAGES:
        path = out / f"{stage}.fp32.onnx"
        example = inputs[stage][0]
        if stage not in TILE_STAGES:
            spec = dataclasses.replace(card_spec, input_shape=(None, example.shape[1], None, None))
            export_onnx(split[stage], spec, example, path)
            report = validate_onnx(path, torch_reference(split[stage], spec), inputs[stage], spec)
            results[stage] = (path, {**report.to_json(), "export": spec.to_json()})
            continue
        norms = int(split[stage].norms)  # type: ignore[arg-type]
        cases: list[dict[str, Any]] = []
        feeds_list = []
        for x in inputs[stage]:
            xt = torch.from_numpy(x)
            stats = whole_stats(split[stage], xt, norms)
            mask = np.zeros((1, 1, *x.shape[2:]), np.float32)
            mask[..., x.shape[2] // 4: -(x.shape[2] // 4) or None, x.shape[3] // 4: -(x.shape[3] // 4) or None] = 1
            feeds_list.append({"x": x, "stats": stats.numpy(), "mask": mask})
        first = feeds_list[0]
        export_tile_graph(split[stage], tuple(torch.from_numpy(first[k]) for k in ("x", "stats", "mask")),  # type: ignore[arg-type]
                          str(path), card_spec.opset)
        failures = []
        with create_runner("onnxruntime", path) as runner:
            for feeds in feeds_list:
                produced = runner.infer(feeds)
                y, sums = produced["y"], produced["sums"]
                with torch.no_grad():
                    ty, tsums = (t.numpy() for t in split[stage](*(torch.from_numpy(feeds[k])
                                                                    for k in ("x", "stats", "mask"))))
                diff = float(np.abs(y - ty).max())
                sums_diff = float(np.abs(sums - tsums).max() / max(float(np.abs(tsums).max()), 1e-12))
                passed = diff <= card_spec.tolerance and sums_diff <= card_spec.tolerance
                cases.append({"input_shape": list(feeds["x"].shape), "max_abs_diff": diff,
                              "sums_max_rel_diff": sums_diff, "passed": passed})
                if not passed:
                    failures.append(f"{stage} {feeds['x'].shape}: max abs diff {diff:.3g}, sums {sums_diff:.3g}")
        if failures:
            raise ExportValidationError(f"{path.name} failed validation against torch:\n  - " + "\n  - ".join(failures))
        export = {**card_spec.to_json(), "inputs": ["x", "stats", "mask"], "outputs": ["y", "sums"], "norms": norms}
        results[stage] = (path, {"reference": "torch fp32", "comparator": "max_abs_diff (sums: relative)",
                                 "tolerance": card_spec.tolerance,
                                 "max_abs_diff": max(c["max_abs_diff"] for c in cases), "cases": cases,
                                 "passed": True, "export": export})
    return results

