"""The teacher: VMAF v0.6.1 (the ``vmaf-torch`` package's implementation, CPU) of a processed video
against its pristine source, per frame on the luma plane, pooled by the mean, clipped to [0, 100]."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from kvqe.errors import KvqeError


def luma_frames(path: Path, width: int, height: int, step: int) -> np.ndarray:
    """Every ``step``-th frame's Y plane (frames x height x width, uint8), decoded by ffmpeg."""
    result = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-vf",
         f"scale={width}:{height}:flags=bicubic,select='not(mod(n\\,{step}))'", "-vsync", "0", "-f", "rawvideo",
         "-pix_fmt", "gray", "-"],
        capture_output=True, check=False)
    if result.returncode != 0:
        raise KvqeError(f"ffmpeg could not decode {path}: {result.stderr.decode(errors='replace')[:300]}")
    return np.frombuffer(result.stdout, np.uint8).reshape(-1, height, width)


class VmafTeacher:
    """VMAF v0.6.1 scores (mean over sampled frames), computed with vmaf-torch on the CPU."""

    def __init__(self, frame_step: int = 3, threads: int = 2) -> None:
        import torch
        from vmaf_torch import VMAF

        torch.set_num_threads(threads)
        self.frame_step = frame_step
        self._torch = torch
        self._vmaf = VMAF().eval()

    def per_frame(self, reference: Path | np.ndarray, distorted: Path, width: int, height: int) -> np.ndarray:
        """Per-frame VMAF of ``distorted`` against ``reference`` (a path, or its :meth:`reference_frames`)."""
        ref = reference if isinstance(reference, np.ndarray) else self.reference_frames(reference, width, height)
        dist = luma_frames(distorted, width, height, self.frame_step)
        count = min(len(ref), len(dist))
        if count == 0 or abs(len(ref) - len(dist)) > 1:
            raise KvqeError(f"{distorted.name}: {len(dist)} frames do not align with the reference's {len(ref)}")
        torch = self._torch
        with torch.no_grad():
            scores = self._vmaf(torch.from_numpy(ref[:count, None].astype(np.float32)),
                                torch.from_numpy(dist[:count, None].astype(np.float32))).reshape(-1).numpy()
        return np.clip(scores, 0.0, 100.0)

    def reference_frames(self, reference: Path, width: int, height: int) -> np.ndarray:
        """The reference's sampled luma frames, to reuse across the versions of one source."""
        return luma_frames(reference, width, height, self.frame_step)

    def score(self, reference: Path | np.ndarray, distorted: Path, width: int, height: int) -> float:
        return float(np.mean(self.per_frame(reference, distorted, width, height)))
