"""Real-media model inputs made from the shipped sample photo with the runtime's own preprocessing: the
batches that check an exported graph's dynamic axes, and the held-out set used when no ``--calib`` is
given. One pair of functions per task; :mod:`kvqe.calibration.tasks` picks them."""
from __future__ import annotations

import numpy as np

from kvqe.calibration.contract import SampleSet
from kvqe.samples import sample_image_path
from kvqe.sdk.images import read_image
from kvqe.sdk.preprocess import preprocess_sr_image, preprocess_vqa_frame, to_model_colour, vqa_geometry
from kvqe.specs import InputSpec


def _photo() -> np.ndarray:
    return read_image(sample_image_path())


def vqa_batches(spec: InputSpec) -> list[np.ndarray]:
    """Two batch sizes of preprocessed frames (the photo, its mirror, a crop)."""
    photo = _photo()
    views = [photo, photo[:, ::-1], photo[24:168, 8:184]]
    frames = [preprocess_vqa_frame(np.ascontiguousarray(v), spec) for v in views]
    return [np.stack(frames[:1]), np.stack(frames)]


def sr_batches(spec: InputSpec) -> list[np.ndarray]:
    """Two batch sizes and two different tile shapes of the preprocessed photo."""
    chw = preprocess_sr_image(_photo(), spec)
    return [
        np.ascontiguousarray(chw[None, :, 40:88, 64:128]),
        np.ascontiguousarray(np.stack([chw[:, 100:140, 20:60], chw[:, 10:50, 130:170]])),
    ]


def vqa_builtin_set(spec: InputSpec) -> SampleSet:
    """Six VQA frames from crops, flips and a darker copy of the photo, each its own group."""
    photo = _photo()
    views = [photo, photo[:, ::-1], photo[24:168, 8:184], photo[:128, :128], photo[64:, 64:],
             (photo * 0.6).astype(np.uint8)]
    return _as_set(np.stack([vqa_geometry(np.ascontiguousarray(v), spec) for v in views]), spec)


def sr_builtin_set(spec: InputSpec) -> SampleSet:
    """Six 64x64 crops of the photo in model colour order, each its own group."""
    rgb = to_model_colour(_photo(), spec)
    return _as_set(np.stack([rgb[top:top + 64, left:left + 64] for top in (0, 64, 128) for left in (16, 112)]), spec)


def _as_set(images: np.ndarray, spec: InputSpec) -> SampleSet:
    return SampleSet(images, np.arange(len(images), dtype=np.int32),
                     tuple(f"sample view {i}" for i in range(len(images))), spec)
