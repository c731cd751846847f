"""Preprocessing from a bundle's input spec: the one function the runtime, export validation and
calibration all call, so the model sees the same tensors everywhere."""
from __future__ import annotations

import cv2
import numpy as np

from kvqe.errors import BadInputError, UnscorableError
from kvqe.specs import InputSpec, OutputSpec

# a resize-and-crop model reads a frame enlarged at most this much: beyond it each source pixel fills a block
# of the model's input larger than its smallest features, and the score says more about the enlargement
_MAX_UPSCALE = 8
_INTERPOLATION = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}


def normalise(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """HxWx3 uint8 in model colour order -> 3xHxW float32 scaled to ``value_range``, then (x - mean) / std."""
    low, high = spec.value_range
    x = image.astype(np.float32) * np.float32((high - low) / 255.0) + np.float32(low)
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    x = (x - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def to_model_colour(bgr: np.ndarray, spec: InputSpec) -> np.ndarray:
    """HxWx3 uint8 BGR -> the model's colour order."""
    order = spec.colour_order
    if order == "RGB":
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if order == "BGR":
        return bgr
    raise BadInputError(f"unsupported colour_order {order!r} in the bundle's input spec")


def resize_short_side_and_crop(rgb: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Resize so the short side is ``resize.short_side`` (long side rounded), then centre-crop."""
    height, width = rgb.shape[:2]
    if spec.resize is None or spec.crop is None:
        raise BadInputError("the bundle's input spec has neither fragments nor resize and crop")
    short = spec.resize.short_side
    interpolation = _INTERPOLATION[spec.resize.interpolation or "area"]
    if height <= width:
        size = (round(width * short / height), short)
    else:
        size = (short, round(height * short / width))
    resized = cv2.resize(rgb, size, interpolation=interpolation)
    crop_h, crop_w = spec.crop.height, spec.crop.width
    rh, rw = resized.shape[:2]
    if crop_h > rh or crop_w > rw:
        raise BadInputError(f"crop {crop_h}x{crop_w} does not fit the resized frame {rh}x{rw}")
    top, left = (rh - crop_h) // 2, (rw - crop_w) // 2
    return resized[top:top + crop_h, left:left + crop_w]


def _patch_start(cell_lo: int, cell_hi: int, patch: int, length: int, rng: np.random.Generator | None) -> int:
    """Where a patch starts along one axis of its grid cell [cell_lo, cell_hi): centred on the cell's centre,
    or on a random point of the cell (``rng``); always inside the frame."""
    centre = (cell_lo + cell_hi) / 2 if rng is None else rng.uniform(cell_lo, cell_hi)
    return min(max(int(centre - patch / 2), 0), length - patch)


def fragments_and_global(rgb: np.ndarray, spec: InputSpec, rng: np.random.Generator | None = None) -> np.ndarray:
    """Native-resolution detail plus global context, stacked as one HxWx6 uint8 image.

    Channels 0-2: a ``grid`` x ``grid`` mosaic of ``patch`` x ``patch`` crops taken at the frame's own
    resolution (compression, blur and noise stay visible), one centred on each grid cell (cells smaller
    than a patch make neighbouring patches overlap, so small frames are covered densely), or centred on a
    random point of the cell when ``rng`` is given (training augmentation). Only a frame smaller than one
    patch is enlarged. Channels 3-5: the whole frame resized to the mosaic's size (content, exposure,
    composition).
    """
    if spec.fragments is None:
        raise BadInputError("the bundle's input spec has no fragments")
    grid, patch = spec.fragments.grid, spec.fragments.patch
    size = spec.fragments.size
    height, width = rgb.shape[:2]
    if min(height, width) < patch:
        factor = patch / min(height, width)
        rgb = cv2.resize(rgb, (max(patch, round(width * factor)), max(patch, round(height * factor))),
                         interpolation=cv2.INTER_CUBIC)
        height, width = rgb.shape[:2]
    mosaic = np.empty((size, size, 3), np.uint8)
    for row in range(grid):
        top = _patch_start(row * height // grid, (row + 1) * height // grid, patch, height, rng)
        for col in range(grid):
            left = _patch_start(col * width // grid, (col + 1) * width // grid, patch, width, rng)
            mosaic[row * patch:(row + 1) * patch, col * patch:(col + 1) * patch] = \
                rgb[top:top + patch, left:left + patch]
    context = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
    return np.concatenate([mosaic, context], axis=2)


def minimum_side(spec: InputSpec) -> int:
    """The shortest frame side a VQA bundle scores, from its preprocessing: a fragment model's ``patch`` (a
    smaller frame has no native-resolution patch to show it; it would be enlarged, its detail invented), a
    resize-and-crop model's ``short_side / 8`` (enlarged at most 8x)."""
    if spec.fragments is not None:
        return spec.fragments.patch
    if spec.resize is None:
        raise BadInputError("the bundle's input spec has neither fragments nor resize and crop")
    return -(-spec.resize.short_side // _MAX_UPSCALE)


def check_scorable(width: int, height: int, spec: InputSpec, name: str) -> None:
    """UnscorableError if a ``width`` x ``height`` frame is below :func:`minimum_side`."""
    least = minimum_side(spec)
    if min(width, height) < least:
        raise UnscorableError(f"{name}: {width}x{height} frames are below the smallest this bundle scores "
                              f"({least} pixels a side, from its preprocessing); unscorable", width, height)


def vqa_geometry(bgr: np.ndarray, spec: InputSpec, rng: np.random.Generator | None = None) -> np.ndarray:
    """One HxWx3 uint8 BGR frame -> the uint8 image a VQA model sees: resized and centre-cropped, or
    fragments plus global context when the spec has ``fragments`` (``rng``: training augmentation)."""
    rgb = to_model_colour(bgr, spec)
    if spec.fragments is not None:
        return fragments_and_global(rgb, spec, rng)
    return resize_short_side_and_crop(rgb, spec)


def vqa_input_shape(spec: InputSpec) -> tuple[int, int, int]:
    """Channels, height and width of one preprocessed VQA frame."""
    if spec.fragments is not None:
        return 6, spec.fragments.size, spec.fragments.size
    if spec.crop is None:
        raise BadInputError("the bundle's input spec has neither fragments nor a crop")
    return 3, spec.crop.height, spec.crop.width


def preprocess_vqa_frame(bgr: np.ndarray, spec: InputSpec) -> np.ndarray:
    """One HxWx3 uint8 BGR frame -> the 3xHxW float32 tensor a VQA model takes."""
    return normalise(vqa_geometry(bgr, spec), spec)


def preprocess_sr_image(bgr: np.ndarray, spec: InputSpec) -> np.ndarray:
    """One HxWx3 uint8 BGR image -> 3xHxW float32 at full resolution (tiling happens later)."""
    return normalise(to_model_colour(bgr, spec), spec)


def postprocess_sr_output(chw: np.ndarray, in_spec: InputSpec, out_spec: OutputSpec) -> np.ndarray:
    """3xHxW float model output -> HxWx3 uint8 BGR: clamp to the output range, scale, round."""
    low, high = out_spec.value_range or (0.0, 1.0)
    x = np.clip(chw.astype(np.float32), low, high) if out_spec.clamps else chw
    x = np.rint((x - low) * (255.0 / (high - low)))
    image = np.clip(x, 0, 255).astype(np.uint8).transpose(1, 2, 0)
    if in_spec.colour_order == "RGB":
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    return np.ascontiguousarray(image)
