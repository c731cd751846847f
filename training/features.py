"""Student inputs for training, made with the runtime's own sampler and preprocessing, cached on disk.

Each video becomes ``views x frames x H x W x 6`` uint8: view 0 takes the centred fragments the runtime
uses; the other views take fragments from random places in each grid cell (augmentation). The cache key
covers the video's bytes, the input spec, the views, the seed and the source of the runtime's sampling and
preprocessing modules, so a kvqe whose frame geometry changed never reuses views an older one made.
"""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import numpy as np

from kvqe.files import atomic_output_file, sha256_file
from kvqe.sdk import preprocess, sampling
from kvqe.sdk.frames import ASSUMED_FPS
from kvqe.sdk.preprocess import vqa_geometry
from kvqe.sdk.sampling import sampling_spec, select_keyframes
from kvqe.sdk.sources import open_source
from kvqe.specs import InputSpec


@functools.cache
def preprocessing_digest() -> str:
    """sha256 of the runtime's keyframe sampling and preprocessing code (part of the cache key)."""
    digest = hashlib.sha256()
    for module in (sampling, preprocess):
        digest.update(Path(str(module.__file__)).read_bytes())
    return digest.hexdigest()


def video_views(path: Path, spec: InputSpec, views: int, seed: int) -> np.ndarray:
    """Keyframes of ``path`` through the runtime preprocessing, ``views`` times (view 0 deterministic)."""
    with open_source(path) as frames:
        keyframes = select_keyframes(frames, frames.fps or ASSUMED_FPS, sampling_spec(spec.sampling), frames.frame_count)
    rng = np.random.default_rng([seed, int(hashlib.sha256(path.name.encode()).hexdigest()[:8], 16)])
    return np.stack([
        np.stack([vqa_geometry(frame.image, spec, None if view == 0 else rng) for frame in keyframes])
        for view in range(views)
    ])


def cached_views(path: Path, spec: InputSpec, views: int, seed: int, cache: Path) -> np.ndarray:
    """:func:`video_views`, stored in ``cache`` under a key of the video's bytes, spec, views and seed."""
    key = hashlib.sha256(json.dumps([sha256_file(path), spec.to_json(), views, seed, preprocessing_digest()],
                                    sort_keys=True).encode()).hexdigest()
    target = cache / f"{path.stem}.{key[:16]}.npy"
    if target.is_file():
        return np.load(target)
    array = video_views(path, spec, views, seed)
    with atomic_output_file(target) as tmp:
        np.save(tmp, array)
    return array
