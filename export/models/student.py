"""``vqa-student``: kvqe's distilled no-reference VQA model (small, multi-scale, two views).

Input per frame: 6 x 448 x 448 (``kvqe.sdk.preprocess.fragments_and_global``). Channels 0-2: a mosaic of
14 x 14 native-resolution 32 x 32 patches, one centred on each cell of a 14 x 14 grid over the frame
(compression, blur and noise stay visible; on frames under 448 pixels the patches overlap, so small frames
are covered densely). Channels 3-5: the whole frame resized (global context). Like its VMAF teacher the
student looks at luma only.

Two parts:

* :class:`QualityStatistics`, fixed (no parameters): natural-scene statistics of every patch, each patch
  on its own (no seams between mosaic tiles), at native resolution and at half resolution: the
  mean-subtracted contrast-normalised (MSCN) coefficients' spread, shape and neighbour correlations in
  four directions (the BRISQUE family), local contrast, gradient and Laplacian energy, the detail lost
  between the two scales, and blockiness (the strongest of the eight 8-pixel grid phases against the
  others, in both directions). Per frame these are pooled over the 196 patches (mean and the 10/50/90%
  quantiles: flat areas show noise and blocking, textured ones lost detail), plus the same statistics
  of the half-resolution global view.
* A learned head: the statistics standardised with the training set's mean and deviation (buffers), then
  an ensemble of small MLPs whose sigmoid outputs are averaged into a score in [0, 100] (VMAF's scale).

Why not a CNN: trained on the few dozen pristine contents that pip packages ship, a CNN (tried: two conv
pyramids, 0.71M parameters) learns the contents themselves and reached only SROCC 0.56 on unseen
content; the statistics above do not describe content, so the head has little to memorise.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kvqe.errors import BadInputError
from kvqe.export.registry import ModelCard, register_model
from kvqe.export.weights.checkpoint import checkpoint_provenance, load_strict, read_state_dict

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
BT601_LUMA = [0.299, 0.587, 0.114]
GRID, PATCH = 14, 32
SCORE_SCALE = 100.0
QUANTILES = (0.1, 0.5, 0.9)
MSCN_FEATURES = 16  # per scale, see QualityStatistics.mscn
FEATURES = (4 * (2 * MSCN_FEATURES + 3 + 4)) + MSCN_FEATURES  # 172 per frame


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


class Head(nn.Module):
    """One member of the ensemble: standardised statistics -> logit."""

    def __init__(self, features: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Dropout(dropout / 2), nn.Linear(features, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class KvqeStudent(nn.Module):
    """[N, 6, 448, 448] -> [N, 1] scores in [0, 100]: fixed statistics, learned head ensemble."""

    feature_mean: torch.Tensor
    feature_std: torch.Tensor

    def __init__(self, heads: int = 5, hidden: int = 128, dropout: float = 0.2) -> None:
        super().__init__()
        self.statistics = QualityStatistics()
        self.register_buffer("feature_mean", torch.zeros(FEATURES))
        self.register_buffer("feature_std", torch.ones(FEATURES))
        self.heads = nn.ModuleList(Head(FEATURES, hidden, dropout) for _ in range(heads))

    def set_standardisation(self, features: torch.Tensor) -> None:
        """Centre and scale the head's inputs with statistics of the training frames ([M, 172])."""
        self.feature_mean.copy_(features.mean(0))
        self.feature_std.copy_(features.std(0) + 1e-6)

    def member_scores(self, features: torch.Tensor) -> torch.Tensor:
        """[N, 172] statistics -> [heads, N] scores of every ensemble member."""
        z = (features - self.feature_mean) / self.feature_std
        return SCORE_SCALE * torch.sigmoid(torch.stack([head(z)[:, 0] for head in self.heads]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.member_scores(self.statistics(x)).mean(0)[:, None]


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
    "native-resolution fragments at two scales plus global context, then a small MLP ensemble.",
    input={
        "colour_order": "RGB", "layout": "NCHW", "dtype": "float32", "value_range": [0.0, 1.0],
        "mean": IMAGENET_MEAN * 2, "std": IMAGENET_STD * 2,
        "fragments": {"grid": GRID, "patch": PATCH},
        "sampling": {"kind": "keyframes", "per_second": 1, "position": "middle", "max_frames": 8, "pad": "none"},
    },
    output={"score_range": [0.0, 100.0], "pooling": "mean", "units": "VMAF v0.6.1 (teacher)"},
    # kvqe.export.flops: count_params -> 111,365; count_macs on [8, 6, 448, 448] -> 157,387,840 (the
    # statistics' Gaussian windows and the heads; element-wise operations are not counted, as usual)
    params=111_365,
    gflops=0.16,
    flops_input="8 keyframes at 6x448x448 (one video)",
    weights_source="a checkpoint distilled with `kvqe distill` (VMAF v0.6.1 teacher by default)",
    licence="Apache-2.0 (kvqe)",
    quant_policy="nss-head",
)


@register_model(CARD, load_weights=_load_student_weights)
def vqa_student() -> KvqeStudent:
    return KvqeStudent()
