"""Image files read as HxWx3 uint8 BGR frames, their size checked from the header before decoding; grey,
16-bit and CMYK files (a photo folder holds them) are converted to 8-bit BGR, and the conversion is named."""
from __future__ import annotations

import os
import re
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from kvqe.errors import BadInputError
from kvqe.sdk.ffmpeg_decode import FrameTooLargeError
from kvqe.sdk.frames import check_frame
from kvqe.sdk.limits import DEFAULT_MAX_PIXELS, Limits
from kvqe.sdk.targets import check_file

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
_PILLOW_PIXELS = re.compile(r"\((\d+) pixels\)")  # the size in Pillow's DecompressionBombError


def _check_image_size(path: Path, limits: Limits) -> str:
    """Check an image file's size against the cap from its header alone (Pillow opens lazily); its Pillow
    mode ("RGB", "L", "CMYK", ...)."""
    try:
        with Image.open(path) as image:
            size, mode = image.size, image.mode
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
    return mode


def _unreadable(path: Path) -> BadInputError:
    return BadInputError(f"cannot read {path} as an image (corrupt or unsupported); "
                         f"supported: {', '.join(sorted(IMAGE_SUFFIXES))}")


def decode_image(path: str | os.PathLike[str], *, max_pixels: int | None = DEFAULT_MAX_PIXELS
                 ) -> tuple[np.ndarray, str]:
    """An image file as HxWx3 uint8 BGR, upright by its EXIF orientation, and the conversion it took ("" for
    none; e.g. "grey to BGR", "16-bit to 8-bit", "CMYK to BGR", "grey 16-bit to 8-bit BGR").

    Its size is checked against ``max_pixels`` from the header before it is decoded. Grey and 16-bit images
    are converted by OpenCV (16 bits rounded to 8), CMYK by Pillow (without colour management); an alpha
    channel is refused rather than silently dropped.
    """
    path = Path(path)
    check_file(path)
    mode = _check_image_size(path, Limits.of(max_pixels=max_pixels))
    if mode == "CMYK":
        try:
            with Image.open(path) as picture:
                rgb = np.asarray(ImageOps.exif_transpose(picture).convert("RGB"))
        except (OSError, ValueError, SyntaxError) as exc:
            raise _unreadable(path) from exc
        return check_frame(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), f"image {path}"), "CMYK to BGR"
    data = np.fromfile(path, np.uint8)
    try:
        stored = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)  # as stored, to see channels and depth
        if stored is None:
            raise _unreadable(path)
        grey = stored.ndim == 2 or stored.shape[2] == 1
        if not grey and stored.shape[2] != 3:
            check_frame(stored, f"image {path}")  # alpha, or channels kvqe does not read: refused, named
        del stored
        image = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)  # turned by EXIF orientation
    except cv2.error as exc:
        raise BadInputError(f"image {path}: OpenCV cannot decode it: {exc.err or exc}") from exc
    if image is None:
        raise _unreadable(path)
    deep = image.dtype == np.uint16
    if deep:
        image = np.rint(image / 257.0).astype(np.uint8)
    steps = " ".join(step for step, done in (("grey", grey), ("16-bit", deep)) if done)
    conversion = {"": "", "grey": "grey to BGR", "16-bit": "16-bit to 8-bit"}.get(steps, f"{steps} to 8-bit BGR")
    return check_frame(image, f"image {path}"), conversion


def read_image(path: str | os.PathLike[str], *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as HxWx3 uint8 BGR (:func:`decode_image` without the conversion's name)."""
    return decode_image(path, max_pixels=max_pixels)[0]
