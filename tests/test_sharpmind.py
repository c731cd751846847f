"""``vqa-sharpmind-swint`` student: layout, torchvision backbone loading, goldens, card figures, ONNX, loader."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import skimage.data
import torch
from support import fixture_weights, shared_fixture

from kvqe.errors import BadInputError
from kvqe.export.onnx_export import OnnxExportSpec, export_onnx, torch_reference, validate_onnx
from kvqe.models.flops import count_macs, count_params
from kvqe.models.registry import create_model, get_model
from kvqe.models.sharpmind import SharpMindStudent
from kvqe.models.swin import SwinT
from kvqe.runtimes.onnxruntime import OnnxRuntimeRunner
from kvqe.sdk.preprocess import preprocess_vqa_frame, resize_short_side_and_crop
from kvqe.specs import Crop

NAME = "vqa-sharpmind-swint"
SPEC = get_model(NAME).card.input  # the runtime's preprocessing spec
HEAD_SHAPES = {"head.0.weight": [128, 1440], "head.0.bias": [128], "head.2.weight": [1, 128], "head.2.bias": [1]}


def _swin_layout() -> dict[str, dict]:
    return json.loads(shared_fixture("swin/layout_torchvision_swin_t.json").read_text())


@pytest.fixture(scope="module")
def student() -> SharpMindStudent:
    """Student whose backbone is loaded from a torchvision-layout swin_t state_dict (norm/head dropped)."""
    weights = fixture_weights()
    torchvision_state = SwinT().state_dict()  # buffers come from the model
    generated = weights.make_state_dict(_swin_layout(), seed=0)
    torchvision_state.update({k: torch.from_numpy(v) for k, v in generated.items()})
    model = create_model(NAME)
    backbone = {k: v for k, v in torchvision_state.items() if not k.startswith(("norm.", "head."))}
    model.backbone.load_state_dict(backbone, strict=True)
    head = {k.removeprefix("head."): torch.from_numpy(weights.make_tensor(k, shape))
            for k, shape in HEAD_SHAPES.items()}
    model.head.load_state_dict(head, strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def photos(astronaut_bgr: np.ndarray, coffee_bgr: np.ndarray) -> torch.Tensor:
    """astronaut, coffee, chelsea through the runtime's preprocessing, [3,3,224,224] float32."""
    chelsea_bgr = cv2.cvtColor(skimage.data.chelsea(), cv2.COLOR_RGB2BGR)
    images = (astronaut_bgr, coffee_bgr, chelsea_bgr)
    return torch.from_numpy(np.stack([preprocess_vqa_frame(bgr, SPEC) for bgr in images]))


@pytest.mark.e2e  # full-size Swin-T
def test_state_dict_is_torchvision_backbone_plus_head() -> None:
    expected = {
        f"backbone.{k}": v["shape"] for k, v in _swin_layout().items() if not k.startswith(("norm.", "head."))
    } | HEAD_SHAPES
    got = {k: list(v.shape) for k, v in create_model(NAME).state_dict().items()}
    assert list(got) == list(expected)
    assert got == expected


@pytest.mark.e2e  # full-size Swin-T
def test_output_is_per_frame(student: SharpMindStudent, photos: torch.Tensor) -> None:
    with torch.no_grad():
        batch = student(photos[:2])
        singles = torch.cat([student(photos[:1]), student(photos[1:2])])
    assert batch.shape == (2, 1)
    assert float((batch - singles).abs().max()) <= 1e-5


