"""Distil a teacher's video scores into the ``vqa-student``: seeded, reproducible, on the CPU.

The student's features (statistics and fragment contrast through the frozen ImageNet EfficientNet-Lite0)
are fixed, so they are computed once per clip and view (the runtime's own sampler and preprocessing, see
:mod:`kvqe.training.features`), by ONNX Runtime on the exported feature graph (several times faster than
torch on the CPU for the depthwise convolutions); only the two head ensembles are trained.
Video-level training: each batch holds several videos, one random augmented view each; a video's
prediction is the mean of its frame scores, exactly as the runtime pools them. Loss per ensemble member =
PLCC loss + rank hinge (agreement with the teacher's ordering) + L1 on the 0..1 scale (anchors the
absolute VMAF scale that the manifest declares).
"""
from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kvqe import metrics
from kvqe.errors import BadInputError
from kvqe.export.onnx_export import OnnxExportSpec, export_onnx
from kvqe.files import atomic_output_file
from kvqe.models.efficientnet_lite import load_imagenet_weights
from kvqe.models.student import CARD, SCORE_SCALE, KvqeStudent
from kvqe.models.weights.checkpoint import read_state_dict
from kvqe.runtimes.onnxruntime import OnnxRuntimeRunner
from kvqe.training.features import cached_views
from kvqe.training.losses import plcc_loss, rank_hinge_loss

MEAN = np.asarray(CARD.input.mean, np.float32)
STD = np.asarray(CARD.input.std, np.float32)


@dataclass(frozen=True)
class DistillConfig:
    epochs: int = 200
    batch_videos: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-2
    views: int = 3
    seed: int = 0
    rank_weight: float = 1.0
    l1_weight: float = 1.0
    threads: int = 2


@dataclass
class Clip:
    name: str
    label: float
    features: torch.Tensor  # views x frames x 716, the student's fixed features


def source_of(name: str) -> str:
    """The source a processed version came from: the part before ``__`` (``src__crf30.mp4``)."""
    return Path(name).stem.split("__")[0]


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """frames x H x W x 6 uint8 -> frames x 6 x H x W float32, normalised as the runtime does."""
    x = frames.astype(np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(((x - MEAN) / STD).transpose(0, 3, 1, 2)))


def new_student() -> KvqeStudent:
    """An untrained student whose feature extractor carries the ImageNet EfficientNet-Lite0 weights."""
    model = KvqeStudent()
    load_imagenet_weights(model.contrast.backbone)
    return model.eval()


def load_student(checkpoint: Path) -> KvqeStudent:
    """A student with ``checkpoint``'s weights (heads, standardisation and backbone), in eval mode."""
    model = new_student()
    try:
        model.load_state_dict(read_state_dict(checkpoint))
    except RuntimeError as error:
        raise BadInputError(f"{checkpoint} is not a vqa-student checkpoint: {str(error)[:300]}") from None
    return model.eval()


class _Features(torch.nn.Module):
    """The student's fixed feature extractor as a module of its own (the graph ``load_clips`` exports)."""

    def __init__(self, student: KvqeStudent) -> None:
        super().__init__()
        self.student = student

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student.features(x)


def load_clips(names: list[str], labels: dict[str, float], videos: Path, config: DistillConfig, cache: Path,
               progress: Callable[[str], None]) -> list[Clip]:
    """Every labelled video's views (cached on disk) reduced to the student's fixed features."""
    for name in names:
        if not (videos / name).is_file():
            raise BadInputError(f"labelled video not found: {videos / name}")
    clips = []
    with tempfile.TemporaryDirectory(prefix="kvqe-features-") as folder:
        graph = Path(folder) / "features.onnx"
        export_onnx(_Features(new_student()), OnnxExportSpec.from_card(CARD),
                    to_tensor(np.zeros((2, 448, 448, 6), np.uint8)).numpy(), graph)
        with OnnxRuntimeRunner(graph, threads=config.threads).load() as runner:
            for i, name in enumerate(names):
                views = cached_views(videos / name, CARD.input, config.views, config.seed, cache)
                frames = runner.run_single(to_tensor(views.reshape(-1, *views.shape[2:])).numpy())
                clips.append(Clip(name, labels[name], torch.from_numpy(frames).reshape(*views.shape[:2], -1)))
                if (i + 1) % 50 == 0:
                    progress(f"prepared {i + 1}/{len(names)} videos")
    return clips


