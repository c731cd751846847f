"""One decoded frame and the check every frame handed to kvqe passes: an HxWx3 uint8 BGR array."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kvqe.errors import BadInputError

ASSUMED_FPS = 30.0  # used for Frame.time_s when a source has no known frame rate


@dataclass(frozen=True, eq=False)
class Frame:
    """One decoded frame."""

    index: int  # 0-based decode index
    time_s: float  # the container's timestamp when it has one, else index / fps (ASSUMED_FPS when unknown)
    image: np.ndarray  # HxWx3 uint8 BGR, C-contiguous (a sampler may keep a reduced image instead)


def check_frame(image: object, what: str) -> np.ndarray:
    """Return ``image`` as a C-contiguous HxWx3 uint8 array, else raise BadInputError naming ``what``."""
    if not isinstance(image, np.ndarray):
        raise BadInputError(f"{what}: got {type(image).__name__}; expected an HxWx3 uint8 BGR numpy array")
    if image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8 and image.size:
        return np.ascontiguousarray(image)
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        hint = "kvqe does not invent colour: convert it first, e.g. cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)"
    elif image.ndim == 3 and image.shape[2] == 4:
        hint = ("kvqe does not drop alpha silently: flatten it first, e.g. "
                "cv2.cvtColor(image, cv2.COLOR_BGRA2BGR) or composite it onto a background")
    elif image.ndim == 4:
        hint = "a stack of frames? pass iter(array) to read it frame by frame"
    elif image.dtype != np.uint8 and image.ndim == 3 and image.shape[2] == 3:
        hint = ("convert to 8 bits per channel first, e.g. (image * 255).clip(0, 255).astype(np.uint8) "
                "for floats in 0..1 or (image // 257).astype(np.uint8) for 16-bit")
    else:
        hint = "convert it to a 3-channel 8-bit BGR image first"
    raise BadInputError(
        f"{what}: got an array of shape {image.shape} and dtype {image.dtype}; "
        f"expected a 3-channel uint8 BGR frame (HxWx3); {hint}"
    )
