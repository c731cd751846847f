"""Image files read as HxWx3 uint8 BGR frames, their size checked from the header before decoding."""
from __future__ import annotations

import os
import re
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from kvqe.errors import BadInputError
from kvqe.sdk.ffmpeg_decode import FrameTooLargeError
from kvqe.sdk.frames import check_frame
from kvqe.sdk.limits import DEFAULT_MAX_PIXELS, Limits
from kvqe.sdk.targets import check_file

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
_PILLOW_PIXELS = re.compile(r"\((\d+) pixels\)")  # the size in Pillow's DecompressionBombError


def _check_image_size(path: Path, limits: Limits) -> None:
    """Check an image file's size against the cap from its header alone (Pillow opens lazily)."""
    try:
        with Image.open(path) as image:
            size = image.size
    except Image.DecompressionBombError as exc:  # over twice Pillow's own limit: its header is all it read
        pixels = _PILLOW_PIXELS.search(str(exc))
        count = f"{int(pixels.group(1)):,}" if pixels else "more"
        cap = f"the cap of {limits.max_pixels:,} pixels and " if limits.max_pixels else ""
        raise FrameTooLargeError(f"image {path}: {count} pixels by its header, over {cap}Pillow's limit "
                                 "(PIL.Image.MAX_IMAGE_PIXELS); refused before decoding") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise BadInputError(f"cannot read {path} as an image (corrupt or unsupported); "
                            f"supported: {', '.join(sorted(IMAGE_SUFFIXES))}") from exc
    limits.check(f"image {path}", *size)


def read_image(path: str | os.PathLike[str], *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as HxWx3 uint8 BGR, upright by its EXIF orientation.

    Its size is checked against ``max_pixels`` from the header before it is decoded. Grey, alpha and
    16-bit images are refused rather than silently converted.
    """
    path = Path(path)
    check_file(path)
    _check_image_size(path, Limits.of(max_pixels=max_pixels))
    data = np.fromfile(path, np.uint8)
    try:
        stored = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)  # as stored, to see channels and depth
        if stored is None:
            raise BadInputError(f"cannot read {path} as an image (corrupt or unsupported); "
                                f"supported: {', '.join(sorted(IMAGE_SUFFIXES))}")
        check_frame(stored, f"image {path}")
        del stored
        return check_frame(cv2.imdecode(data, cv2.IMREAD_COLOR), f"image {path}")  # turned by EXIF orientation
    except cv2.error as exc:
        raise BadInputError(f"image {path}: OpenCV cannot decode it: {exc.err or exc}") from exc
