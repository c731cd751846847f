"""Sample media shipped with kvqe (the README's main job and export validation use them).

``astronaut.png``: scikit-image's ``astronaut`` photo (NASA, public domain), resized to 192x192.
``astronaut_pan.mp4``: the same photo under a panning camera, 2 s, 320x180, x264 CRF 24.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path


def sample_image_path() -> Path:
    """Path of the shipped sample photo (BGR PNG, 192x192)."""
    return Path(str(resources.files("kvqe.samples") / "astronaut.png"))


def sample_video_path() -> Path:
    """Path of the shipped sample video (2 s, 320x180, 25 fps)."""
    return Path(str(resources.files("kvqe.samples") / "astronaut_pan.mp4"))
