"""Distil a teacher's video scores into the ``vqa-student``: seeded, reproducible, on the CPU.

Video-level training: each batch holds several videos; a video's prediction is the mean of its frame
scores, exactly as the runtime pools them. Loss = PLCC loss + rank hinge (agreement with the teacher's
ordering) + L1 on the 0..1 scale (anchors the absolute VMAF scale that the manifest declares).
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kvqe import metrics
from kvqe.errors import BadInputError
from kvqe.export.models.student import CARD, SCORE_SCALE, KvqeStudent
from kvqe.files import atomic_output_file
from kvqe.training.features import cached_views
from kvqe.training.losses import plcc_loss, rank_hinge_loss

MEAN = np.asarray(CARD.input["mean"], np.float32)
STD = np.asarray(CARD.input["std"], np.float32)


@dataclass(frozen=True)
class DistillConfig:
    epochs: int = 24
    batch_videos: int = 12
    lr: float = 1e-3
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
    views: np.ndarray  # views x frames x H x W x 6 uint8


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """frames x H x W x 6 uint8 -> frames x 6 x H x W float32, normalised as the runtime does."""
    x = frames.astype(np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(((x - MEAN) / STD).transpose(0, 3, 1, 2)))


def load_clips(names: list[str], labels: dict[str, float], videos: Path, config: DistillConfig, cache: Path,
               progress: Callable[[str], None]) -> list[Clip]:
    clips = []
    for i, name in enumerate(names):
        path = videos / name
        if not path.is_file():
            raise BadInputError(f"labelled video not found: {path}")
        clips.append(Clip(name, labels[name], cached_views(path, CARD.input, config.views, config.seed, cache)))
        if (i + 1) % 50 == 0:
            progress(f"prepared {i + 1}/{len(names)} videos")
    return clips


def predict(model: KvqeStudent, clips: list[Clip], view: int = 0) -> np.ndarray:
    """Video scores (mean over frames) of the deterministic view, in eval mode."""
    model.eval()
    with torch.no_grad():
        return np.array([float(model(to_tensor(c.views[view])).mean()) for c in clips])


def agreement(pred: np.ndarray, clips: list[Clip]) -> dict[str, float]:
    labels = np.array([c.label for c in clips])
    return {"srocc": metrics.srocc(pred, labels), "plcc": metrics.plcc(pred, labels),
            "krocc": metrics.krocc(pred, labels), "rmse": metrics.rmse(pred, labels)}


def train(train_clips: list[Clip], val_clips: list[Clip], config: DistillConfig,
          progress: Callable[[str], None]) -> tuple[KvqeStudent, list[dict[str, Any]]]:
    """Train from scratch; keep the epoch with the best validation SROCC + PLCC."""
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    rng = np.random.default_rng(config.seed)
    model = KvqeStudent()
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    batch_size = min(config.batch_videos, len(train_clips))
    steps = config.epochs * (len(train_clips) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=config.lr, total_steps=steps, pct_start=0.15)
    history: list[dict[str, Any]] = []
    best: tuple[float, dict[str, torch.Tensor]] | None = None
    for epoch in range(config.epochs):
        started, losses = time.perf_counter(), []
        model.train()
        order = rng.permutation(len(train_clips))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            batch = [train_clips[i] for i in order[start:start + batch_size]]
            frames = [c.views[int(rng.integers(c.views.shape[0]))] for c in batch]
            counts = [len(f) for f in frames]
            scores = model(to_tensor(np.concatenate(frames))).reshape(-1)
            pred = torch.stack([chunk.mean() for chunk in torch.split(scores, counts)])
            target = torch.tensor([c.label for c in batch], dtype=torch.float32)
            loss = (plcc_loss(pred, target) + config.rank_weight * rank_hinge_loss(pred / SCORE_SCALE, target / SCORE_SCALE)
                    + config.l1_weight * torch.nn.functional.l1_loss(pred / SCORE_SCALE, target / SCORE_SCALE))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(float(loss.detach()))
        figures = agreement(predict(model, val_clips), val_clips)
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "val": figures,
                        "seconds": round(time.perf_counter() - started, 1)})
        progress(f"epoch {epoch + 1}/{config.epochs}: loss {np.mean(losses):.4f}, val SROCC {figures['srocc']:.4f} "
                 f"PLCC {figures['plcc']:.4f}")
        quality = figures["srocc"] + figures["plcc"]
        if best is None or quality > best[0]:
            best = (quality, copy.deepcopy(model.state_dict()))
    assert best is not None
    model.load_state_dict(best[1])
    return model.eval(), history


def save_checkpoint(model: KvqeStudent, path: Path, record: dict[str, Any]) -> None:
    """The state_dict plus how it was made (command, seed, data, figures) in one torch file."""
    with atomic_output_file(path) as tmp:
        torch.save({"state_dict": model.state_dict(), "training": record}, tmp)


def config_record(config: DistillConfig) -> dict[str, Any]:
    return asdict(config)