def test_runtime_preprocessing_matches_fixture_inputs(
    astronaut_bgr: np.ndarray, coffee_bgr: np.ndarray
) -> None:
    """The runtime's ``preprocess_vqa_frame`` on the original photos reproduces the Swin fixture's ``sq_``.

    The resize and centre crop are bit-exact. The float tensor is not: the runtime scales by
    ``float32(1/255)`` where the fixture divides by 255, a few float32 ulps (max 7.2e-7 measured).
    """
    with np.load(shared_fixture("swin/golden_swin_t.npz")) as golden:
        crops, want = golden["sq_images_uint8"], golden["sq_input"]
    photos = (astronaut_bgr, coffee_bgr)
    rgb = [cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) for bgr in photos]
    np.testing.assert_array_equal(np.stack([resize_short_side_and_crop(image, SPEC) for image in rgb]), crops)
    got = np.stack([preprocess_vqa_frame(bgr, SPEC) for bgr in photos])
    assert got.dtype == np.float32 and got.shape == want.shape == (2, 3, 224, 224)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


@pytest.mark.e2e  # full-size Swin-T
def test_golden_pooled_stage_outputs(student: SharpMindStudent) -> None:
    """Score = head(concat of the 4 stage outputs averaged over H, W); stage 4 before the final norm."""
    with np.load(shared_fixture("swin/golden_swin_t.npz")) as golden:
        x = torch.from_numpy(golden["sq_input"])
        pooled = np.concatenate([golden[f"sq_stage{i}"].mean(axis=(1, 2)) for i in range(1, 5)], axis=1)
    with torch.no_grad():
        want = student.head(torch.from_numpy(pooled))
        got = student(x)
    assert float((got - want).abs().max()) <= 1e-4


@pytest.mark.e2e  # full-size Swin-T
def test_card_figures_match_counter() -> None:
    entry = get_model(NAME)
    card, model = entry.card, entry.factory().eval()
    assert (card.task, card.weight_parts, card.default_weights) == ("vqa", ("model",), None)
    assert card.input.sampling.max_frames == 8 and card.input.crop == Crop(height=224, width=224)
    assert card.params == count_params(model) == 27_702_395
    macs = count_macs(model, torch.zeros(card.input.sampling.max_frames, 3, 224, 224))
    assert macs == 35_919_864_832
    assert card.gflops == round(macs / 1e9, 2)


@pytest.mark.e2e  # full-size Swin-T
def test_onnx_export_matches_torch(student: SharpMindStudent, photos: torch.Tensor, tmp_path: Path) -> None:
    path = tmp_path / "student.onnx"
    spec = OnnxExportSpec.from_card(get_model(NAME).card)
    export_onnx(student, spec, photos[:1].numpy(), path)
    graph = onnx.load(str(path))
    assert {op.domain: op.version for op in graph.opset_import}[""] == 18
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    report = validate_onnx(path, torch_reference(student, spec), [photos[:1].numpy(), photos.numpy()], spec)
    assert report.max_abs_diff <= get_model(NAME).card.onnx_tolerance
    with OnnxRuntimeRunner(path) as runner:
        assert runner.run_single(photos.numpy()).shape == (len(photos), 1)


@pytest.mark.e2e  # full-size Swin-T
def test_load_weights_roundtrip(student: SharpMindStudent, tmp_path: Path) -> None:
    path = tmp_path / "student.pth"
    torch.save({"state_dict": student.state_dict()}, path)
    model = create_model(NAME)
    facts = get_model(NAME).load_weights(model, {"model": path})
    assert facts["source"] == "user checkpoint"
    assert facts["files"]["model"]["name"] == "student.pth" and len(facts["files"]["model"]["sha256"]) == 64
    for key, value in student.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


@pytest.mark.e2e  # full-size Swin-T
def test_load_weights_errors(tmp_path: Path) -> None:
    load, model = get_model(NAME).load_weights, create_model(NAME)
    with pytest.raises(BadInputError, match="--weights model=PATH"):
        load(model, {})
    with pytest.raises(BadInputError, match="--weights model=PATH"):
        load(model, {"backbone": tmp_path / "x.pth"})
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(BadInputError):
        load(model, {"model": text})
    bare = tmp_path / "swin_t.pth"  # a bare torchvision swin_t state_dict is not the student layout
    torch.save(SwinT().state_dict(), bare)
    with pytest.raises(BadInputError, match="does not match SharpMindStudent"):
        load(model, {"model": bare})
