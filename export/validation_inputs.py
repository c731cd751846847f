"""Real-media inputs for export validation, made with the runtime's own preprocessing."""
from __future__ import annotations

import numpy as np

from kvqe.export.registry import ModelCard
from kvqe.samples import sample_image_path
from kvqe.sdk.preprocess import preprocess_sr_image, preprocess_vqa_frame
from kvqe.sdk.sources import read_image


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
