"""Differentiable correlation losses for distillation (scale-free agreement with the teacher)."""
from __future__ import annotations

import torch


def _zscore(x: torch.Tensor) -> torch.Tensor:
    return (x - x.mean()) / (x.std(unbiased=False) + 1e-8)


def plcc_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``(1 - rho) / 2`` with ``rho`` the Pearson correlation of the batch's predictions and labels."""
    rho = (_zscore(pred) * _zscore(target)).mean()
    return (1 - rho) / 2


def rank_hinge_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over ordered pairs of ``relu((p_i - p_j) * sign(t_j - t_i))``: penalises every pair the
    prediction orders against the teacher, by how far."""
    dp = pred[:, None] - pred[None, :]
    dt = torch.sign(target[None, :] - target[:, None])
    n = pred.numel()
    return torch.relu(dp * dt).sum() / max(n * (n - 1), 1)
