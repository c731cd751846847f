"""SinSR's exact-tiling graphs (the VQ split by resolution, :mod:`kvqe.models.sinsr.split`) exported to FP32
ONNX and validated against torch on real inputs.

The inputs are what the torch stages compute for the validation crops; the tile graphs run with their
untiled statistics and a mask that keeps the centre, and pass when their outputs are within the card's
tolerance and their sums within it relative to their magnitude.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kvqe.calibration.comparators import GraphOutputs, MaxAbsDiff, MaxRelDiff
from kvqe.calibration.comparison import compare_runs
from kvqe.errors import ExportValidationError
from kvqe.export.onnx_export import (
    OnnxExportSpec,
    export_onnx,
    quiet_exporter,
    torch_reference,
    validate_onnx,
)
from kvqe.export.stage_plan import FixedGraph
from kvqe.models.sinsr import SinSR
from kvqe.models.sinsr.split import encoder_features, export_tile_graph, split_stages, whole_stats
from kvqe.runtimes import create_runner
from kvqe.sdk.pipelines.sinsr_glue import EXACT_STAGES, TILE_STAGES

TILE_INPUTS = ("x", "stats", "mask")
TILE_OUTPUTS = ("y", "sums")


def split_inputs(sinsr: SinSR, split: dict[str, nn.Module], stage_inputs: dict[str, list[np.ndarray]]
                 ) -> dict[str, list[np.ndarray]]:
    """Real inputs of each split graph, from the real inputs of the encoder and the decoder."""
    with torch.no_grad():
        inputs = {"encoder_high": list(stage_inputs["encoder"]),
                  "encoder_mid": [encoder_features(sinsr, torch.from_numpy(y0)).numpy() for y0 in stage_inputs["encoder"]],
                  "decoder_mid": list(stage_inputs["decoder"])}
        inputs["decoder_high"] = [split["decoder_mid"](torch.from_numpy(x0)).numpy() for x0 in inputs["decoder_mid"]]
    return inputs


def _tile_feeds(graph: nn.Module, x: np.ndarray, norms: int) -> dict[str, np.ndarray]:
    """One window with its untiled statistics and a mask keeping the centre half."""
    stats = whole_stats(graph, torch.from_numpy(x), norms)
    mask = np.zeros((1, 1, *x.shape[2:]), np.float32)
    mask[..., x.shape[2] // 4: -(x.shape[2] // 4) or None, x.shape[3] // 4: -(x.shape[3] // 4) or None] = 1
    return {"x": x, "stats": stats.numpy(), "mask": mask}


def _export_tile_graph(stage: str, graph: nn.Module, inputs: list[np.ndarray], card_spec: OnnxExportSpec,
                       path: Path) -> FixedGraph:
    norms = int(graph.norms)  # type: ignore[arg-type]
    feeds_list = [_tile_feeds(graph, x, norms) for x in inputs]
    first = feeds_list[0]
    with quiet_exporter():
        export_tile_graph(graph, tuple(torch.from_numpy(first[k]) for k in TILE_INPUTS),  # type: ignore[arg-type]
                          str(path), card_spec.opset)
    with torch.no_grad():
        expected = [dict(zip(TILE_OUTPUTS, (t.numpy() for t in graph(*(torch.from_numpy(f[k]) for k in TILE_INPUTS)))))
                    for f in feeds_list]
    comparator = GraphOutputs({"y": MaxAbsDiff(card_spec.tolerance), "sums": MaxRelDiff(card_spec.tolerance)})
    result = compare_runs(create_runner("onnxruntime", path), expected, feeds_list, comparator)
    cases: list[dict[str, Any]] = []
    failures = []
    for case, feeds in zip(result.cases, feeds_list, strict=True):
        y, sums = case.checks
        cases.append({"input_shape": list(feeds["x"].shape), "max_abs_diff": y.value,
                      "sums_max_rel_diff": sums.value, "passed": case.passed})
        if not case.passed:
            failures.append(f"{stage} {feeds['x'].shape}: max abs diff {y.value:.3g}, sums {sums.value:.3g}")
    if failures:
        raise ExportValidationError(f"{path.name} failed validation against torch:\n  - " + "\n  - ".join(failures))
    export = {**card_spec.to_json(), "inputs": list(TILE_INPUTS), "outputs": list(TILE_OUTPUTS), "norms": norms}
    accuracy = {"reference": "torch fp32", "comparator": "max_abs_diff (sums: relative)",
                "tolerance": card_spec.tolerance, "max_abs_diff": max(c["max_abs_diff"] for c in cases),
                "cases": cases, "passed": True}
    return path, export, accuracy


def export_split(sinsr: SinSR, card_spec: OnnxExportSpec, stage_inputs: dict[str, list[np.ndarray]],
                 out: Path) -> dict[str, FixedGraph]:
    """Export the exact-tiling graphs into ``out`` (``<stage>.fp32.onnx``) and validate each against torch;
    returns per stage its file, export record and accuracy record."""
    split = split_stages(sinsr)
    inputs = split_inputs(sinsr, split, stage_inputs)
    results: dict[str, FixedGraph] = {}
    for stage in EXACT_STAGES:
        path = out / f"{stage}.fp32.onnx"
        if stage in TILE_STAGES:
            results[stage] = _export_tile_graph(stage, split[stage], inputs[stage], card_spec, path)
            continue
        example = inputs[stage][0]
        spec = dataclasses.replace(card_spec, input_shape=(None, example.shape[1], None, None))
        export_onnx(split[stage], spec, example, path)
        report = validate_onnx(path, torch_reference(split[stage], spec), inputs[stage], spec)
        results[stage] = (path, spec.to_json(), report.to_json())
    return results
