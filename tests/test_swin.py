"""Swin-T (torchvision ``swin_t`` layout): state_dict layout, goldens against torchvision, MAC count."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from support import fixture_weights, shared_fixture

from kvqe.models.flops import count_macs, count_params
from kvqe.models.swin import SwinT

pytestmark = pytest.mark.e2e  # Swin-T at full size (28M parameters), against torchvision's goldens
ATOL = 1e-4


@pytest.fixture(scope="module")
def layout() -> dict[str, dict]:
    return json.loads(shared_fixture("swin/layout_torchvision_swin_t.json").read_text())


@pytest.fixture(scope="module")
def generated(layout: dict[str, dict]) -> dict[str, np.ndarray]:
    return fixture_weights().make_state_dict(layout, seed=0)


@pytest.fixture(scope="module")
def model(generated: dict[str, np.ndarray]) -> SwinT:
    net = SwinT().eval()
    state = net.state_dict()  # buffers (relative_position_index) come from the model
    state.update({k: torch.from_numpy(v) for k, v in generated.items()})
    net.load_state_dict(state, strict=True)
    return net


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(shared_fixture("swin/golden_swin_t.npz")) as data:
        return dict(data)


def _close(name: str, got: torch.Tensor, want: np.ndarray) -> None:
    assert tuple(got.shape) == want.shape, name
    diff = float(np.abs(got.numpy() - want).max())
    assert diff <= ATOL, f"{name}: max abs diff {diff:.3g} > {ATOL}"


def test_state_dict_matches_torchvision_layout(layout: dict[str, dict]) -> None:
    net = SwinT()
    buffers = {name for name, _ in net.named_buffers()}
    ours = {
        key: {"shape": list(value.shape), "kind": "buffer" if key in buffers else "param"}
        for key, value in net.state_dict().items()
    }
    assert list(ours) == list(layout)
    assert ours == layout
    assert count_params(net) == 28_288_354


def test_relative_position_index_buffer() -> None:
    index = SwinT().features[1][0].attn.relative_position_index
    assert index.dtype == torch.int64 and index.shape == (2401,)
    # token i = (0, 0), token j = (6, 6): (0-6+6)*13 + (0-6+6) = 0; reversed: 12*13 + 12 = 168
    assert index[48].item() == 0 and index[48 * 49].item() == 168


def test_generated_weights_match_fixture_checksums(generated: dict[str, np.ndarray]) -> None:
    meta = json.loads(shared_fixture("swin/golden_swin_t_meta.json").read_text())
    for key in ("features.0.0.weight", "features.0.2.weight", "features.5.3.attn.qkv.weight", "head.bias"):
        assert generated[key].astype(np.float64).sum() == pytest.approx(meta["weights_checksum"][key], rel=1e-6)
    np.testing.assert_allclose(
        generated["features.0.0.weight"][0, 0, 0, :4], [-0.01685395, -0.07551332, 0.06427654, -0.17542136], rtol=1e-6
    )


@pytest.mark.parametrize("case", ["sq", "ns"])
def test_golden_stages_pooled_logits(model: SwinT, golden: dict[str, np.ndarray], case: str) -> None:
    x = torch.from_numpy(golden[f"{case}_input"])
    with torch.no_grad():
        stages = model.stages(x)
        pooled = model.norm(stages[-1]).mean(dim=(1, 2))
        logits = model.head(pooled)
        for i, stage in enumerate(stages, start=1):
            _close(f"{case} stage{i}", stage, golden[f"{case}_stage{i}"])
        _close(f"{case} pooled", pooled, golden[f"{case}_pooled"])
        _close(f"{case} logits", logits, golden[f"{case}_logits"])
        _close(f"{case} forward", model(x), golden[f"{case}_logits"])


def test_golden_odd_sizes_every_feature(model: SwinT, golden: dict[str, np.ndarray]) -> None:
    """23x31 -> 12x16 -> 6x8 -> 3x4: odd PatchMerging padding, windows larger than the map."""
    x = torch.from_numpy(golden["odd_input"])
    with torch.no_grad():
        for i, layer in enumerate(model.features):
            x = layer(x)
            _close(f"odd features[{i}]", x, golden[f"odd_features_{i}"])
        _close("odd pooled", model.pooled(torch.from_numpy(golden["odd_input"])), golden["odd_pooled"])
        _close("odd logits", model(torch.from_numpy(golden["odd_input"])), golden["odd_logits"])


def test_macs_at_224() -> None:
    """Conv + linear + matmul multiply-adds; the analytic count (and fvcore's conv+linear+matmul)."""
    assert count_macs(SwinT().eval(), torch.zeros(1, 3, 224, 224)) == 4_490_566_656
