"""The teacher: VMAF v0.6.1 (the ``vmaf-torch`` package's implementation, CPU) of a processed video
against its pristine source, per frame on the luma plane, pooled by the mean, clipped to [0, 100].

Two models (:data:`TEACHERS`): ``vmaf`` (v0.6.1, the default) and ``vmaf-neg`` (v0.6.1 "no enhancement
gain", libvmaf's ``vmaf_v0.6.1neg``: the ADM and VIF gain is limited to 1, so sharpening and contrast boosts
are not rewarded; the variant codec comparisons use).

Faithful to libvmaf where it matters for labels:

- the luma is the decoded Y plane as stored (``yuv420p``, limited range); ffmpeg's ``gray`` output would
  stretch it to full range first and shift the scores;
- the motion feature always compares consecutive reference frames; with ``frame_step`` k only ADM and VIF
  are evaluated on every k-th frame (motion between frames k apart would inflate VMAF by 5-13 points);
- one torch thread by default: on a shared 2-core machine that is 10-50x faster than two.
"""
from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kvqe.errors import BadInputError, KvqeError

SCORE_RANGE = (0.0, 100.0)
_BATCH = 4  # frames per ADM/VIF call: bounded memory, no loss of speed on one thread


@dataclass(frozen=True)
class TeacherModel:
    """One VMAF model the teacher can run."""

    name: str  # the ``kvqe distill --teacher`` value
    model: str  # libvmaf's model name
    title: str
    no_enhancement_gain: bool

    @property
    def units(self) -> str:
        """What a student distilled from it scores in (its bundle's ``output.units``)."""
        return f"{self.title} (teacher)"

    @property
    def revision(self) -> str:
        """Identifies the computation (change it when the computation changes): cached scores under
        another revision are recomputed."""
        return f"{self.model}/vmaf-torch/yuv420p-luma/consecutive-motion"


TEACHERS = {t.name: t for t in (TeacherModel("vmaf", "vmaf_v0.6.1", "VMAF v0.6.1", False),
                                TeacherModel("vmaf-neg", "vmaf_v0.6.1neg", "VMAF v0.6.1 NEG", True))}
DEFAULT_TEACHER = "vmaf"


def teacher_model(name: str) -> TeacherModel:
    """The :data:`TEACHERS` entry called ``name``, else BadInputError listing them."""
    if name not in TEACHERS:
        raise BadInputError(f"unknown teacher {name!r}; choose one of {', '.join(TEACHERS)}")
    return TEACHERS[name]


def video_size(path: Path) -> tuple[int, int]:
    """(width, height) of the first video stream, by ffprobe."""
    result = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                             "stream=width,height", "-of", "json", str(path)], capture_output=True, text=True,
                            check=False)
    streams = json.loads(result.stdout or "{}").get("streams") if result.returncode == 0 else None
    if not streams:
        raise BadInputError(f"{path}: no video stream ffprobe can read ({result.stderr.strip()[:200]})")
    return int(streams[0]["width"]), int(streams[0]["height"])


def luma_frames(path: Path, width: int, height: int) -> np.ndarray:
    """Every frame's Y plane (frames x height x width, uint8) as decoded, scaled to ``width`` x ``height``
    (bicubic) if the video has another size (the scale filter passes same-size frames through untouched)."""
    result = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-fps_mode", "passthrough", "-vf",
                             f"scale={width}:{height}:flags=bicubic", "-f", "rawvideo", "-pix_fmt", "yuv420p", "-"],
                            capture_output=True, check=False)
    if result.returncode != 0:
        raise KvqeError(f"ffmpeg could not decode {path}: {result.stderr.decode(errors='replace')[:300]}")
    frame = width * height * 3 // 2
    if not result.stdout or len(result.stdout) % frame:
        raise KvqeError(f"{path}: ffmpeg returned {len(result.stdout)} bytes, not whole {width}x{height} frames")
    planes = np.frombuffer(result.stdout, np.uint8).reshape(-1, frame)
    return planes[:, : width * height].reshape(-1, height, width)


@contextlib.contextmanager
def _torch_threads(count: int) -> Iterator[Any]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        with torch.no_grad():
            yield torch
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class Reference:
    """A pristine clip prepared once for all its versions: its luma and per-frame motion2 feature."""

    luma: np.ndarray
    motion2: np.ndarray


class VmafTeacher:
    """VMAF scores (per frame every ``frame_step``-th frame, mean over them) with vmaf-torch."""

    def __init__(self, frame_step: int = 3, threads: int = 1, model: str = DEFAULT_TEACHER) -> None:
        if frame_step < 1 or threads < 1:
            raise BadInputError(f"frame_step and threads must be >= 1, got {frame_step} and {threads}")
        from vmaf_torch import VMAF

        self.frame_step = frame_step
        self.threads = threads
        self.model = teacher_model(model)
        self._vmaf = VMAF(NEG=self.model.no_enhancement_gain).eval()

    def reference_frames(self, reference: Path, width: int, height: int) -> Reference:
        """The reference's luma and motion, to reuse across the versions of one source."""
        luma = luma_frames(reference, width, height)
        with _torch_threads(self.threads) as torch:
            motion = self._vmaf.compute_motion2(torch.from_numpy(luma[:, None].astype(np.float32)))
        return Reference(luma, motion.reshape(-1).numpy())

    def per_frame(self, reference: Path | Reference, distorted: Path, width: int, height: int) -> np.ndarray:
        """VMAF of frames 0, k, 2k, ... of ``distorted`` against ``reference``, each clipped to [0, 100]."""
        ref = reference if isinstance(reference, Reference) else self.reference_frames(reference, width, height)
        dist = luma_frames(distorted, width, height)
        if len(dist) != len(ref.luma):
            raise BadInputError(f"{distorted.name}: {len(dist)} frames do not align with the reference's "
                                f"{len(ref.luma)}; the teacher needs every frame of the source, in order")
        picked = np.arange(0, len(dist), self.frame_step)
        scores = []
        with _torch_threads(self.threads) as torch:
            for start in range(0, len(picked), _BATCH):
                index = picked[start:start + _BATCH]
                r = torch.from_numpy(ref.luma[index, None].astype(np.float32))
                d = torch.from_numpy(dist[index, None].astype(np.float32))
                motion = torch.from_numpy(ref.motion2[index, None])
                vmaf = self._vmaf
                scores.append(vmaf.predict(vmaf.compute_adm_score(r, d), motion, vmaf.compute_vif_features(r, d)))
            values = torch.cat(scores).reshape(-1).numpy().astype(np.float64)
        return np.clip(values, *SCORE_RANGE)

    def score(self, reference: Path | Reference, distorted: Path, width: int, height: int) -> float:
        return float(np.mean(self.per_frame(reference, distorted, width, height)))


def vmaf_score(reference: Path, distorted: Path, *, frame_step: int = 1, threads: int = 1,
               model: str = DEFAULT_TEACHER) -> tuple[float, list[float]]:
    """VMAF (``model``, a :data:`TEACHERS` name) of ``distorted`` against ``reference`` (aligned, same frame
    count; a distorted video of another size is scaled to the reference's): (mean, per-frame scores of
    frames 0, k, 2k, ...)."""
    width, height = video_size(reference)
    per_frame = VmafTeacher(frame_step, threads, model).per_frame(reference, distorted, width, height)
    return float(np.mean(per_frame)), [float(s) for s in per_frame]
