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
- one torch thread by default: on a shared 2-core machine that is 10-50x faster than two;
- frames are streamed from ffmpeg and scored a few at a time, so memory does not grow with a video's length
  (under 1 GB for 720p).
"""
from __future__ import annotations

import contextlib
import itertools
import json
import subprocess
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kvqe.errors import BadInputError
from kvqe.sdk.ffmpeg_decode import FfmpegProcess, local_input

SCORE_RANGE = (0.0, 100.0)
_BATCH = 4  # frames per motion, ADM or VIF call: bounded memory, no loss of speed on one thread


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


def luma_stream(path: Path, width: int, height: int) -> Generator[np.ndarray, None, None]:
    """Each frame's Y plane (height x width, uint8) as decoded, one at a time, scaled to ``width`` x ``height``
    (bicubic) if the video has another size (the scale filter passes same-size frames through untouched).
    Only one frame is held, so memory does not grow with the video's length."""
    size = width * height * 3 // 2
    decode = FfmpegProcess("ffmpeg", [*local_input(path), "-fps_mode", "passthrough", "-vf",
                                      f"scale={width}:{height}:flags=bicubic", "-f", "rawvideo", "-pix_fmt", "yuv420p"],
                           str(path))
    try:
        count = 0
        while data := decode.stdout.read(size):
            if len(data) < size:
                raise BadInputError(f"{path}: ffmpeg's output ended inside frame {count} "
                                    f"({len(data)} of {size} bytes of a {width}x{height} frame)")
            count += 1
            yield np.frombuffer(data, np.uint8)[: width * height].reshape(height, width)
        decode.finish(count)
    finally:
        decode.close()


def _frame_batches(frames: Iterator[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """``frames`` stacked ``size`` at a time (the last batch may be shorter) as float32 N x 1 x H x W."""
    while batch := list(itertools.islice(frames, size)):
        yield np.stack(batch)[:, None].astype(np.float32)


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
    """A pristine clip prepared once for all its versions: its path and per-frame motion2 feature (the frames
    themselves are decoded again, streamed, for each version)."""

    path: Path
    motion2: np.ndarray


class VmafTeacher:
    """VMAF scores (per frame every ``frame_step``-th frame, mean over them) with vmaf-torch. Frames are
    streamed: memory is a few frames whatever the video's length."""

    def __init__(self, frame_step: int = 3, threads: int = 1, model: str = DEFAULT_TEACHER) -> None:
        if frame_step < 1 or threads < 1:
            raise BadInputError(f"frame_step and threads must be >= 1, got {frame_step} and {threads}")
        from vmaf_torch import VMAF

        self.frame_step = frame_step
        self.threads = threads
        self.model = teacher_model(model)
        self._vmaf = VMAF(NEG=self.model.no_enhancement_gain).eval()

    def reference_frames(self, reference: Path, width: int, height: int) -> Reference:
        """The reference's motion2 (libvmaf's: the smaller blurred-luma difference to the previous and to the
        next frame; 0 for the first, the previous difference for the last), to reuse across its versions."""
        from vmaf_torch.utils import fast_gaussian_blur, vmaf_pad

        kernel = self._vmaf.motion
        pad = [(kernel.kernel_size - 1) // 2] * 4
        differences = [0.0]  # frame i against frame i-1
        previous = None  # the last blurred frame of the previous batch
        frames = luma_stream(reference, width, height)
        with contextlib.closing(frames), _torch_threads(self.threads) as torch:
            for batch in _frame_batches(frames, _BATCH):
                blurred = fast_gaussian_blur(vmaf_pad(torch.from_numpy(batch), pad), weight=kernel.blur_win)
                chain = blurred if previous is None else torch.cat([previous, blurred])
                differences += torch.mean(torch.abs(chain[1:] - chain[:-1]), dim=(-1, -2)).reshape(-1).tolist()
                previous = blurred[-1:]
        motion = np.asarray(differences, np.float32)
        motion2 = np.minimum(motion, np.append(motion[1:], 0.0).astype(np.float32))
        motion2[0], motion2[-1] = 0.0, motion[-1]  # one frame: both are frame 0, whose difference is 0
        return Reference(reference, motion2)

    def per_frame(self, reference: Path | Reference, distorted: Path, width: int, height: int) -> np.ndarray:
        """VMAF of frames 0, k, 2k, ... of ``distorted`` against ``reference``, each clipped to [0, 100]."""
        ref = reference if isinstance(reference, Reference) else self.reference_frames(reference, width, height)
        ref_frames, dist_frames = luma_stream(ref.path, width, height), luma_stream(distorted, width, height)
        counts = [0, 0]
        batch: list[tuple[np.ndarray, np.ndarray, float]] = []  # (reference luma, distorted luma, motion2)
        scores = []
        with contextlib.closing(ref_frames), contextlib.closing(dist_frames), _torch_threads(self.threads) as torch:
            for index, (r, d) in enumerate(itertools.zip_longest(ref_frames, dist_frames)):
                counts[0] += r is not None
                counts[1] += d is not None
                if r is None or d is None or index % self.frame_step:
                    continue
                batch.append((r, d, ref.motion2[index]))
                if len(batch) == _BATCH:
                    scores.append(self._score_batch(batch))
                    batch = []
            if counts[0] != counts[1]:
                raise BadInputError(f"{distorted.name}: {counts[1]} frames do not align with the reference's "
                                    f"{counts[0]}; the teacher needs every frame of the source, in order")
            if batch:
                scores.append(self._score_batch(batch))
            values = torch.cat(scores).reshape(-1).numpy().astype(np.float64)
        return np.clip(values, *SCORE_RANGE)

    def score(self, reference: Path | Reference, distorted: Path, width: int, height: int) -> float:
        return float(np.mean(self.per_frame(reference, distorted, width, height)))

    def _score_batch(self, batch: list[tuple[np.ndarray, np.ndarray, float]]) -> Any:
        """VMAF of aligned (reference luma, distorted luma, reference motion2) frames (inside ``_torch_threads``)."""
        import torch

        refs, dists, motion2 = zip(*batch, strict=True)
        r = torch.from_numpy(np.stack(refs)[:, None].astype(np.float32))
        d = torch.from_numpy(np.stack(dists)[:, None].astype(np.float32))
        motion = torch.tensor(motion2, dtype=torch.float32)[:, None]
        vmaf = self._vmaf
        return vmaf.predict(vmaf.compute_adm_score(r, d), motion, vmaf.compute_vif_features(r, d))


def vmaf_score(reference: Path, distorted: Path, *, frame_step: int = 1, threads: int = 1,
               model: str = DEFAULT_TEACHER) -> tuple[float, list[float]]:
    """VMAF (``model``, a :data:`TEACHERS` name) of ``distorted`` against ``reference`` (aligned, same frame
    count; a distorted video of another size is scaled to the reference's): (mean, per-frame scores of
    frames 0, k, 2k, ...)."""
    width, height = video_size(reference)
    per_frame = VmafTeacher(frame_step, threads, model).per_frame(reference, distorted, width, height)
    return float(np.mean(per_frame)), [float(s) for s in per_frame]
