"""ONNX export: deterministic bytes, and validation that gathers every failure into one error."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import onnx
import pytest
import torch

from kvqe.calibration.tasks import task_named
from kvqe.errors import ExportValidationError
from kvqe.export.onnx_export import OnnxExportSpec, export_onnx, torch_reference, validate_onnx
from kvqe.files import sha256_file
from kvqe.models.registry import get_model
from kvqe.sdk.loader import embedded_bundle_path


@pytest.fixture(scope="module")
def anime() -> tuple[torch.nn.Module, OnnxExportSpec, list]:
    entry = get_model("realesr-animevideov3")
    module = entry.factory().eval()
    entry.load_weights(module, {})
    return module, OnnxExportSpec.from_card(entry.card), task_named(entry.card.task).batches(entry.card.input)


def test_export_is_byte_identical_and_equals_the_embedded_bundle(anime, tmp_path: Path) -> None:
    module, spec, batches = anime
    first, second = tmp_path / "a.onnx", tmp_path / "b.onnx"
    export_onnx(module, spec, batches[0], first)
    export_onnx(module, spec, batches[1], second)
    assert first.read_bytes() == second.read_bytes()
    graph = onnx.load(str(first)).graph
    assert not any(node.metadata_props for node in graph.node)  # no stack traces with this checkout's paths
    assert sha256_file(first) == sha256_file(embedded_bundle_path("sr") / "model.fp32.onnx")
    report = validate_onnx(first, torch_reference(module, spec), batches, spec)
    assert len(report.cases) == 2 and report.max_abs_diff <= 1e-5


def test_validation_lists_every_failure(anime, tmp_path: Path) -> None:
    module, spec, batches = anime
    static = tmp_path / "static.onnx"
    export_onnx(module, replace(spec, dynamic_axes={}), batches[0], static)
    perturbed = get_model("realesr-animevideov3").factory().eval()
    perturbed.load_state_dict({k: v * 1.01 for k, v in module.state_dict().items()})
    with pytest.raises(ExportValidationError) as caught:
        validate_onnx(static, torch_reference(perturbed, spec), batches, spec)
    message = str(caught.value)
    for expected in ("input: axis 0 should be dynamic", "input: axis 2 should be dynamic",
                     "output: axis 3 should be dynamic", "input (1, 3, 48, 64): max abs diff",
                     "input (2, 3, 40, 40): onnxruntime failed"):
        assert expected in message
