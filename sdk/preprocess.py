"""Preprocessing from a bundle's input spec: the one function the runtime, export validation and
calibration all call, so the model sees the same tensors everywhere."""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from kvqe.errors import BadInputError

_INTERPOLATION = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}


def normalise(image: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """HxWx3 uint8 in model colour order -> 3xHxW float32 scaled to ``value_range``, then (x - mean) / std."""
    low, high = spec["value_range"]
    x = image.astype(np.float32) * np.float32((high - low) / 255.0) + np.float32(low)
    mean = np.asarray(spec["mean"], dtype=np.float32)
    std = np.asarray(spec["std"], dtype=np.float32)
    x = (x - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def to_model_colour(bgr: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """HxWx3 uint8 BGR -> the model's colour order."""
    order = spec["colour_order"]
    if order == "RGB":
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if order == "BGR":
        return bgr
    raise BadInputError(f"unsupported colour_order {order!r} in the bundle's input spec")


def resize_short_side_and_crop(rgb: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """Resize so the short side is ``resize.short_side`` (long side rounded), then centre-crop."""
    height, width = rgb.shape[:2]
    short = spec["resize"]["short_side"]
    interpolation = _INTERPOLATION[spec["resize"].get("interpolation", "area")]
    if height <= width:
        size = (round(width * short / height), short)
    else:
        size = (short, round(height * short / width))
    resized = cv2.resize(rgb, size, interpolation=interpolation)
    crop_h, crop_w = spec["crop"]["height"], spec["crop"]["width"]
    rh, rw = resized.shape[:2]
    if crop_h > rh or crop_w > rw:
        raise BadInputError(f"crop {crop_h}x{crop_w} does not fit the resized frame {rh}x{rw}")
    top, left = (rh - crop_h) // 2, (rw - crop_w) // 2
    return resized[top:top + crop_h, left:left + crop_w]


def vqa_geometry(bgr: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """One HxWx3 uint8 BGR frame -> the uint8 image a VQA model sees (model colour, resized, cropped)."""
    return resize_short_side_and_crop(to_model_colour(bgr, spec), spec)


def preprocess_vqa_frame(bgr: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """One HxWx3 uint8 BGR frame -> the 3xHxW float32 tensor a VQA model takes."""
    return normalise(vqa_geometry(bgr, spec), spec)


def preprocess_sr_image(bgr: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """One HxWx3 uint8 BGR image -> 3xHxW float32 at full resolution (tiling happens later)."""
    return normalise(to_model_colour(bgr, spec), spec)


def postprocess_sr_output(chw: np.ndarray, in_spec: dict[str, Any], out_spec: dict[str, Any]) -> np.ndarray:
    """3xHxW float model output -> HxWx3 uint8 BGR: clamp to the output range, scale, round."""
    low, high = out_spec["value_range"]
    x = np.clip(chw.astype(np.float32), low, high) if out_spec.get("clamp", True) else chw
    x = np.rint((x - low) * (255.0 / (high - low)))
    image = np.clip(x, 0, 255).astype(np.uint8).transpose(1, 2, 0)
    if in_spec["colour_order"] == "RGB":
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    return np.ascontiguousarray(image)
