"""Side-by-side crops of an SR bundle: what its FP32 reference and each lower-precision artifact make of the
same picture, so a release engineer sees what INT8 (or FP16) changed, not only by how many dB."""
from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from kvqe.errors import KvqeError
from kvqe.metrics import psnr
from kvqe.runtimes import is_available
from kvqe.samples import sample_image_path
from kvqe.sdk.images import read_image
from kvqe.sdk.loader import load

CROP = 48  # input pixels a side, from the middle of the sample photo
DIFF_GAIN = 8  # the difference image is |a - b| times this, so that small errors show


@dataclass(frozen=True)
class CropComparison:
    """One artifact's crop against the FP32 reference's: PNG data: URIs of both outputs and of their
    amplified difference, and the PSNR between them; or ``note`` saying why there is none. Immutable."""

    backend: str
    precision: str
    reference_uri: str = ""
    candidate_uri: str = ""
    difference_uri: str = ""
    psnr_db: float | None = None
    note: str = ""


def _uri(image: np.ndarray) -> str:
    ok, png = cv2.imencode(".png", image)
    if not ok:
        raise KvqeError("PNG encoding failed")
    return "data:image/png;base64," + base64.b64encode(png.tobytes()).decode("ascii")


def sample_crop() -> np.ndarray:
    """The middle ``CROP`` x ``CROP`` pixels of the shipped sample photo (BGR): what every artifact enhances."""
    photo = read_image(sample_image_path())
    top, left = (photo.shape[0] - CROP) // 2, (photo.shape[1] - CROP) // 2
    return np.ascontiguousarray(photo[top:top + CROP, left:left + CROP])


def compare_crops(bundle: Path, artifacts: list[tuple[str, str]]) -> list[CropComparison]:
    """For each (backend, precision) other than the onnxruntime FP32 reference: both enhancements of a crop
    of the shipped sample photo, side by side. An artifact whose backend is missing here, or that cannot run,
    gets a note instead (a report does not fail on it). Undeployable artifacts are shown too: that is when
    a reviewer most wants to see them."""
    wanted = [(b, p) for b, p in dict.fromkeys(artifacts) if (b, p) != ("onnxruntime", "fp32")]
    if not wanted:
        return []
    crop = sample_crop()
    with load(bundle, backend="onnxruntime", precision="fp32") as reference_model:
        reference = reference_model.enhance(crop, tile=0)
    results = []
    for backend, precision in wanted:
        if not is_available(backend):
            note = f"{backend} is not available on this machine"
            results.append(CropComparison(backend, precision, note=note))
            continue
        try:
            with load(bundle, backend=backend, precision=precision, allow_undeployable=True) as model:
                candidate = model.enhance(crop, tile=0)
        except KvqeError as error:
            results.append(CropComparison(backend, precision, note=f"cannot run: {error}"))
            continue
        difference = np.abs(candidate.astype(np.int16) - reference) * DIFF_GAIN
        difference = np.clip(difference, 0, 255).astype(np.uint8)
        results.append(CropComparison(backend, precision, _uri(reference), _uri(candidate), _uri(difference),
                                      round(psnr(reference, candidate), 2)))
    return results
