"""Real-media inputs for export validation, made with the runtime's own preprocessing."""
from __future__ import annotations

import numpy as np

from kvqe.calibration.contract import SampleSet
from kvqe.models.registry import ModelCard
from kvqe.samples import sample_image_path
from kvqe.sdk.images import read_image
from kvqe.sdk.preprocess import preprocess_sr_image, preprocess_vqa_frame, to_model_colour, vqa_geometry


def validation_batches(card: ModelCard) -> list[np.ndarray]:
    """Batches that exercise the dynamic axes: two batch sizes, and for SR two different tile shapes."""
    photo = read_image(sample_image_path())
    if card.task == "vqa":
        views = [photo, photo[:, ::-1], photo[24:168, 8:184]]
        frames = [preprocess_vqa_frame(np.ascontiguousarray(v), card.input) for v in views]
        return [np.stack(frames[:1]), np.stack(frames)]
    chw = preprocess_sr_image(photo, card.input)
    return [
        np.ascontiguousarray(chw[None, :, 40:88, 64:128]),
        np.ascontiguousarray(np.stack([chw[:, 100:140, 20:60], chw[:, 10:50, 130:170]])),
    ]


def builtin_validation_set(card: ModelCard) -> SampleSet:
    """Held-out data when the user gives no ``--calib``: views of the shipped sample photo (six SR crops, or
    six VQA frames from crops, flips and a darker copy), each its own group."""
    photo = read_image(sample_image_path())
    if card.task == "vqa":
        views = [photo, photo[:, ::-1], photo[24:168, 8:184], photo[:128, :128], photo[64:, 64:],
                 (photo * 0.6).astype(np.uint8)]
        images = np.stack([vqa_geometry(np.ascontiguousarray(v), card.input) for v in views])
    else:
        rgb = to_model_colour(photo, card.input)
        images = np.stack([rgb[top:top + 64, left:left + 64] for top in (0, 64, 128) for left in (16, 112)])
    return SampleSet(images, np.arange(len(images), dtype=np.int32), tuple(f"sample view {i}" for i in range(len(images))),
                     card.input)
