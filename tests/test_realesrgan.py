"""Real-ESRGAN nets: BasicSR state_dict layouts, forward goldens, cards, and dynamic-shape ONNX export."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from support import fixture_weights, shared_fixture

from kvqe.export.onnx_export import OnnxExportSpec, export_onnx, torch_reference, validate_onnx
from kvqe.models.flops import count_params
from kvqe.models.realesrgan import RRDBNet, SRVGGNetCompact
from kvqe.models.registry import get_model
from kvqe.runtimes.onnxruntime import OnnxRuntimeRunner

# (fixture name, registered model, factory, params)
NETS = [
    ("rrdbnet_x4plus", "realesrgan-x4plus", lambda: RRDBNet(num_block=23), 16_697_987),
    ("srvgg_animevideov3", "realesr-animevideov3", lambda: SRVGGNetCompact(num_conv=16), 621_424),
    ("srvgg_general_x4v3", "realesr-general-x4v3", lambda: SRVGGNetCompact(num_conv=32), 1_213_296),
]
NET_IDS = [net[0] for net in NETS]


def _layout(fixture: str) -> dict[str, dict]:
    return json.loads(shared_fixture(f"realesrgan/layout_{fixture}.json").read_text())


def fixture_net(fixture: str, factory) -> torch.nn.Module:
    """The net with the fixtures' deterministic synthetic weights (seed 0), in eval mode."""
    state = fixture_weights().make_state_dict(_layout(fixture), seed=0)
    net = factory().eval()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    return net


@pytest.mark.parametrize(("fixture", "name", "factory", "params"), NETS, ids=NET_IDS)
def test_state_dict_layout_matches_basicsr(fixture, name, factory, params) -> None:
    state = factory().state_dict()
    layout = _layout(fixture)
    assert list(state) == list(layout)
    assert {k: list(v.shape) for k, v in state.items()} == {k: v["shape"] for k, v in layout.items()}
    assert count_params(factory()) == params == get_model(name).card.params


@pytest.mark.parametrize(("fixture", "name", "factory", "params"), NETS, ids=NET_IDS)
def test_forward_matches_golden(fixture, name, factory, params) -> None:
    with np.load(shared_fixture("realesrgan/golden_realesrgan_nets.npz")) as data:
        golden = dict(data)
    with torch.no_grad():
        out = fixture_net(fixture, factory)(torch.from_numpy(golden["lr"]).float()).numpy()
    assert out.shape == golden[fixture].shape == (1, 3, 64, 64)
    rtol = 1e-5 if fixture.startswith("rrdb") else 0.0
    np.testing.assert_allclose(out, golden[fixture], atol=1e-4, rtol=rtol)


@pytest.mark.parametrize("name", [net[1] for net in NETS])
def test_card(name: str) -> None:
    card = get_model(name).card
    assert (card.task, card.output.scale, card.input.colour_order, card.input.layout) == (
        "sr", 4, "RGB", "NCHW")
    assert card.flops_input == "one 256x256 input (1024x1024 output)"
    assert (card.default_weights is None) == (name == "realesr-general-x4v3")


@pytest.mark.parametrize(
    ("fixture", "factory", "sizes"),
    [
        pytest.param("srvgg_animevideov3", NETS[1][2], [(1, 3, 40, 56), (2, 3, 23, 31)], id="srvgg"),
    ],
)
def test_onnx_export_dynamic_shapes(tmp_path: Path, fixture, factory, sizes) -> None:
    net = fixture_net(fixture, factory)
    path = tmp_path / "net.onnx"
    spec = OnnxExportSpec.from_card(get_model("realesr-animevideov3").card)
    export_onnx(net, spec, torch.rand(1, 3, 16, 16).numpy(), path)
    generator = torch.Generator().manual_seed(0)
    batches = [torch.rand(shape, generator=generator).numpy() for shape in sizes]
    report = validate_onnx(path, torch_reference(net, spec), batches, spec)
    assert [case["input_shape"] for case in report.cases] == [list(s) for s in sizes]
    with OnnxRuntimeRunner(path) as runner:
        for shape, batch in zip(sizes, batches):
            assert runner.run_single(batch).shape == (shape[0], 3, 4 * shape[2], 4 * shape[3])


def test_the_x4plus_export_has_dynamic_shapes_and_matches_torch(x4plus_bundle: Path) -> None:
    """The full-size RRDBNet as ``kvqe-export`` wrote it (official weights, shared with the other tests) at two
    batch sizes and odd sizes, against torch."""
    entry = get_model("realesrgan-x4plus")
    net = entry.factory().eval()
    entry.load_weights(net, {})
    spec = OnnxExportSpec.from_card(entry.card)
    sizes = [(1, 3, 24, 32), (2, 3, 13, 18)]
    generator = torch.Generator().manual_seed(0)
    batches = [torch.rand(shape, generator=generator).numpy() for shape in sizes]
    path = x4plus_bundle / "model.fp32.onnx"
    report = validate_onnx(path, torch_reference(net, spec), batches, spec)
    assert [case["input_shape"] for case in report.cases] == [list(s) for s in sizes]
    with OnnxRuntimeRunner(path) as runner:
        for shape, batch in zip(sizes, batches):
            assert runner.run_single(batch).shape == (shape[0], 3, 4 * shape[2], 4 * shape[3])
