"""The export plan of SinSR's pipeline kinds (``sinsr``, ``sinsr+realesrgan``): one graph per stage, gated as
one SR model by the generic export loop (:func:`kvqe.export.bundle_builder.build_bundle`).

What is SinSR's own:

1. Real stage inputs: the SR validation batches run through the torch stages with the runtime's own glue
   (:mod:`kvqe.sdk.pipelines.sinsr`), so each stage is validated on what it sees at run time. The decoder is
   validated on the codebook rows its real input quantises to: its argmin over 8192 codes has near-ties
   on real latents, where an ulp of difference between two correct implementations flips a code.
2. The VQ split by resolution for exact tiling (:mod:`.sinsr_split`): four more graphs, FP32 in every
   configuration; its OpenVINO tile graphs (several inputs and outputs) are marked ``multi_io``.
3. INT8 for the card's ``int8_stages`` only (the denoiser); the inputs of an inner stage for calibration
   come from the FP32 ONNX stages before it, run on the calibration crops.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kvqe.calibration.tasks import task_named
from kvqe.export.artifacts import BuiltArtifact
from kvqe.export.onnx_export import torch_reference
from kvqe.export.pipelines.sinsr_split import export_split
from kvqe.export.stage_plan import FixedGraph, Progress, StagePlan, card_stages, register_plan
from kvqe.models.registry import ModelCard
from kvqe.models.sinsr import SinSR
from kvqe.models.sinsr.split import norm_count
from kvqe.runtimes import Runner
from kvqe.sdk.pipelines import StagedRunner, compose, describe
from kvqe.sdk.pipelines.sinsr_glue import DEFAULT_SEED, EXACT_STAGES, KINDS, TILE_STAGES
from kvqe.specs import OutputSpec


def sinsr_of(module: nn.Module) -> SinSR:
    """The SinSR of a pipeline module (itself, or its ``sinsr`` part)."""
    sinsr = module if isinstance(module, SinSR) else getattr(module, "sinsr", None)
    if not isinstance(sinsr, SinSR):
        raise TypeError(f"{type(module).__name__} holds no SinSR")
    return sinsr


def codebook_snapped(sinsr: SinSR, x0: np.ndarray) -> np.ndarray:
    """The decoder input quantised to its codebook rows (same codes; no argmin near-ties left)."""
    with torch.no_grad():
        return sinsr.vq.quantize(torch.from_numpy(x0)).numpy()


class StageInputs:
    """Calibration ``feed`` of an inner stage: its input from the FP32 stages before it, computed once per image."""

    def __init__(self, reference: StagedRunner, stage: str) -> None:
        self.reference, self.stage = reference, stage
        self.cache: dict[bytes, np.ndarray] = {}

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        key = batch.tobytes()
        if key not in self.cache:
            self.cache[key] = self.reference.stage_input(batch, self.stage)
        return self.cache[key]


class SinSRPlan(StagePlan):
    """SinSR's stages (``restore`` first for ``sinsr+realesrgan``), its split VQ graphs and manifest entry."""

    def __init__(self, card: ModelCard, module: nn.Module, output_spec: OutputSpec) -> None:
        self.name = str(card.extra["pipeline"])
        self.kind = self.name
        names = KINDS[self.name]
        specs, int8_stages, policies = card_stages(card, names)
        modules: dict[str, nn.Module] = module.stages()  # type: ignore[operator]
        super().__init__(card, {s: modules[s] for s in names}, specs, int8_stages, policies, EXACT_STAGES)
        self.sinsr = sinsr_of(module)
        self.facts: dict[str, Any] = {"out_scale": int(output_spec.scale or 1), "seed": DEFAULT_SEED}
        restore = getattr(module, "restore_name", None)
        if restore:
            self.facts["restore_model"] = restore
        norms = norm_count(self.sinsr)
        self.exact_tiling = {"norms": {s: int(norms[s]) for s in TILE_STAGES}}

    def _entry(self, exact: bool, **facts: Any) -> dict[str, Any]:
        return describe(self.name, **self.facts, exact_tiling=self.exact_tiling if exact else None, **facts)

    def stage_inputs(self, progress: Progress) -> dict[str, list[np.ndarray]]:
        progress("tracing real stage inputs through the torch stages")
        torch_pipeline = compose(self._entry(exact=False),
                                 {s: torch_reference(m, self.specs[s]) for s, m in self.stages.items()})
        assert isinstance(torch_pipeline, StagedRunner)
        inputs: dict[str, list[np.ndarray]] = {s: [] for s in self.stages}
        with torch_pipeline:
            for batch in task_named(self.card.task).batches(self.card.input):
                for stage, x in torch_pipeline.trace(batch).items():
                    inputs[stage].append(codebook_snapped(self.sinsr, x) if stage == "decoder" else x)
        return inputs

    def export_fixed(self, out: Path, inputs: dict[str, list[np.ndarray]], progress: Progress) -> dict[str, FixedGraph]:
        progress("exporting the VQ split by resolution (exact tiling) and validating it against torch")
        return export_split(self.sinsr, self.specs["encoder"], inputs, out)

    def compose(self, runners: Mapping[str, Runner]) -> Runner:
        return compose(self._entry(exact=True), runners)

    def calibration_feed(self, reference: Runner, stage: str) -> Callable[[np.ndarray], np.ndarray]:
        assert isinstance(reference, StagedRunner)
        return StageInputs(reference, stage)

    def adapt(self, stage: str, built: BuiltArtifact) -> BuiltArtifact:
        if stage in TILE_STAGES and built.backend == "openvino":  # recorded for runtimes reading schema v1
            return dataclasses.replace(built, runtime={**built.runtime, "multi_io": True})
        return built

    def manifest_entry(self, precisions: dict[str, dict[str, str]],
                       configurations: list[dict[str, Any]]) -> dict[str, Any] | None:
        return self._entry(exact=True, precisions=precisions, configurations=configurations)


@register_plan(*KINDS)
def sinsr_plan(card: ModelCard, module: nn.Module, output_spec: OutputSpec) -> StagePlan:
    return SinSRPlan(card, module, output_spec)