def predict(model: KvqeStudent, clips: list[Clip], view: int = 0) -> np.ndarray:
    """Video scores (mean over frames) of the deterministic view (the runtime's), in eval mode."""
    model.eval()
    with torch.no_grad():
        return np.array([float(model.frame_scores(c.features[view]).mean()) for c in clips])


def agreement(pred: np.ndarray, clips: list[Clip]) -> dict[str, float]:
    labels = np.array([c.label for c in clips])
    return {"srocc": metrics.srocc(pred, labels), "plcc": metrics.plcc(pred, labels),
            "krocc": metrics.krocc(pred, labels), "rmse": metrics.rmse(pred, labels)}


def _loss(pred: torch.Tensor, target: torch.Tensor, config: DistillConfig) -> torch.Tensor:
    return (plcc_loss(pred, target) + config.rank_weight * rank_hinge_loss(pred / SCORE_SCALE, target / SCORE_SCALE)
            + config.l1_weight * torch.nn.functional.l1_loss(pred / SCORE_SCALE, target / SCORE_SCALE))


def train(train_clips: list[Clip], val_clips: list[Clip], config: DistillConfig, progress: Callable[[str], None],
          init: KvqeStudent | None = None) -> tuple[KvqeStudent, list[dict[str, Any]]]:
    """Train the head ensembles for ``config.epochs`` (no early stopping on validation): from scratch, or
    fine-tuned from ``init`` (its heads and feature standardisation are the starting point; it is modified)."""
    if len(train_clips) < 2:
        raise BadInputError("distillation needs at least two training videos")
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    rng = np.random.default_rng(config.seed)
    model = init if init is not None else new_student()
    if init is None:
        model.set_standardisation(torch.cat([c.features.flatten(0, 1) for c in train_clips]))
    optimiser = torch.optim.AdamW(model.head_parameters(), lr=config.lr, weight_decay=config.weight_decay)
    batch_size = min(config.batch_videos, len(train_clips))
    history: list[dict[str, Any]] = []
    for epoch in range(config.epochs):
        started, losses = time.perf_counter(), []
        model.train()
        order = rng.permutation(len(train_clips))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            batch = [train_clips[i] for i in order[start:start + batch_size]]
            features = [c.features[int(rng.integers(c.features.shape[0]))] for c in batch]
            members = model.member_scores(torch.cat(features))  # members x frames
            pred = torch.stack([chunk.mean(1) for chunk in torch.split(members, [len(f) for f in features], dim=1)], 1)
            target = torch.tensor([c.label for c in batch], dtype=torch.float32)
            loss = torch.stack([_loss(member, target, config) for member in pred]).sum()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()) / len(pred))
        figures = agreement(predict(model, val_clips), val_clips) if len(val_clips) >= 2 else None
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "val": figures,
                        "seconds": round(time.perf_counter() - started, 3)})
        if (epoch + 1) % max(1, config.epochs // 10) == 0 or epoch + 1 == config.epochs:
            val = f", val SROCC {figures['srocc']:.4f} PLCC {figures['plcc']:.4f}" if figures else ""
            progress(f"epoch {epoch + 1}/{config.epochs}: loss {np.mean(losses):.4f}{val}")
    return model.eval(), history


def save_checkpoint(model: KvqeStudent, path: Path, record: dict[str, Any]) -> None:
    """The state_dict plus how it was made (command, seed, data, figures) in one torch file."""
    with atomic_output_file(path) as tmp:
        torch.save({"state_dict": model.state_dict(), "training": record}, tmp)


def config_record(config: DistillConfig) -> dict[str, Any]:
    return asdict(config)
