"""Shared pytest fixtures: real photos (scikit-image), a student checkpoint, exported bundles."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from support import cli


@pytest.fixture(scope="session")
def astronaut_bgr() -> np.ndarray:
    import skimage.data

    return cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="session")
def coffee_bgr() -> np.ndarray:
    import skimage.data

    return cv2.cvtColor(skimage.data.coffee(), cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="session")
def student_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state_dict of the vqa-sharpmind-swint layout (seeded random init, as a user checkpoint)."""
    import torch

    from kvqe.models.registry import create_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "student.pth"
    torch.save(create_model("vqa-sharpmind-swint").state_dict(), path)
    return path


@pytest.fixture(scope="session")
def vqa_bundle(tmp_path_factory: pytest.TempPathFactory, student_checkpoint: Path) -> Path:
    """``kvqe-export vqa-sharpmind-swint --weights CKPT`` built once per session (wide score range, so
    untrained scores are not clipped)."""
    out = tmp_path_factory.mktemp("bundles") / "vqa"
    cli("kvqe-export", "vqa-sharpmind-swint", "--weights", f"model={student_checkpoint}", "--out", str(out),
        "--score-range=-1000,1000", "--json", check_code=0)
    return out


@pytest.fixture(scope="session")
def x4plus_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "x4plus"
    cli("kvqe-export", "realesrgan-x4plus", "--out", str(out), "--formats", "onnx", "--json", check_code=0)
    return out
